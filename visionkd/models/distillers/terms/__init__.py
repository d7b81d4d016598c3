"""Distillation term modes (``mode=`` of a ``distill_terms`` entry)."""
from .base_term import BaseDistillTerm, TermContext, TermLayers
from .bckd_term import BCKDDistillTerm
from .build_utils import build_registered, check_arg_types
from .cross_head_term import CrossHeadDistillTerm
from .detr_distill_term import DETRDistillTerm
from .detr_query_term import DETRQueryDistillTerm
from .feature_term import FeatureDistillTerm
from .ld_term import LDDistillTerm
from .mask_term import MaskDistillTerm
from .roi_term import RoIDistillTerm

__all__ = [
    'BaseDistillTerm', 'BCKDDistillTerm', 'CrossHeadDistillTerm',
    'DETRDistillTerm', 'DETRQueryDistillTerm',
    'FeatureDistillTerm', 'LDDistillTerm', 'MaskDistillTerm',
    'RoIDistillTerm', 'TermContext', 'TermLayers', 'build_registered',
    'check_arg_types'
]
