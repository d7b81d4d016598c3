"""Channel adapter followed by a parameter-free batch normalisation."""
from typing import Optional

import torch
import torch.nn as nn

from visionkd.registry import MODELS

__all__ = ['NormConnector']


@MODELS.register_module()
class NormConnector(nn.Module):
    """Optional bias-free convolution, then BatchNorm without affine.

    The student side of the RTMDet distillation recipe of MMYOLO/MMRazor
    (``ConvModuleConnector`` with ``bias=False``, ``act_cfg=None`` and
    ``norm_cfg=dict(type='BN', affine=False, track_running_stats=False)``):
    every output channel is standardised with the statistics of the current
    batch, ``y = (z - mean_c) / sqrt(var_c + eps)`` with mean and biased
    variance over (N, H, W), in training and eval mode alike (no running
    statistics, no learnable scale or shift).

    Inside a distiller ``in_channels`` and ``out_channels`` may be left out:
    they are read off the recorded student and teacher layers at build time.

    Args:
        in_channels: Student channels.
        out_channels: Teacher channels. Defaults to ``in_channels``.
        with_conv: Map the channels with a bias-free convolution first.
            ``None`` (default): only if the channel counts differ. The recipe
            always has one (``with_conv=True``).
        kernel_size: Convolution kernel size. Defaults to 1.
        eps: Added to the variance. Defaults to 1e-5 (``nn.BatchNorm2d``).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: Optional[int] = None,
                 with_conv: Optional[bool] = None,
                 kernel_size: int = 1,
                 eps: float = 1e-5) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if with_conv is None:
            with_conv = in_channels != out_channels
        if not with_conv and in_channels != out_channels:
            raise ValueError(
                f'NormConnector with_conv=False keeps the {in_channels} '
                f'student channels but {out_channels} are expected; set '
                f'with_conv=True (or leave it out)')
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            bias=False) if with_conv else None
        self.norm = nn.BatchNorm2d(
            out_channels, eps=eps, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_channels, H, W) to standardised (N, out_channels, H, W).
        """
        if self.conv is not None:
            x = self.conv(x)
        return self.norm(x)
