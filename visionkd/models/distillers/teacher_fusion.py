"""Which models a term reads, and how several teachers make one target.

A term of a distiller with several teachers names its teacher with
``from_teacher='<name>'`` (default: the first teacher) or distils towards
an ensemble with ``from_teacher=('a', 'b')`` and ``fuse``:

* ``fuse='mean'``: the element-wise mean of the teachers' recorded tensors
  (with ``fuse_weights=(w_a, w_b)`` the weighted mean
  ``sum_i w_i t_i / sum_i w_i``), the averaged-teacher target of
  multi-teacher KD (Hinton et al., "Distilling the Knowledge in a Neural
  Network", 2015, Sec. 3; You et al., "Learning from Multiple Teacher
  Networks", KDD 2017);
* ``fuse='max_confidence'``: class logits only (a segmentation head's
  classifier, (N, C, H, W)): at each pixel the logits of the teacher whose
  softmax is most confident (highest maximum probability) there, the
  per-sample teacher selection of confidence-aware multi-teacher KD
  (Zhang et al., "Confidence-Aware Multi-Teacher Knowledge Distillation",
  ICASSP 2022) applied per pixel.

Fused teachers must record tensors of equal shapes (the same layer of
teachers of equal width); teachers of other widths are distilled in one
term each (each with its own connector), whose losses add up.

``direction='student_to_teacher'`` (online teachers only) makes the term
train the teacher towards the student (the second half of deep mutual
learning): the term's ``student`` layer is then the learner's (the
teacher's) and its ``teacher`` layer the student's, detached.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ['TermSource', 'FUSE_MODES', 'DIRECTIONS', 'SOURCE_KEYS',
           'fuse_levels', 'split_source']

#: Values of ``fuse``.
FUSE_MODES = ('mean', 'max_confidence')
#: Values of ``direction``.
DIRECTIONS = ('teacher_to_student', 'student_to_teacher')
#: Keys a distiller takes out of a term entry before the term sees it.
SOURCE_KEYS = ('from_teacher', 'fuse', 'fuse_weights', 'direction')

STUDENT = 'student'


@dataclass(frozen=True)
class TermSource:
    """The models a term reads its two sides from.

    Attributes:
        learner: Records of the learning side (``'student'``, or the online
            teacher's name with ``direction='student_to_teacher'``).
        targets: Names of the models whose records are the target (one
            teacher, several fused ones, or ``'student'``).
        fuse: How several targets make one (see :data:`FUSE_MODES`).
        weights: Weights of ``fuse='mean'`` (None: equal).
    """

    learner: str = STUDENT
    targets: Tuple[str, ...] = ('teacher', )
    fuse: str = 'mean'
    weights: Optional[Tuple[float, ...]] = None

    @property
    def fused(self) -> bool:
        """Whether several targets are fused."""
        return len(self.targets) > 1


def _mean(tensors: Sequence[torch.Tensor],
          weights: Optional[Sequence[float]]) -> torch.Tensor:
    if weights is None:
        return torch.stack(list(tensors)).mean(0)
    total = float(sum(weights))
    out = tensors[0] * (weights[0] / total)
    for w, t in zip(weights[1:], tensors[1:]):
        out = out + t * (w / total)
    return out


def _max_confidence(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per location, the logits of the most confident teacher.

    Args:
        tensors: K logit maps (N, C, ...) of equal shape.

    Returns:
        (N, C, ...): at each location the map of the teacher with the
        highest maximum softmax probability (over dim 1); ties go to the
        first.
    """
    stacked = torch.stack(list(tensors))  # (K, N, C, ...)
    conf = stacked.float().softmax(dim=2).amax(dim=2)  # (K, N, ...)
    best = conf.argmax(dim=0, keepdim=True)  # (1, N, ...)
    index = best.unsqueeze(2).expand(1, *stacked.shape[1:])
    return stacked.gather(0, index).squeeze(0)


def fuse_levels(per_teacher: List[list], source: TermSource) -> list:
    """One list of levels from the targets' records.

    Args:
        per_teacher: For each target, what it recorded, per level
            (tensors).
        source: The term's source (fuse mode, weights).

    Returns:
        The fused levels (the only target's list when there is one).
    """
    if len(per_teacher) == 1:
        return per_teacher[0]
    out = []
    for level in zip(*per_teacher):
        if source.fuse == 'max_confidence':
            out.append(_max_confidence(level))
        else:
            out.append(_mean(level, source.weights))
    return out


def _targets(name: str, cfg: dict, kinds: dict) -> Tuple[str, ...]:
    """The teacher names of ``from_teacher`` (checked)."""
    from .teacher_specs import unknown_teacher_message
    known = list(kinds)
    if 'from_teacher' not in cfg:
        return (known[0], )
    if len(known) == 1:
        raise ValueError(
            f'distill term {name!r}: from_teacher is for distillers with '
            f'several teachers (teachers=dict(...)); this one has one '
            f'teacher: drop from_teacher')
    value = cfg['from_teacher']
    names = (value, ) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(
            isinstance(n, str) for n in names):
        raise TypeError(f"distill term {name!r}: from_teacher must be a "
                        f"teacher name or a tuple of names, got {value!r}")
    for n in names:
        if n not in kinds:
            raise ValueError(f'distill term {name!r}: from_teacher: '
                             f'{unknown_teacher_message(n, known)}')
    if len(set(names)) != len(names):
        raise ValueError(f'distill term {name!r}: from_teacher names a '
                         f'teacher twice: {list(names)}')
    return tuple(names)


def _fuse(name: str, cfg: dict, targets: Tuple[str, ...]
          ) -> Tuple[str, Optional[Tuple[float, ...]]]:
    fuse = cfg.get('fuse', 'mean')
    weights = cfg.get('fuse_weights')
    if len(targets) == 1 and ('fuse' in cfg or weights is not None):
        raise ValueError(f'distill term {name!r}: fuse / fuse_weights need '
                         f'from_teacher=(<name>, <name>, ...) (several '
                         f'teachers)')
    if fuse not in FUSE_MODES:
        raise ValueError(f'distill term {name!r}: fuse must be one of '
                         f'{list(FUSE_MODES)}, got {fuse!r}')
    if weights is None:
        return fuse, None
    if fuse != 'mean':
        raise ValueError(f'distill term {name!r}: fuse_weights are for '
                         f"fuse='mean'")
    if not isinstance(weights, (list, tuple)) or len(weights) != len(
            targets) or not all(isinstance(w, (int, float)) and w >= 0
                                for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f'distill term {name!r}: fuse_weights must be {len(targets)} '
            f'non-negative numbers (one per teacher of from_teacher, not '
            f'all 0), got {weights!r}')
    return fuse, tuple(float(w) for w in weights)


def split_source(name: str, cfg: dict,
                 kinds: dict) -> Tuple[dict, TermSource]:
    """A term entry without the source keys, and its :class:`TermSource`.

    Args:
        name: Term name (for messages).
        cfg: The entry.
        kinds: Teacher name -> kind, in config order (the first is the
            default teacher).

    Returns:
        ``(entry without SOURCE_KEYS, source)``.

    Raises:
        ValueError / TypeError: an unknown teacher (close names listed),
            ``from_teacher`` with one teacher, bad fuse settings, or
            ``direction='student_to_teacher'`` towards a teacher that does
            not train.
    """
    targets = _targets(name, cfg, kinds)
    fuse, weights = _fuse(name, cfg, targets)
    direction = cfg.get('direction', DIRECTIONS[0])
    if direction not in DIRECTIONS:
        raise ValueError(f'distill term {name!r}: direction must be one of '
                         f'{list(DIRECTIONS)}, got {direction!r}')
    rest = {k: v for k, v in cfg.items() if k not in SOURCE_KEYS}
    if direction == DIRECTIONS[0]:
        return rest, TermSource(STUDENT, targets, fuse, weights)
    if len(targets) > 1 or kinds[targets[0]] != 'online':
        raise ValueError(
            f"distill term {name!r}: direction='student_to_teacher' trains "
            f'a teacher towards the student, so it needs one teacher that '
            f'trains (teacher_trainable=True, or trainable=True in '
            f'teachers); {targets[0]!r} is {kinds[targets[0]]}')
    # the learner is the teacher: its layer is the entry's `student`
    rest['student'], rest['teacher'] = cfg.get('teacher'), cfg.get('student')
    return rest, TermSource(targets[0], (STUDENT, ), fuse, weights)
