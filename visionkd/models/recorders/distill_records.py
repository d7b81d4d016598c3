"""What one training step recorded on the student and the teacher."""
from dataclasses import dataclass

from .model_recorders import ModelRecorders

__all__ = ['DistillRecords']


@dataclass
class DistillRecords:
    """The recorders of both models; distillation terms read from it.

    Attributes:
        student: Recorders on the student.
        teacher: Recorders on the teacher.
    """

    student: ModelRecorders
    teacher: ModelRecorders

    def clear(self) -> None:
        """Forget what both models recorded."""
        self.student.clear()
        self.teacher.clear()
