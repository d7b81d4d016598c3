"""1x1-convolution channel adapter."""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule

from visionkd.registry import MODELS

__all__ = ['ConvConnector']


@MODELS.register_module()
class ConvConnector(nn.Module):
    """Map student channels to teacher channels with a convolution.

    Inside a distiller ``in_channels`` and ``out_channels`` may be left out:
    they are read off the recorded student and teacher layers at build time.

    Args:
        in_channels: Student channels.
        out_channels: Teacher channels.
        kernel_size: Convolution kernel size. Defaults to 1.
        norm_cfg: Optional norm layer, e.g. ``dict(type='BN')``.
        act_cfg: Optional activation, e.g. ``dict(type='ReLU')``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 1,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.conv = ConvModule(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_channels, H, W) to (N, out_channels, H, W)."""
        return self.conv(x)
