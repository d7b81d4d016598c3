"""BCKD: binary classification KD and IoU-based localisation KD."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

__all__ = ['BCKDClsLoss', 'BCKDRegLoss']


def _reduce(loss: torch.Tensor, weight: Optional[torch.Tensor],
            avg_factor: Optional[float]) -> torch.Tensor:
    """Weighted per-location losses: sum / avg_factor, or the mean."""
    if weight is not None:
        if weight.shape != loss.shape:
            raise ValueError(f'weight must have shape {tuple(loss.shape)} '
                             f'(one per location), got {tuple(weight.shape)}')
        loss = loss * weight
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / avg_factor


@MODELS.register_module()
class BCKDClsLoss(nn.Module):
    """Binary classification distillation of sigmoid class scores.

    *Bridging Cross-task Protocol Inconsistency for Distillation in Dense
    Object Detection* (Yang et al., ICCV 2023; official code
    TinyTigerPan/BCKD, ``NovelKDLoss``): each class score of a dense
    detector is a binary classification, so every class map is distilled
    with a binary cross-entropy against the teacher's sigmoid score,
    scaled by how far the student is from it. For logits ``s, t`` of shape
    (N, C) (N locations)::

        p_S, p_T = sigmoid(s), sigmoid(t)
        l_i = sum_c BCE(p_S_ic, p_T_ic) * |p_T_ic - p_S_ic| ** beta
        loss = loss_weight * sum_i w_i * l_i / avg_factor

    (the mean over locations without ``avg_factor``). The scale
    ``|p_T - p_S| ** beta`` is part of the differentiated expression, as
    in the official code (only the teacher is constant); it makes the
    loss 0 for identical inputs.

    Args:
        beta: Exponent of the score-gap scale. Defaults to 1.0 (the
            official default; the released configs keep it).
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

    def __init__(self, beta: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f'beta must be positive, got {beta}')
        self.beta = float(beta)
        self.loss_weight = float(loss_weight)

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student class logits, (N, C).
            preds_T: Teacher class logits, (N, C).
            weight: Per-location weight, (N,) (GFL's label weights).
            avg_factor: Normaliser of the weighted sum (GFL: number of
                positive locations); None averages over the locations.

        Returns:
            Scalar loss.
        """
        if preds_S.shape != preds_T.shape or preds_S.dim() != 2:
            raise ValueError(f'preds_S and preds_T must be (N, C) of the '
                             f'same shape, got {tuple(preds_S.shape)} and '
                             f'{tuple(preds_T.shape)}')
        p_T = preds_T.sigmoid()
        gap = (p_T - preds_S.sigmoid()).abs().pow(self.beta)
        bce = F.binary_cross_entropy_with_logits(preds_S, p_T,
                                                 reduction='none')
        loss = (bce * gap).sum(dim=1)
        return self.loss_weight * _reduce(loss, weight, avg_factor)


def _side_distances(dist: torch.Tensor) -> torch.Tensor:
    """Expected distance of each side, (N, 4), from (N, 4 * (n + 1)) logits
    over the bins ``0..n`` (GFL's ``Integral``)."""
    n, channels = dist.shape
    if channels % 4 or channels < 8:
        raise ValueError(f'box distributions must be (N, 4 * (reg_max + '
                         f'1)) with reg_max >= 1, got {tuple(dist.shape)}')
    bins = channels // 4
    prob = F.softmax(dist.reshape(n, 4, bins), dim=2)
    project = torch.arange(bins, dtype=dist.dtype, device=dist.device)
    return (prob * project).sum(dim=2)


def giou_of_distances(d_S: torch.Tensor, d_T: torch.Tensor,
                      eps: float = 1e-6) -> torch.Tensor:
    """GIoU of boxes given by (left, top, right, bottom) distances from a
    common point, (N, 4) each; as mmdet's ``bbox_overlaps(mode='giou')``
    (union and enclosing area clamped to ``eps``)."""
    lo_w = torch.minimum(d_S[:, 0], d_T[:, 0]) + torch.minimum(
        d_S[:, 2], d_T[:, 2])
    lo_h = torch.minimum(d_S[:, 1], d_T[:, 1]) + torch.minimum(
        d_S[:, 3], d_T[:, 3])
    hi_w = torch.maximum(d_S[:, 0], d_T[:, 0]) + torch.maximum(
        d_S[:, 2], d_T[:, 2])
    hi_h = torch.maximum(d_S[:, 1], d_T[:, 1]) + torch.maximum(
        d_S[:, 3], d_T[:, 3])
    area_S = (d_S[:, 0] + d_S[:, 2]) * (d_S[:, 1] + d_S[:, 3])
    area_T = (d_T[:, 0] + d_T[:, 2]) * (d_T[:, 1] + d_T[:, 3])
    overlap = lo_w.clamp(min=0) * lo_h.clamp(min=0)
    union = (area_S + area_T - overlap).clamp(min=eps)
    enclose = (hi_w * hi_h).clamp(min=eps)
    return overlap / union - (enclose - union) / enclose


@MODELS.register_module()
class BCKDRegLoss(nn.Module):
    """IoU-based localisation distillation on GFL box distributions.

    *Bridging Cross-task Protocol Inconsistency for Distillation in Dense
    Object Detection* (Yang et al., ICCV 2023; official code
    TinyTigerPan/BCKD, ``LDHead.loss_single``'s ``loss_score_kd`` with
    mmdet's ``GIoULoss``): the student's decoded box at a location should
    overlap the teacher's box at the same location, whatever the head
    parameterises. Inputs are the GFL head's per-side distributions
    (``reg_max + 1`` bin logits per side); each side's distance is their
    expectation, both boxes are spanned around the location's point::

        b_S, b_T = boxes of Integral(s), Integral(t)
        loss = loss_weight * sum_i w_i * (1 - GIoU(b_S_i, b_T_i)) / avg_factor

    (the mean over locations without ``avg_factor``). The term passes
    ``w_i = max_c |sigmoid(t_cls) - sigmoid(s_cls)|`` times the label
    weight, detached, as the official code.

    Difference from the official code: it decodes boxes at the anchor
    centres (in stride units) and calls mmdet's ``GIoULoss``; since both
    boxes share the point, GIoU depends on the distances only and is
    computed from them here (equal up to rounding).

    Args:
        loss_weight: Weight of the loss. Defaults to 1.0 (the released
            configs use 4.0).
        eps: Clamp of the union and the enclosing area (mmdet's
            ``GIoULoss``). Defaults to 1e-6.
    """

    def __init__(self, loss_weight: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.eps = float(eps)

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student box distribution logits, (N, 4 * (n + 1)).
            preds_T: Teacher box distribution logits, same shape.
            weight: Per-location weight, (N,).
            avg_factor: Normaliser of the weighted sum; None averages over
                the locations.

        Returns:
            Scalar loss.
        """
        if preds_S.shape != preds_T.shape or preds_S.dim() != 2:
            raise ValueError(f'preds_S and preds_T must be (N, 4 * (reg_max '
                             f'+ 1)) of the same shape, got '
                             f'{tuple(preds_S.shape)} and '
                             f'{tuple(preds_T.shape)}')
        giou = giou_of_distances(_side_distances(preds_S),
                                 _side_distances(preds_T), self.eps)
        return self.loss_weight * _reduce(1 - giou, weight, avg_factor)
