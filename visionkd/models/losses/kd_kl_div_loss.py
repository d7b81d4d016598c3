"""KL divergence of softmax distributions with a per-row weight (CrossKD)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .kd_quality_focal_loss import reduce_weighted, row_weight

__all__ = ['KDKLDivLoss']


@MODELS.register_module()
class KDKLDivLoss(nn.Module):
    """``T^2 * KL(softmax(t / T) || softmax(s / T))`` per row, weighted.

    The regression KD loss of *CrossKD: Cross-Head Knowledge Distillation
    for Object Detection* (Wang et al., CVPR 2024) on GFL's box
    distributions (``reg_max + 1`` bins per box side, dim 1): the KL of a
    row is **summed** over the bins (``class_reduction='sum'``, the official
    CrossKD configs) or averaged (``'mean'``, what mmdet's
    ``KnowledgeDistillationKLDivLoss`` does), times a per-row ``weight``,
    then summed and divided by ``avg_factor`` (or averaged). mmdet 3.3's
    loss has no ``class_reduction``, hence this module. The teacher is not
    detached here: the distillation term gives it detached.

    Args:
        T: Temperature. Defaults to 1.0.
        class_reduction: ``'sum'`` or ``'mean'`` over dim 1. Defaults to
            ``'sum'``.
        loss_weight: Weight of the loss. Defaults to 1.0.
        reduction: ``'mean'``, ``'sum'`` or ``'none'`` over the rows.
            Defaults to ``'mean'``.
    """

    def __init__(self,
                 T: float = 1.0,
                 class_reduction: str = 'sum',
                 loss_weight: float = 1.0,
                 reduction: str = 'mean') -> None:
        super().__init__()
        if class_reduction not in ('sum', 'mean'):
            raise ValueError("class_reduction must be 'sum' or 'mean', got "
                             f'{class_reduction!r}')
        if reduction not in ('none', 'sum', 'mean'):
            raise ValueError("reduction must be one of 'none', 'sum', "
                             f"'mean', got {reduction!r}")
        if T <= 0:
            raise ValueError(f'T must be positive, got {T!r}')
        self.T = float(T)
        self.class_reduction = class_reduction
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student (or crossed) logits, (N, C, ...), softmax over
                dim 1.
            preds_T: Teacher logits of the same shape.
            weight: Optional per-row weight, ``preds_S``'s shape without
                dim 1.
            avg_factor: Optional divisor of the sum (``'mean'`` only).

        Returns:
            Scalar loss (per row for ``reduction='none'``).
        """
        if preds_S.shape != preds_T.shape:
            raise ValueError(f'KDKLDivLoss: student and teacher shapes '
                             f'differ ({tuple(preds_S.shape)} vs '
                             f'{tuple(preds_T.shape)})')
        kl = F.kl_div(F.log_softmax(preds_S / self.T, dim=1),
                      F.softmax(preds_T / self.T, dim=1), reduction='none')
        kl = kl.sum(1, keepdim=True) if self.class_reduction == 'sum' else \
            kl.mean(1, keepdim=True)
        loss = row_weight(weight, kl * self.T**2).squeeze(1)
        return self.loss_weight * reduce_weighted(loss, self.reduction,
                                                  avg_factor)
