"""Distillation term modes (``mode=`` of a ``distill_terms`` entry)."""
from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered, check_arg_types
from .feature_term import FeatureDistillTerm
from .ld_term import LDDistillTerm
from .roi_term import RoIDistillTerm

__all__ = [
    'BaseDistillTerm', 'FeatureDistillTerm', 'LDDistillTerm',
    'RoIDistillTerm', 'TermContext', 'TermLayers', 'build_registered',
    'check_arg_types'
]
