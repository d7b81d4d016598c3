"""What one training step recorded on the student and the teachers."""
from typing import Dict, Optional

from .model_recorders import ModelRecorders

__all__ = ['DistillRecords']


class DistillRecords:
    """The recorders of every model; distillation terms read from it.

    Args:
        student: Recorders on the student.
        teacher: Recorders on the (only) teacher, for the one-teacher form.
        teachers: Recorders on each teacher by name (the first is the
            default teacher, :attr:`teacher`).

    Attributes:
        student: Recorders on the student.
        teachers: ``{name: recorders}`` of the teachers.
    """

    def __init__(self,
                 student: ModelRecorders,
                 teacher: Optional[ModelRecorders] = None,
                 teachers: Optional[Dict[str, ModelRecorders]] = None
                 ) -> None:
        if (teacher is None) == (teachers is None):
            raise ValueError('DistillRecords takes teacher= or teachers=')
        self.student = student
        self.teachers: Dict[str, ModelRecorders] = (
            dict(teachers) if teachers is not None else {'teacher': teacher})

    @property
    def teacher(self) -> ModelRecorders:
        """Recorders on the default (first) teacher."""
        return next(iter(self.teachers.values()))

    def of(self, name: str) -> ModelRecorders:
        """Recorders of ``'student'`` or of the teacher ``name``."""
        if name == 'student':
            return self.student
        return self.teachers[name]

    def clear(self) -> None:
        """Forget what every model recorded."""
        self.student.clear()
        for rec in self.teachers.values():
            rec.clear()
