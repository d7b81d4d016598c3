"""Valuable localization region (VLR) of Localization Distillation.

Zheng et al., *Localization Distillation for Dense Object Detection*
(CVPR 2022), Sec. 3.3: besides the positive locations of ATSS (the *main
distillation region*), LD distils the box distributions at locations that
are close to, but below, the ATSS positive threshold of a ground-truth box.
"""
from typing import List, Optional

import torch
from mmdet.structures.bbox import bbox_overlaps

__all__ = ['LDVLRAssigner', 'diou_matrix']

_FAR = 1e8


def diou_matrix(boxes: torch.Tensor, gts: torch.Tensor,
                eps: float = 1e-6) -> torch.Tensor:
    """Pairwise Distance-IoU (Zheng et al., AAAI 2020), ``(n, k)``.

    IoU minus the squared distance of the two centres over the squared
    diagonal of the smallest enclosing box (both clamped below by ``eps``,
    as mmdet's ``bbox_overlaps`` does for the union).
    """
    iou = bbox_overlaps(boxes, gts, eps=eps)
    ctr_b = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    ctr_g = (gts[None, :, :2] + gts[None, :, 2:]) / 2
    rho2 = (ctr_b - ctr_g).pow(2).sum(-1)
    lt = torch.min(boxes[:, None, :2], gts[None, :, :2])
    rb = torch.max(boxes[:, None, 2:], gts[None, :, 2:])
    diag2 = (rb - lt).clamp(min=0).pow(2).sum(-1).clamp(min=eps)
    return iou - rho2 / diag2


class LDVLRAssigner:
    """The VLR of LD's official code, for one image.

    For each ground-truth box ``g``, ``thr_g`` is its ATSS IoU threshold
    (mean + standard deviation of the IoUs of the ``topk`` priors nearest to
    its centre on each level, priors inside an ignored box left out when
    ``ignore_iof_thr > 0``). A prior ``a`` is in the VLR of ``g`` when
    ``lower_ratio * thr_g <= DIoU(a, g) < thr_g``, on every level and
    without ATSS's centre-in-box condition (so ATSS positives may be in it
    as well). A prior's weight is its largest IoU with a box whose VLR
    holds it, 0 outside every VLR.

    Args:
        topk: Priors per level for the threshold (the student's ATSS
            ``topk``).
        lower_ratio: Lower DIoU bound as a fraction of the threshold.
        ignore_iof_thr: As ATSSAssigner's ``ignore_iof_thr``.
    """

    def __init__(self, topk: int = 9, lower_ratio: float = 0.25,
                 ignore_iof_thr: float = -1.0) -> None:
        self.topk = int(topk)
        self.lower_ratio = float(lower_ratio)
        self.ignore_iof_thr = float(ignore_iof_thr)

    def thresholds(self, priors: torch.Tensor, num_level_priors: List[int],
                   gts: torch.Tensor, iou: torch.Tensor,
                   ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ATSS IoU threshold of each ground-truth box, ``(k, )``."""
        ctr_p = (priors[:, :2] + priors[:, 2:]) / 2
        ctr_g = (gts[:, :2] + gts[:, 2:]) / 2
        dist = (ctr_p[:, None] - ctr_g[None]).pow(2).sum(-1).sqrt()
        if (self.ignore_iof_thr > 0 and ignore is not None
                and ignore.numel() > 0):
            iof = bbox_overlaps(priors, ignore, mode='iof').max(dim=1)[0]
            dist[iof > self.ignore_iof_thr] = _FAR
        candidates, start = [], 0
        for n in num_level_priors:
            k = min(self.topk, n)
            candidates.append(
                dist[start:start + n].topk(k, dim=0, largest=False)[1] +
                start)
            start += n
        cand = torch.cat(candidates, dim=0)
        cand_iou = iou.gather(0, cand)
        return cand_iou.mean(0) + cand_iou.std(0)

    @torch.no_grad()
    def assign(self, priors: torch.Tensor, num_level_priors: List[int],
               gt_bboxes: torch.Tensor,
               gt_bboxes_ignore: Optional[torch.Tensor] = None
               ) -> torch.Tensor:
        """VLR weight of each prior, ``(n, )``: its IoU with the box, or 0.

        Args:
            priors: Priors (anchors) of the image, all levels, ``(n, 4)``.
            num_level_priors: Number of priors on each level.
            gt_bboxes: Ground-truth boxes, ``(k, 4)``.
            gt_bboxes_ignore: Ignored boxes, ``(m, 4)``, or None.
        """
        priors = priors[:, :4]
        weight = priors.new_zeros(priors.size(0))
        if gt_bboxes.numel() == 0 or priors.numel() == 0:
            return weight
        iou = bbox_overlaps(priors, gt_bboxes)
        thr = self.thresholds(priors, num_level_priors, gt_bboxes, iou,
                              gt_bboxes_ignore)
        diou = diou_matrix(priors, gt_bboxes)
        in_vlr = (diou < thr[None]) & (diou >= self.lower_ratio * thr[None])
        best = torch.where(in_vlr, iou, iou.new_full((), -1.0)).max(dim=1)[0]
        hit = in_vlr.any(dim=1)
        weight[hit] = best[hit]
        return weight
