"""Build a distillation term outside a distiller (unit tests of a mode)."""
from typing import Any, List, Optional

import torch.nn as nn

from visionkd.models.distillers.terms import TermContext
from visionkd.registry import TERM_MODES


class _Recorded:
    """One model's side of a records stand-in: the same levels for any key."""

    def __init__(self, levels: List[Any]) -> None:
        self._levels = levels

    def levels(self, key) -> List[Any]:
        return self._levels


class StubRecords:
    """What ``term(records, data_samples)`` reads, given per level."""

    def __init__(self, student: List[Any], teacher: List[Any]) -> None:
        self.student = _Recorded(student)
        self.teacher = _Recorded(teacher)

    def of(self, name: str) -> '_Recorded':
        """``'student'`` or the (only) teacher, as DistillRecords.of."""
        return self.student if name == 'student' else self.teacher


def build_term(name: str, cfg: dict, student_levels: List[Any],
               teacher_levels: List[Any], student: Optional[nn.Module] = None,
               teacher: Optional[nn.Module] = None,
               has_data_samples: bool = True,
               gt_field: Optional[str] = None) -> nn.Module:
    """Build the term of ``cfg['mode']`` from given dry-run levels."""
    cls = TERM_MODES.get(cfg.get('mode', 'feature'))
    student = student if student is not None else nn.Module()
    teacher = teacher if teacher is not None else nn.Module()
    layers = cls.recorded_layers(name, cfg, student, teacher)
    return cls(name, cfg, TermContext(
        layers=layers, student=student, teacher=teacher,
        student_levels=list(student_levels),
        teacher_levels=list(teacher_levels),
        has_data_samples=has_data_samples, gt_field=gt_field))
