"""Recorder of the arguments a module's method is called with."""
import inspect
from typing import Any, Callable, Dict, List, Optional

import torch.nn as nn

__all__ = ['MethodRecorder']


class MethodRecorder:
    """Record the arguments of every call to ``module.<method>``.

    Some things a distiller needs never pass through a module's forward, e.g.
    the proposals an mmdet RoI head samples for its loss, or the per-level
    labels a dense head assigns: they are the arguments of a method such as
    ``BBoxHead.loss_and_target`` or ``GFLHead.loss_by_feat_single``. This
    recorder wraps that method on the instance (the class is untouched) and
    stores, per call, the call's arguments by name and its return value
    under ``'_return'`` (references, no copies).

    Args:
        module: The module whose method is recorded.
        path: The module's dotted path inside the model (used in messages).
        method: Name of the method, e.g. ``'loss_and_target'``.
        on_record: Optional callback run after every recorded call (the
            distiller uses it to stop the teacher's forward early).
    """

    def __init__(self,
                 module: nn.Module,
                 path: str,
                 method: str,
                 on_record: Optional[Callable[[], None]] = None) -> None:
        func = getattr(module, method, None)
        if func is None or not callable(func):
            raise ValueError(f'layer {path!r} ({type(module).__name__}) has '
                             f'no method {method!r} to record')
        self.path = path
        self.method = method
        self.record = f'call:{method}'
        self.on_record = on_record
        self.data: List[Dict[str, Any]] = []
        self._module = module
        self._signature = inspect.signature(func)
        self._original = func

        def wrapper(*args, **kwargs):
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            entry = dict(bound.arguments)
            self.data.append(entry)
            out = self._original(*args, **kwargs)
            entry['_return'] = out
            if self.on_record is not None:
                self.on_record()
            return out

        wrapper.__wrapped__ = func
        # An instance attribute shadows the class method for this module only.
        setattr(module, method, wrapper)

    def clear(self) -> None:
        """Forget what was recorded."""
        self.data = []

    def remove(self) -> None:
        """Restore the original method."""
        if self._module.__dict__.get(self.method) is not None:
            delattr(self._module, self.method)

    def levels(self) -> list:
        """One dict of named arguments per recorded call."""
        return list(self.data)
