"""KD-DETR: class and box distillation at shared distillation points."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .box_ops import cxcywh_to_xyxy

__all__ = ['KDDETRClsLoss', 'KDDETRBoxLoss', 'teacher_confidence']

REDUCTIONS = ('sum', 'mean')


def teacher_confidence(teacher_logits: torch.Tensor) -> torch.Tensor:
    """KD-DETR's per-query weight: the teacher's highest sigmoid class
    score, ``max_c sigmoid(t_c)``, shape ``teacher_logits.shape[:-1]``,
    without gradient."""
    return teacher_logits.detach().sigmoid().amax(dim=-1)


def _check_pair(pred: torch.Tensor, target: torch.Tensor, last: int,
                what: str) -> None:
    if pred.shape != target.shape or pred.dim() < 2 or (
            last and pred.shape[-1] != last):
        raise ValueError(f'{what}: student and teacher must have the same '
                         f'shape (..., {last or "C"}), got '
                         f'{tuple(pred.shape)} and {tuple(target.shape)}')


def _query_weight(weight: Optional[torch.Tensor],
                  shape: torch.Size) -> Optional[torch.Tensor]:
    if weight is not None and weight.shape != shape:
        raise ValueError(f'weight must have shape {tuple(shape)} (one per '
                         f'query), got {tuple(weight.shape)}')
    return weight


@MODELS.register_module()
class KDDETRClsLoss(nn.Module):
    """KD-DETR classification distillation at shared distillation points.

    *KD-DETR: Knowledge Distillation for Detection Transformer with
    Consistent Distillation Points Sampling* (Wang et al., CVPR 2024,
    arXiv 2211.08071; the authors' released DAB-DETR code): the student's
    and the teacher's class logits at the same decoder queries, (..., C),
    are compared by a temperature-``T`` softmax KL, averaged over the
    classes and scaled by ``T^2``, and each query is weighted by the
    teacher's confidence ``w_i = max_c sigmoid(t_ic)``::

        KL_i = T^2 / C * sum_c p_T_ic (log p_T_ic - log p_S_ic)
        loss = loss_weight * sum_i w_i KL_i          (reduction='sum')

    ``reduction='sum'`` is the released code's (a sum over every query of
    the batch: it grows with the batch and the number of points);
    ``'mean'`` divides by the number of queries.

    Args:
        T: Softmax temperature. Defaults to 10.0 (the released code).
        reduction: ``'sum'`` (default) or ``'mean'`` over the queries.
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

    def __init__(self, T: float = 10.0, reduction: str = 'sum',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f'T must be positive, got {T}')
        if reduction not in REDUCTIONS:
            raise ValueError(f'reduction must be one of {list(REDUCTIONS)}, '
                             f'got {reduction!r}')
        self.T = float(T)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student class logits, (..., C) (e.g. (N, Q, C)).
            preds_T: Teacher class logits, same shape.
            weight: Per-query weight, ``preds_S.shape[:-1]``; None: the
                teacher's confidence (:func:`teacher_confidence`).

        Returns:
            Scalar loss.
        """
        _check_pair(preds_S, preds_T, 0, 'KDDETRClsLoss')
        weight = _query_weight(weight, preds_S.shape[:-1])
        if weight is None:
            weight = teacher_confidence(preds_T)
        log_p_s = F.log_softmax(preds_S / self.T, dim=-1)
        log_p_t = F.log_softmax(preds_T / self.T, dim=-1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).mean(dim=-1)
        loss = (weight * kl).sum() * self.T**2
        if self.reduction == 'mean':
            loss = loss / max(weight.numel(), 1)
        return self.loss_weight * loss


def generalized_iou(a: torch.Tensor, b: torch.Tensor,
                    eps: float = 1e-7) -> torch.Tensor:
    """GIoU of paired ``(x1, y1, x2, y2)`` boxes, (...,) (Rezatofighi et
    al., CVPR 2019)."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    iou = inter / (union + eps)
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) -
            torch.minimum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    return iou - (hull - union) / (hull + eps)


@MODELS.register_module()
class KDDETRBoxLoss(nn.Module):
    """KD-DETR box distillation at shared distillation points.

    *KD-DETR* (Wang et al., CVPR 2024; the authors' released code): the
    student's boxes at the shared queries imitate the teacher's, both
    normalised ``(cx, cy, w, h)`` in [0, 1] as DETR heads predict them,
    with an L1 term (mean over the 4 coordinates) and a GIoU term, each a
    weighted mean over the queries with the teacher-confidence weights
    ``w_i`` of :class:`KDDETRClsLoss`::

        l1 = sum_i w_i mean_k |b_S_ik - b_T_ik| / sum_i w_i
        giou = sum_i w_i (1 - GIoU(b_S_i, b_T_i)) / sum_i w_i
        loss = loss_weight * (loss_weight_l1 * l1 + loss_weight_giou * giou)

    Args:
        loss_weight_l1: Weight of the L1 term. Defaults to 5.0 (the
            released code's, as DETR's box loss).
        loss_weight_giou: Weight of the GIoU term. Defaults to 2.0.
        loss_weight: Weight of the whole loss. Defaults to 1.0.
    """

    def __init__(self, loss_weight_l1: float = 5.0,
                 loss_weight_giou: float = 2.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight_l1 = float(loss_weight_l1)
        self.loss_weight_giou = float(loss_weight_giou)
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student boxes, (..., 4), normalised cx, cy, w, h.
            preds_T: Teacher boxes, same shape.
            weight: Per-query weight, ``preds_S.shape[:-1]`` (the teacher's
                confidence); None weighs every query 1.

        Returns:
            Scalar loss.
        """
        _check_pair(preds_S, preds_T, 4, 'KDDETRBoxLoss')
        weight = _query_weight(weight, preds_S.shape[:-1])
        if weight is None:
            weight = preds_S.new_ones(preds_S.shape[:-1])
        norm = weight.sum().clamp(min=torch.finfo(weight.dtype).eps)
        l1 = (weight * (preds_S - preds_T).abs().mean(-1)).sum() / norm
        giou = generalized_iou(cxcywh_to_xyxy(preds_S),
                               cxcywh_to_xyxy(preds_T))
        giou = (weight * (1 - giou)).sum() / norm
        return self.loss_weight * (self.loss_weight_l1 * l1 +
                                   self.loss_weight_giou * giou)
