"""Load a teacher checkpoint strictly, and say exactly what does not fit.

A teacher that silently keeps random layers is the most common reason why
"distillation gives no gain" (e.g. a ResNet-50 checkpoint given to a
ResNet-101 teacher leaves layer3 blocks 6-22 untrained). So every key of the
teacher must be in the checkpoint with its shape, and every key of the
checkpoint must be in the teacher, unless the config says
``teacher_ckpt_strict=False``; then the matching weights are loaded and the
mismatch is logged as a warning with its counts.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.runner import CheckpointLoader

from visionkd.utils import UnsafeCheckpointError

__all__ = ['TeacherLoadReport', 'load_teacher_weights']

#: How many keys of each kind an error message lists.
SHOWN = 4


@dataclass
class TeacherLoadReport:
    """What loading a checkpoint into a teacher found.

    Attributes:
        loaded: Number of tensors loaded.
        missing: Teacher keys absent from the checkpoint.
        unexpected: Checkpoint keys the teacher does not have.
        mismatched: ``(key, checkpoint shape, teacher shape)`` per key whose
            shapes differ (not loaded).
    """
    loaded: int = 0
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when checkpoint and teacher match key for key."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """'N missing keys (first: ...), ...' for messages."""
        def part(keys: List[str], what: str) -> str:
            shown = ', '.join(keys[:SHOWN])
            more = ', ...' if len(keys) > SHOWN else ''
            return f'{len(keys)} {what}' + (f' ({shown}{more})'
                                            if keys else '')
        shapes = [f'{k}: checkpoint {tuple(a)} vs teacher {tuple(b)}'
                  for k, a, b in self.mismatched]
        return '; '.join([part(self.missing, 'missing keys'),
                          part(self.unexpected, 'unexpected keys'),
                          part(shapes, 'shape mismatches')])


def _read_state(path: str) -> Dict[str, torch.Tensor]:
    """The state dict of checkpoint ``path`` (``module.`` prefixes off)."""
    try:
        ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f'does not exist: give the path or URL of the teacher '
            f'checkpoint ({e})') from e
    except UnsafeCheckpointError:
        raise
    except Exception as e:
        raise ValueError(f'could not be loaded as a checkpoint: {e}; give '
                         f'the teacher\'s .pth checkpoint (path or '
                         f'URL)') from e
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def _compare(model: nn.Module,
             state: Dict[str, torch.Tensor]) -> TeacherLoadReport:
    own = model.state_dict()
    report = TeacherLoadReport()
    report.mismatched = [(k, tuple(v.shape), tuple(own[k].shape))
                         for k, v in state.items()
                         if k in own and v.shape != own[k].shape]
    report.unexpected = [k for k in state if k not in own]
    # BN's num_batches_tracked does not change an eval-mode teacher and
    # older checkpoints lack it.
    report.missing = [k for k in own if k not in state
                      and not k.endswith('num_batches_tracked')]
    report.loaded = len(state) - len(report.unexpected) - len(
        report.mismatched)
    return report


def load_teacher_weights(model: nn.Module, path: str, strict: bool = True,
                         role: str = 'teacher',
                         key: str = 'teacher_ckpt') -> TeacherLoadReport:
    """Load checkpoint ``path`` into ``model`` (a teacher), strictly.

    Args:
        model: The teacher model.
        path: Local path or URL of its checkpoint (loaded through mmengine's
            ``CheckpointLoader``, i.e. with ``weights_only=True`` unless it
            is a run's own file, see :mod:`visionkd.utils.checkpoint`).
        strict: Raise unless keys and shapes match exactly. With False the
            matching tensors are loaded and the rest is logged as a warning.
        role: How messages name the model (``'teacher'``, ``"teacher
            'det'"``).
        key: The config key messages name for the checkpoint.

    Returns:
        The :class:`TeacherLoadReport`.

    Raises:
        ValueError: The checkpoint shares no tensor with the model, or
            (strict) keys/shapes differ; the message lists how many and the
            first few, and the fix.
    """
    name = type(model).__name__
    try:
        state = _read_state(path)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f'{key}: {e}') from e
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f'{key} {path!r} {e}') from e
    report = _compare(model, state)
    if report.loaded == 0:
        raise ValueError(f'{key} {path!r} holds no weight of the '
                         f'{role} ({name}): is it the right file? '
                         f'{report.summary()}')
    if not report.exact and strict:
        raise ValueError(
            f'{key} {path!r} does not match the {role} ({name}): '
            f'{report.summary()}. Give the checkpoint trained with this '
            f'{role} config, or set teacher_ckpt_strict=False to load only '
            f'the {report.loaded} matching tensors (logged as a warning)')
    bad = {k for k, _, _ in report.mismatched}
    model.load_state_dict({k: v for k, v in state.items() if k not in bad},
                          strict=False)
    if not report.exact:
        MMLogger.get_current_instance().warning(
            f'teacher_ckpt_strict=False: {key} {path!r} loaded '
            f'{report.loaded} tensors into {name}; {report.summary()}')
    return report
