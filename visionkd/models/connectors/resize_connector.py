"""Spatial alignment of a student map to the teacher's size."""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

__all__ = ['ResizeConnector']


@MODELS.register_module()
class ResizeConnector(nn.Module):
    """Resize a student map so it matches the teacher's spatial size.

    With neither ``size`` nor ``scale_factor`` the student map is resized to
    the teacher map it is compared with (the distiller passes it as
    ``target``), which works for any input size.

    Args:
        size: Fixed output (H, W).
        scale_factor: Fixed scale factor.
        mode: Interpolation mode. Defaults to ``'bilinear'``.
        align_corners: As in :func:`torch.nn.functional.interpolate`.
        antialias: Low-pass filter when shrinking (``'bilinear'`` /
            ``'bicubic'`` only; see :func:`torch.nn.functional.interpolate`):
            every input pixel contributes, instead of the two nearest per
            output pixel (a stride-2 map shrunk 4x to stride 8). No effect
            when enlarging. Defaults to False.
    """

    def __init__(self,
                 size: Optional[Sequence[int]] = None,
                 scale_factor: Optional[Union[float, Sequence[float]]] = None,
                 mode: str = 'bilinear',
                 align_corners: Optional[bool] = None,
                 antialias: bool = False) -> None:
        super().__init__()
        if size is not None and scale_factor is not None:
            raise ValueError('ResizeConnector takes size or scale_factor, '
                             'not both')
        if antialias and mode not in ('bilinear', 'bicubic'):
            raise ValueError(f"ResizeConnector antialias=True needs mode "
                             f"'bilinear' or 'bicubic', got {mode!r}")
        self.size = tuple(size) if size is not None else None
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.antialias = bool(antialias)

    def forward(self,
                x: torch.Tensor,
                target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Resize ``x`` (N, C, H, W).

        Args:
            x: Student map.
            target: Teacher map whose (H, W) is used when neither ``size``
                nor ``scale_factor`` is set.
        """
        size, scale = self.size, self.scale_factor
        if size is None and scale is None:
            if target is None:
                raise ValueError('ResizeConnector without size/scale_factor '
                                 'needs the teacher map as target')
            size = tuple(target.shape[2:])
            if size == tuple(x.shape[2:]):
                return x
        return F.interpolate(
            x,
            size=size,
            scale_factor=scale,
            mode=self.mode,
            align_corners=self.align_corners,
            antialias=self.antialias)
