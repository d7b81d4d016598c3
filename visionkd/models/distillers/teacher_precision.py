"""Run the teacher cheaper: reduced precision and channels-last memory.

The teacher only runs inference, so it can run under autocast in bfloat16
or float16 even when the student trains in float32; its recorded outputs
are cast back to float32 before the losses see them. ``channels_last``
stores its weights and input as NHWC, which the convolution kernels of
recent CPUs and GPUs prefer.
"""
import contextlib
from typing import ContextManager, Optional

import torch
import torch.nn as nn

__all__ = ['TeacherPrecision', 'TEACHER_PRECISIONS']

#: ``teacher_precision`` values and the autocast dtype of each.
TEACHER_PRECISIONS = {
    None: None,
    'fp32': torch.float32,
    'bf16': torch.bfloat16,
    'fp16': torch.float16
}


class TeacherPrecision:
    """How the teacher's forward runs.

    Args:
        precision: ``None`` (default: the teacher runs in the context it is
            called in, e.g. under ``--amp`` in the runner's autocast),
            ``'fp32'`` (autocast off: full precision even under ``--amp``),
            ``'bf16'`` or ``'fp16'`` (autocast in that dtype; the recorded
            outputs are cast back to float32).
        channels_last: Convert the teacher's 4-D weights and its input to
            the channels-last memory format.
    """

    def __init__(self, precision: Optional[str] = None,
                 channels_last: bool = False) -> None:
        if precision not in TEACHER_PRECISIONS:
            raise ValueError(
                f'teacher_precision must be one of '
                f'{list(TEACHER_PRECISIONS)}, got {precision!r}')
        if not isinstance(channels_last, bool):
            raise TypeError('teacher_channels_last must be True or False, '
                            f'got {channels_last!r}')
        self.precision = precision
        self.dtype = TEACHER_PRECISIONS[precision]
        self.channels_last = channels_last

    @property
    def casts_records(self) -> bool:
        """Whether recorded outputs come in a half precision."""
        return self.dtype in (torch.bfloat16, torch.float16)

    def prepare(self, model: nn.Module) -> None:
        """Convert the teacher's weights (channels-last only)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's input in its memory format."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def context(self, device_type: str) -> ContextManager:
        """The autocast context of the teacher's forward."""
        if self.dtype is None:
            return contextlib.nullcontext()
        if self.dtype == torch.float32:
            return torch.autocast(device_type=device_type, enabled=False)
        return torch.autocast(device_type=device_type, dtype=self.dtype)
