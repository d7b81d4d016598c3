"""Quality focal loss towards a teacher's sigmoid scores (CrossKD)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

__all__ = ['KDQualityFocalLoss']


def reduce_weighted(loss: torch.Tensor, reduction: str,
                    avg_factor: Optional[float]) -> torch.Tensor:
    """``'none'``, ``'sum'`` or ``'mean'`` (sum / ``avg_factor`` if given)."""
    if reduction == 'none':
        return loss
    if reduction == 'sum':
        return loss.sum()
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / avg_factor


def row_weight(weight: Optional[torch.Tensor],
               loss: torch.Tensor) -> torch.Tensor:
    """``loss`` times a per-row ``weight`` (the shape of ``loss`` without
    dim 1, the class dim), cast to the loss's dtype."""
    if weight is None:
        return loss
    return loss * weight.to(loss.dtype).unsqueeze(1)


@MODELS.register_module()
class KDQualityFocalLoss(nn.Module):
    """Quality focal loss with the teacher's sigmoid scores as soft labels.

    *CrossKD: Cross-Head Knowledge Distillation for Object Detection*
    (Wang et al., CVPR 2024), the classification KD loss of its GFL, ATSS
    and RetinaNet settings: GFL's quality focal loss (Li et al., NeurIPS
    2020) with the target ``p_T = sigmoid(T)``::

        BCE(sigmoid(S), p_T) * |sigmoid(S) - p_T| ** beta

    per score, times a per-row ``weight``, summed and divided by
    ``avg_factor`` (or averaged). Zero when ``S == T``. The teacher is not
    detached here: the distillation term gives it detached.

    Args:
        beta: Exponent of the modulating factor. Defaults to 1.0 (the
            official CrossKD configs).
        loss_weight: Weight of the loss. Defaults to 1.0.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Defaults to
            ``'mean'``.
    """

    def __init__(self,
                 beta: float = 1.0,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean') -> None:
        super().__init__()
        if reduction not in ('none', 'sum', 'mean'):
            raise ValueError("reduction must be one of 'none', 'sum', "
                             f"'mean', got {reduction!r}")
        self.beta = float(beta)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student (or crossed) class logits, (N, C, ...).
            preds_T: Teacher class logits of the same shape.
            weight: Optional per-row weight, ``preds_S``'s shape without
                dim 1.
            avg_factor: Optional divisor of the sum (``'mean'`` only).

        Returns:
            Scalar loss (per-element for ``reduction='none'``).
        """
        if preds_S.shape != preds_T.shape:
            raise ValueError(f'KDQualityFocalLoss: student and teacher '
                             f'shapes differ ({tuple(preds_S.shape)} vs '
                             f'{tuple(preds_T.shape)})')
        target = preds_T.sigmoid()
        bce = F.binary_cross_entropy_with_logits(preds_S, target,
                                                 reduction='none')
        focal = (preds_S.sigmoid() - target).abs().pow(self.beta)
        loss = row_weight(weight, bce * focal)
        return self.loss_weight * reduce_weighted(loss, self.reduction,
                                                  avg_factor)
