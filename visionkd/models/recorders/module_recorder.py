"""Forward-hook recorder of a module's outputs or inputs."""
from typing import Any, Callable, List, Optional

import torch.nn as nn

__all__ = ['ModuleRecorder']


class ModuleRecorder:
    """Record what a module returns (or receives) on every call.

    A forward hook stores references (no copies) to the module's output, or
    to its first positional input, in :attr:`data`, one entry per call. A
    module called once per forward gives one entry (a tensor or a tuple of
    levels, e.g. an FPN); a head shared across levels gives one entry per
    level.

    Args:
        module: The module to record.
        path: Its dotted path inside the model (used in messages).
        record: ``'output'`` or ``'input'``.
        on_record: Optional callback run after every stored call (the
            distiller uses it to stop the teacher's forward early).
    """

    def __init__(self,
                 module: nn.Module,
                 path: str,
                 record: str = 'output',
                 on_record: Optional[Callable[[], None]] = None) -> None:
        if record not in ('output', 'input'):
            raise ValueError(f"record must be 'output' or 'input', got "
                             f'{record!r} for layer {path!r}')
        self.path = path
        self.record = record
        self.on_record = on_record
        self.data: List[Any] = []
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if self.record == 'output':
            self.data.append(output)
        else:
            self.data.append(inputs[0] if len(inputs) == 1 else inputs)
        if self.on_record is not None:
            self.on_record()

    def clear(self) -> None:
        """Forget what was recorded."""
        self.data = []

    def remove(self) -> None:
        """Remove the forward hook."""
        self._handle.remove()

    def levels(self) -> list:
        """What was recorded as a flat list of per-level tensors.

        One call returning a tuple/list gives its elements; several calls
        give one tensor each.
        """
        if len(self.data) == 1 and isinstance(self.data[0], (tuple, list)):
            return list(self.data[0])
        return list(self.data)
