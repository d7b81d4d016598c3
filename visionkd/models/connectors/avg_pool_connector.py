"""Parameter-free average pooling of a map (student or teacher side)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

__all__ = ['AvgPoolConnector']


@MODELS.register_module()
class AvgPoolConnector(nn.Module):
    """Average-pool a map, e.g. before a loss quadratic in H x W.

    CIRKD's SegFormer setting (Yang et al., CVPR 2022; winycg/CIRKD
    ``train_cirkd_segformer.py``, ``CriterionMiniBatchCrossImagePair(...,
    pooling=True)``) pools both embeddings 2x2 (stride 2, ``ceil_mode``)
    before the mini-batch pixel-to-pixel similarities: use it as both the
    ``connector`` and the ``teacher_connector`` of that term. It has no
    parameters or buffers, so it may sit on the teacher side.

    Args:
        kernel_size: Pooling window. Defaults to 2.
        stride: Defaults to ``kernel_size``.
        ceil_mode: As in :func:`torch.nn.functional.avg_pool2d`. Defaults
            to True (a last odd row/column is pooled alone).
    """

    def __init__(self,
                 kernel_size: int = 2,
                 stride: Optional[int] = None,
                 ceil_mode: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or (stride is not None and stride < 1):
            raise ValueError(f'kernel_size and stride must be >= 1, got '
                             f'{kernel_size} and {stride}')
        self.kernel_size = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.kernel_size
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool (N, C, H, W) to (N, C, H', W')."""
        return F.avg_pool2d(x, self.kernel_size, self.stride,
                            ceil_mode=self.ceil_mode)
