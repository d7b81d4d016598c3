"""The recorders of one model, keyed by ``(module path, record)``."""
import difflib
from typing import Callable, Dict, List, Tuple

import torch.nn as nn

from .method_recorder import MethodRecorder
from .module_recorder import ModuleRecorder

__all__ = ['ModelRecorders', 'RecordingComplete', 'RecordKey']

#: ``(module path, record)``; record is ``'output'``, ``'input'`` or
#: ``'call:<method>'``.
RecordKey = Tuple[str, str]


class RecordingComplete(Exception):
    """Raised from a hook once every recorder has seen its expected calls."""


class ModelRecorders:
    """Every layer recorded on one model (student or teacher).

    Each ``(path, record)`` gets one recorder, shared by all terms that ask
    for it. After :meth:`expect_current_counts` (the distiller calls it
    after its build-time dry run), :meth:`run_until_complete` stops a
    forward as soon as every recorder has seen as many calls as in the dry
    run, so a teacher computes only what its terms need.

    Args:
        model: The model whose layers are recorded.
        role: ``'student'`` or ``'teacher'`` (used in messages).
    """

    def __init__(self, model: nn.Module, role: str) -> None:
        self.model = model
        self.role = role
        self._recorders: Dict[RecordKey, object] = {}
        self._expected: Dict[RecordKey, int] = {}
        self._armed = False

    def add(self, key: RecordKey, term: str) -> None:
        """Record ``key`` (once, however many terms ask for it).

        Raises:
            ValueError: naming ``term`` and the nearest module names if the
                path does not exist.
        """
        if key in self._recorders:
            return
        path, record = key
        # '' is the model itself, for a method of it (e.g. a DETR's
        # forward_transformer); its forward output is the task's result
        module = self._find_module(path, term, record.startswith('call:'))
        if record.startswith('call:'):
            rec = MethodRecorder(module, path, record[len('call:'):],
                                 on_record=self._on_record)
        else:
            rec = ModuleRecorder(module, path, record,
                                 on_record=self._on_record)
        self._recorders[key] = rec

    def _find_module(self, path: str, term: str,
                     root_ok: bool = False) -> nn.Module:
        modules = dict(self.model.named_modules())
        if path in modules and (path != '' or root_ok):
            return modules[path]
        names = [n for n in modules if n]
        close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
        if not close:
            head = path.split('.')[0]
            close = [n for n in names if n.split('.')[0] == head][:5] or \
                [n for n in names if '.' not in n]
        role = self.role
        raise ValueError(
            f'distill term {term!r}: {role} layer {path!r} does not exist in '
            f'the {role} ({type(self.model).__name__}). Nearest names: '
            f'{close}; fix the module path (all paths: '
            f'[n for n, _ in model.{role}.named_modules()])')

    @property
    def keys(self) -> List[RecordKey]:
        """The recorded ``(path, record)`` keys."""
        return list(self._recorders)

    @property
    def paths(self) -> List[str]:
        """The recorded module paths."""
        return [key[0] for key in self._recorders]

    def levels(self, key: RecordKey) -> list:
        """What ``key`` recorded, one entry per level (see the recorders)."""
        return self._recorders[key].levels()

    def not_recorded(self) -> List[RecordKey]:
        """Keys that recorded nothing since the last :meth:`clear`."""
        return [k for k, r in self._recorders.items() if not r.data]

    def map_records(self, fn: Callable[[object], object]) -> None:
        """Replace everything recorded ``x`` by ``fn(x)`` (e.g. a cast)."""
        for rec in self._recorders.values():
            rec.data = [fn(x) for x in rec.data]

    def clear(self) -> None:
        """Forget everything recorded."""
        for rec in self._recorders.values():
            rec.clear()

    def expect_current_counts(self) -> None:
        """Take the calls recorded so far as those a full forward makes."""
        self._expected = {k: len(r.data) for k, r in self._recorders.items()}

    def _on_record(self) -> None:
        if not self._armed:
            return
        for key, rec in self._recorders.items():
            if len(rec.data) < self._expected.get(key, 0):
                return
        raise RecordingComplete

    def run_until_complete(self, forward: Callable[[], object]) -> None:
        """Call ``forward()`` and stop it once every layer was recorded."""
        self._armed = True
        try:
            forward()
        except RecordingComplete:
            pass
        finally:
            self._armed = False
