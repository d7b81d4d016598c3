"""Task modules of visionkd's distillation terms (assigners)."""
from .ld_vlr_assigner import LDVLRAssigner, diou_matrix

__all__ = ['LDVLRAssigner', 'diou_matrix']
