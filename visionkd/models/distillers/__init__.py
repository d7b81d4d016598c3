"""Distillers: wrap a teacher and a student and add distillation terms."""
from .base_distiller import BaseDistiller
from .detection_distiller import DetectionDistiller
from .distill_term import DistillTerm
from .ld_distill_term import LDDistillTerm
from .roi_distill_term import RoIDistillTerm
from .segmentation_distiller import SegmentationDistiller

__all__ = [
    'BaseDistiller', 'DetectionDistiller', 'DistillTerm', 'LDDistillTerm',
    'RoIDistillTerm', 'SegmentationDistiller'
]
