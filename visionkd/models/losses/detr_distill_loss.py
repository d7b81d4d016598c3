"""DETRDistill: Hungarian-matched prediction KD and target-aware feature KD.

*DETRDistill: A Universal Knowledge Distillation Framework for
DETR-families* (Chang et al., ICCV 2023, arXiv 2211.10156; the authors'
partly released Deformable DETR code, BIVLab-USTC/DETRDistill).
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .box_ops import cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = [
    'DETRDistillMatchLoss', 'DETRDistillFeatureLoss', 'hungarian_match',
    'pairwise_giou', 'pairwise_iou'
]


def hungarian_match(cost: torch.Tensor
                    ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The one-to-one assignments of least total cost (Kuhn-Munkres).

    Args:
        cost: (R, K) cost of matching row ``r`` with column ``k``, or a
            batch of them (N, R, K); copied to the CPU once.

    Returns:
        Per cost matrix, ``(rows, cols)``: ``min(R, K)`` index pairs, rows
        ascending (``scipy.optimize.linear_sum_assignment``).
    """
    from scipy.optimize import linear_sum_assignment
    matrices = cost.detach().float().cpu().numpy()
    if matrices.ndim == 2:
        matrices = matrices[None]
    return [linear_sum_assignment(m) for m in matrices]


def _iou_terms(a: torch.Tensor, b: torch.Tensor, eps: float):
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (area_a + area_b - inter).clamp(min=eps)
    return inter / union, union


def pairwise_iou(a: torch.Tensor, b: torch.Tensor,
                 eps: float = 1e-6) -> torch.Tensor:
    """IoU of every ``(x1, y1, x2, y2)`` box of ``a`` (R, 4) with every box
    of ``b`` (K, 4): (R, K) (mmdet's ``bbox_overlaps``, ``mode='iou'``)."""
    return _iou_terms(a[:, None], b[None], eps)[0]


def pairwise_giou(a: torch.Tensor, b: torch.Tensor,
                  eps: float = 1e-6) -> torch.Tensor:
    """Generalised IoU (Rezatofighi et al., CVPR 2019) of boxes ``a`` and
    ``b`` broadcast against each other (``a[:, None]`` and ``b[None]`` for
    a matrix), with mmdet's clamping of the union and the hull by ``eps``."""
    iou, union = _iou_terms(a, b, eps)
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) -
            torch.minimum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    hull = hull.clamp(min=eps)
    return iou - (hull - union) / hull


def _check_preds(cls: torch.Tensor, box: torch.Tensor, who: str) -> None:
    if cls.dim() != 3 or box.dim() != 3 or box.shape[-1] != 4 or \
            cls.shape[:2] != box.shape[:2]:
        raise ValueError(
            f'{who}: class logits must be (N, Q, C) and boxes (N, Q, 4) of '
            f'the same N and Q, got {tuple(cls.shape)} and '
            f'{tuple(box.shape)}')


@MODELS.register_module()
class DETRDistillMatchLoss(nn.Module):
    """DETRDistill's Hungarian-matched logit and box distillation.

    *DETRDistill* (Chang et al., ICCV 2023), Sec. 3.2: the teacher's
    predictions, *all* of its queries with no score threshold, are
    pseudo ground truth for the student. Per image, student query ``i``
    and teacher query ``j`` cost (the released ``DistillHungarianAssigner``
    and ``DistillCrossEntropyLossCost``)::

        C_ij = cls_cost * sum_c BCE(s_ic, sigmoid(t_jc))
             + reg_cost * |b_i - b'_j|_1 - iou_cost * GIoU(b_i, b'_j)

    with boxes normalised ``(cx, cy, w, h)`` and the teacher's clipped to
    the image (``b'``). Kuhn-Munkres gives ``M`` one-to-one pairs; over the
    batch's ``M`` pairs::

        cls  = loss_weight_cls  * sum_(i,j) sum_c BCE(s_ic, sigmoid(t_jc))
               / M
        l1   = loss_weight_l1   * sum_(i,j) |b_i - b'_j|_1 / M
        giou = loss_weight_giou * sum_(i,j) (1 - GIoU(b_i, b'_j)) / M

    (the released code's ``loss_cls_distill``, ``loss_bbox_distill``,
    ``loss_iou_distill``). With as many student as teacher queries (the
    released setting, 300 each) every student query is matched. With more
    student queries the released code gives the unmatched ones the target
    value ``num_classes`` in a binary cross-entropy (a bug: targets are
    probabilities); here they get no distillation loss.

    Args:
        cls_cost: Weight of the class cost. Defaults to 1.0.
        reg_cost: Weight of the L1 cost. Defaults to 5.0.
        iou_cost: Weight of the GIoU cost. Defaults to 2.0.
        loss_weight_cls: Weight of the class loss. Defaults to 1.0.
        loss_weight_l1: Weight of the L1 loss. Defaults to 5.0.
        loss_weight_giou: Weight of the GIoU loss. Defaults to 2.0.
        loss_weight: Factor of all three. Defaults to 1.0.
    """

    def __init__(self, cls_cost: float = 1.0, reg_cost: float = 5.0,
                 iou_cost: float = 2.0, loss_weight_cls: float = 1.0,
                 loss_weight_l1: float = 5.0, loss_weight_giou: float = 2.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.cls_cost = float(cls_cost)
        self.reg_cost = float(reg_cost)
        self.iou_cost = float(iou_cost)
        self.loss_weight_cls = float(loss_weight_cls)
        self.loss_weight_l1 = float(loss_weight_l1)
        self.loss_weight_giou = float(loss_weight_giou)
        self.loss_weight = float(loss_weight)

    def match_cost(self, cls_S: torch.Tensor, box_S: torch.Tensor,
                   prob_T: torch.Tensor, box_T: torch.Tensor
                   ) -> torch.Tensor:
        """The matching cost (no gradient): (N, Q_S, Q_T), or (Q_S, Q_T)
        for one image's unbatched inputs.

        Args:
            cls_S: Student class logits, ([N,] Q_S, C).
            box_S: Student boxes, normalised cxcywh, ([N,] Q_S, 4).
            prob_T: Teacher class probabilities, ([N,] Q_T, C).
            box_T: Teacher boxes, normalised xyxy clipped to [0, 1],
                ([N,] Q_T, 4).
        """
        with torch.no_grad():
            s = cls_S.float()
            pos = F.binary_cross_entropy_with_logits(
                s, torch.ones_like(s), reduction='none')
            neg = F.binary_cross_entropy_with_logits(
                s, torch.zeros_like(s), reduction='none')
            p = prob_T.float().transpose(-1, -2)
            cls = pos @ p + neg @ (1 - p)
            l1 = torch.cdist(box_S.float(), xyxy_to_cxcywh(box_T.float()),
                             p=1)
            giou = pairwise_giou(cxcywh_to_xyxy(box_S.float())[..., :, None,
                                                                :],
                                 box_T.float()[..., None, :, :])
            return self.cls_cost * cls + self.reg_cost * l1 - \
                self.iou_cost * giou

    def match(self, cls_S: torch.Tensor, box_S: torch.Tensor,
              cls_T: torch.Tensor, box_T: torch.Tensor
              ) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Per image, the matched ``(student rows, teacher columns)``: one
        batched cost, one copy to the CPU, scipy per image."""
        return self._match(cls_S, box_S, cls_T, box_T)[0]

    def _match(self, cls_S: torch.Tensor, box_S: torch.Tensor,
               cls_T: torch.Tensor, box_T: torch.Tensor) -> tuple:
        """:meth:`match`'s pairs, with the teacher's probabilities and
        clipped xyxy boxes they were matched on (the inputs checked)."""
        _check_preds(cls_S, box_S, type(self).__name__ + ' (student)')
        _check_preds(cls_T, box_T, type(self).__name__ + ' (teacher)')
        if cls_S.shape[0] != cls_T.shape[0] or \
                cls_S.shape[-1] != cls_T.shape[-1]:
            raise ValueError(
                f'{type(self).__name__}: student and teacher need the same '
                f'images and classes, got {tuple(cls_S.shape)} and '
                f'{tuple(cls_T.shape)}')
        prob_T, xyxy_T = _teacher_targets(cls_T, box_T)
        pairs = hungarian_match(self.match_cost(cls_S, box_S, prob_T,
                                                xyxy_T))
        return pairs, prob_T, xyxy_T

    def forward(self, cls_S: torch.Tensor, box_S: torch.Tensor,
                cls_T: torch.Tensor, box_T: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Compute the three losses of one decoder layer.

        Args:
            cls_S: Student class logits, (N, Q_S, C).
            box_S: Student boxes, normalised cxcywh, (N, Q_S, 4).
            cls_T: Teacher class logits, (N, Q_T, C).
            box_T: Teacher boxes, normalised cxcywh, (N, Q_T, 4).

        Returns:
            ``(cls, l1, giou)``, scalars in the student's dtype.
        """
        pairs, prob_T, xyxy_T = self._match(cls_S, box_S, cls_T, box_T)
        index = torch.as_tensor(np.concatenate(
            [np.stack([np.full_like(r, n), r, c]) for n, (r, c) in
             enumerate(pairs)], axis=1), dtype=torch.long,
            device=cls_S.device)
        img, rows, cols = index
        num = max(index.shape[1], 1)
        s_cls, s_box = cls_S[img, rows], box_S[img, rows]
        t_prob, t_xyxy = prob_T[img, cols], xyxy_T[img, cols]
        cls = F.binary_cross_entropy_with_logits(
            s_cls, t_prob.to(s_cls.dtype), reduction='sum') / num
        l1 = (s_box - xyxy_to_cxcywh(t_xyxy).to(s_box.dtype)).abs().sum() \
            / num
        giou = (1 - pairwise_giou(cxcywh_to_xyxy(s_box),
                                  t_xyxy.to(s_box.dtype))).sum() / num
        w = self.loss_weight
        return (w * self.loss_weight_cls * cls, w * self.loss_weight_l1 * l1,
                w * self.loss_weight_giou * giou)


def _teacher_targets(cls_T: torch.Tensor, box_T: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Teacher probabilities and boxes as normalised xyxy clipped to the
    image (the released code clips the pixel boxes to ``img_shape``)."""
    return cls_T.detach().sigmoid(), \
        cxcywh_to_xyxy(box_T.detach()).clamp(0, 1)


@MODELS.register_module()
class DETRDistillFeatureLoss(nn.Module):
    """DETRDistill's target-aware query-prior feature distillation.

    *DETRDistill* (Chang et al., ICCV 2023), Sec. 3.3, as the released
    ``Distiller.forward_train``: per teacher decoder layer (*stage*), the
    teacher's ``topk`` most confident (query, class) pairs of each image
    (sigmoid scores over all queries and classes) give queries ``q_k``
    (the layer's hidden states, L2-normalised) and qualities ``w_k`` =
    score times the box's highest IoU with a ground-truth box (the score
    alone in an image without ground truth). On every feature level, with
    the teacher's features L2-normalised over channels ``f'``::

        m(h, w) = max(sum_k w_k <q_k, f'(h, w)>, min_mask)
        m       = m / max_(h, w) m                      (per image)
        loss    = loss_weight * sum_levels MSE(m * F_T, m * F_S)

    ``MSE`` is the mean over batch, channels and positions. Student and
    teacher features must have the same shapes (the released code has no
    adaptation layer: both necks are 256 wide).

    Args:
        topk: (query, class) pairs per image. Defaults to 100 (the
            released code's ``test_cfg.max_per_img``); capped by the
            number of pairs.
        min_mask: Floor of the mask before normalisation. Defaults to 0.01.
        loss_weight: Factor of the loss. Defaults to 1.0.
    """

    def __init__(self, topk: int = 100, min_mask: float = 0.01,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if int(topk) < 1:
            raise ValueError(f'{type(self).__name__}: topk must be >= 1, '
                             f'got {topk}')
        self.topk = int(topk)
        self.min_mask = float(min_mask)
        self.loss_weight = float(loss_weight)

    def query_priors(self, hidden_T: torch.Tensor, cls_T: torch.Tensor,
                     box_T: torch.Tensor, data_samples: Optional[list]
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The selected teacher queries, L2-normalised, (N, K, D), and their
        qualities (N, K); batched (the same operators for any batch and
        number of boxes)."""
        n, q, c = cls_T.shape
        scores, idx = cls_T.detach().sigmoid().flatten(1).topk(
            min(self.topk, q * c), dim=1)
        query = idx // c
        quality = scores
        gt = _padded_gt(data_samples)
        if gt is not None:
            boxes, valid, factor = gt
            picked = torch.gather(box_T.detach(), 1,
                                  query[..., None].expand(-1, -1, 4))
            pixels = cxcywh_to_xyxy(picked.to(boxes)) * factor[:, None]
            iou = _iou_terms(pixels[:, :, None], boxes[:, None], 1e-6)[0]
            best = iou.masked_fill(~valid[:, None], 0).amax(-1)
            quality = torch.where(valid.any(-1, keepdim=True),
                                  scores * best.to(scores), scores)
        vec = torch.gather(hidden_T.detach(), 1, query[..., None].expand(
            -1, -1, hidden_T.shape[-1]))
        return F.normalize(vec, dim=-1), quality

    def forward(self, preds_S: Sequence[torch.Tensor],
                preds_T: Sequence[torch.Tensor], hidden_T: torch.Tensor,
                cls_T: torch.Tensor, box_T: torch.Tensor,
                data_samples: Optional[list] = None) -> torch.Tensor:
        """Compute the loss of one teacher decoder layer.

        Args:
            preds_S: Student features per level, each (N, D, H, W).
            preds_T: Teacher features per level, same shapes.
            hidden_T: The teacher layer's decoder outputs, (N, Q, D).
            cls_T: Its class logits, (N, Q, C).
            box_T: Its boxes, normalised cxcywh, (N, Q, 4).
            data_samples: mmdet data samples (``gt_instances.bboxes`` in
                pixels, ``img_shape``); None: scores alone.
        """
        if len(preds_S) != len(preds_T) or any(
                s.shape != t.shape for s, t in zip(preds_S, preds_T)):
            raise ValueError(
                f'{type(self).__name__}: student and teacher features must '
                f'have the same shapes per level, got '
                f'{[tuple(s.shape) for s in preds_S]} and '
                f'{[tuple(t.shape) for t in preds_T]}')
        queries, quality = self.query_priors(hidden_T, cls_T, box_T,
                                             data_samples)
        loss = 0
        for f_S, f_T in zip(preds_S, preds_T):
            f_T = f_T.detach()
            sim = torch.einsum('nkd,ndhw->nkhw', queries.to(f_T),
                               F.normalize(f_T, dim=1))
            mask = torch.einsum('nkhw,nk->nhw', sim, quality.to(f_T))
            mask = mask.clamp(min=self.min_mask)
            mask = (mask / mask.flatten(1).amax(-1)[:, None, None])[:, None]
            loss = loss + F.mse_loss(mask * f_T, mask.to(f_S) * f_S)
        return self.loss_weight * loss


def _padded_gt(data_samples: Optional[list]
               ) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every image's GT boxes in pixels padded to the batch's most,
    (N, G, 4), which are real (N, G), and ``(w, h, w, h)`` of each image
    (N, 4); None without data samples or boxes."""
    if data_samples is None:
        return None
    boxes = []
    for sample in data_samples:
        b = sample.gt_instances.bboxes
        boxes.append(getattr(b, 'tensor', b).reshape(-1, 4))
    if not any(len(b) for b in boxes):
        return None
    padded = torch.nn.utils.rnn.pad_sequence(boxes, batch_first=True)
    lengths = torch.tensor([len(b) for b in boxes], device=padded.device)
    valid = torch.arange(padded.shape[1], device=padded.device) < \
        lengths[:, None]
    factor = torch.tensor([[s.metainfo['img_shape'][1],
                            s.metainfo['img_shape'][0]] * 2
                           for s in data_samples], dtype=padded.dtype,
                          device=padded.device)
    return padded, valid, factor
