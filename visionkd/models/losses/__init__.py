"""Distillation losses: pure tensor math, student first, teacher second."""
from .at_loss import ATLoss
from .cwd_loss import ChannelWiseDivergence
from .feature_mse_loss import FeatureMSELoss
from .kl_divergence import KLDivergence
from .pkd_loss import PKDLoss

__all__ = [
    'ATLoss', 'ChannelWiseDivergence', 'FeatureMSELoss', 'KLDivergence',
    'PKDLoss'
]
