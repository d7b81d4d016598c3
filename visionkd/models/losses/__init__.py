"""Distillation losses: pure tensor math, student first, teacher second."""
from .af_dcd_loss import AfDCDLoss
from .at_loss import ATLoss
from .bckd_loss import BCKDClsLoss, BCKDRegLoss
from .bpkd_loss import BPKDLoss
from .cirkd_memory_loss import CIRKDMemoryLoss
from .cirkd_minibatch_loss import CIRKDMiniBatchLoss
from .cwd_loss import ChannelWiseDivergence
from .defeat_loss import DeFeatLoss
from .detr_distill_loss import DETRDistillFeatureLoss, DETRDistillMatchLoss
from .dist_loss import DISTLoss
from .feature_mse_loss import FeatureMSELoss
from .fgd_loss import FGDLoss
from .fgfi_loss import FGFILoss
from .ifvd_loss import IFVDLoss
from .kd_detr_loss import KDDETRBoxLoss, KDDETRClsLoss
from .kd_kl_div_loss import KDKLDivLoss
from .kd_quality_focal_loss import KDQualityFocalLoss
from .kl_divergence import KLDivergence
from .mgd_loss import MGDLoss
from .pair_wise_affinity_loss import PairWiseAffinityLoss
from .pixel_wise_kd_loss import PixelWiseKDLoss
from .pkd_loss import PKDLoss
from .roi_kd_loss import RoIKDLoss

__all__ = [
    'AfDCDLoss', 'ATLoss', 'BCKDClsLoss', 'BCKDRegLoss', 'CIRKDMemoryLoss',
    'CIRKDMiniBatchLoss', 'ChannelWiseDivergence', 'DeFeatLoss', 'DISTLoss',
    'FeatureMSELoss', 'FGDLoss', 'FGFILoss', 'IFVDLoss', 'KDKLDivLoss',
    'KDQualityFocalLoss', 'KLDivergence', 'MGDLoss', 'PairWiseAffinityLoss',
    'PixelWiseKDLoss', 'PKDLoss', 'RoIKDLoss', 'BPKDLoss', 'KDDETRClsLoss',
    'KDDETRBoxLoss', 'DETRDistillMatchLoss', 'DETRDistillFeatureLoss'
]
