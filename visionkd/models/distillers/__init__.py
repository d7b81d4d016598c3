"""Distillers: wrap a teacher and a student and add distillation terms."""
from .base_distiller import BaseDistiller
from .detection_distiller import DetectionDistiller
from .segmentation_distiller import SegmentationDistiller
from .terms import (
    BaseDistillTerm,
    BCKDDistillTerm,
    CrossHeadDistillTerm,
    FeatureDistillTerm,
    LDDistillTerm,
    MaskDistillTerm,
    RoIDistillTerm,
    TermContext,
    TermLayers,
)

__all__ = [
    'BaseDistiller', 'BaseDistillTerm', 'BCKDDistillTerm',
    'CrossHeadDistillTerm', 'DetectionDistiller', 'FeatureDistillTerm',
    'LDDistillTerm', 'MaskDistillTerm', 'RoIDistillTerm',
    'SegmentationDistiller', 'TermContext', 'TermLayers'
]
