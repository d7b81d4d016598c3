"""RoI-level knowledge distillation on shared proposals."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

__all__ = ['RoIKDLoss']


@MODELS.register_module()
class RoIKDLoss(nn.Module):
    """Distil the RoI head's class scores (and box deltas) on shared RoIs.

    *Learning Efficient Object Detection Models with Knowledge Distillation*
    (Chen et al., NeurIPS 2017): the student's RoI classifier learns the
    teacher's temperature-softened class distribution on the same proposals;
    *Distilling Object Detectors via Decoupled Features* (Guo et al., CVPR
    2021, official ggjy/DeFeat.pytorch ``KLDivergenceLoss`` with
    ``kd_cfg.type`` ``'head-cls,KL-decouple'``): foreground and background
    proposals are averaged separately and weighted on their own.

    Both models score the *same* RoIs (the distiller runs the teacher's RoI
    head on the student's sampled proposals). For ``N`` RoIs with ``C + 1``
    logits (``C`` classes, background last, mmdet's convention) and their
    sampling labels ``y`` (``y < C`` foreground, ``y == C`` background):

    * ``kl_i = tau^2 * sum_c p_T,ic * (log p_T,ic - log p_S,ic)`` with
      ``p = softmax(logits / tau)`` (Hinton et al., 2015, ``tau^2`` keeps
      the gradient scale);
    * ``L_fg = sum_{i: y_i < C} kl_i / n_fg`` and ``L_bg = sum_{i: y_i = C}
      kl_i / n_bg`` (a part with no RoI is 0, as in the official code);
    * optional box-delta imitation on foreground RoIs: ``L_bbox = mean |d_S
      - d_T|`` over the four deltas of each RoI's ground-truth class (of
      the only class for class-agnostic regression);
    * ``loss = loss_weight * (loss_weight_fg * L_fg + loss_weight_bg * L_bg
      + loss_weight_bbox * L_bbox)``.

    With ``labels=None`` every RoI counts as foreground (no split).

    Differences from the papers: Chen et al. add the soft loss to the hard
    loss as ``(1 - mu) * L_soft`` with a class-balanced background weight
    and bound the regression by the teacher's error; here the task losses
    stay the student's own and the box imitation is a plain L1 (the
    official DeFeat code's ``l1loss`` form without the ground-truth bound).

    Args:
        tau: Temperature. Defaults to 1.0.
        loss_weight_fg: Weight of the foreground part. Defaults to 1.0.
        loss_weight_bg: Weight of the background part. Defaults to 1.0.
        loss_weight_bbox: Weight of the box-delta imitation; 0 switches it
            off. Defaults to 0.0.
        loss_weight: Overall weight. Defaults to 1.0.
    """

    def __init__(self,
                 tau: float = 1.0,
                 loss_weight_fg: float = 1.0,
                 loss_weight_bg: float = 1.0,
                 loss_weight_bbox: float = 0.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'tau must be positive, got {tau}')
        self.tau = float(tau)
        self.loss_weight_fg = float(loss_weight_fg)
        self.loss_weight_bg = float(loss_weight_bg)
        self.loss_weight_bbox = float(loss_weight_bbox)
        self.loss_weight = float(loss_weight)

    def forward(self,
                preds_S: torch.Tensor,
                preds_T: torch.Tensor,
                labels: Optional[torch.Tensor] = None,
                bbox_pred_S: Optional[torch.Tensor] = None,
                bbox_pred_T: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student class logits of the RoIs, (N, C + 1).
            preds_T: Teacher class logits of the same RoIs, (N, C + 1).
            labels: Sampling label of each RoI, (N,), ``C`` for background.
                ``None``: all RoIs are foreground.
            bbox_pred_S: Student box deltas, (N, 4) or (N, 4 * C); needed
                when ``loss_weight_bbox > 0``.
            bbox_pred_T: Teacher box deltas, same shape.

        Returns:
            Scalar loss.
        """
        if preds_S.shape != preds_T.shape or preds_S.dim() != 2:
            raise ValueError(f'preds_S and preds_T must be (N, C + 1) of the '
                             f'same shape, got {tuple(preds_S.shape)} and '
                             f'{tuple(preds_T.shape)}')
        num_classes = preds_S.size(1) - 1
        if labels is None:
            labels = preds_S.new_zeros(preds_S.size(0), dtype=torch.long)
        log_p_S = F.log_softmax(preds_S / self.tau, dim=1)
        p_T = F.softmax(preds_T / self.tau, dim=1)
        kl = F.kl_div(log_p_S, p_T, reduction='none').sum(1) * self.tau**2
        fg = (labels >= 0) & (labels < num_classes)
        bg = labels == num_classes
        loss = self.loss_weight_fg * self._masked_mean(kl, fg) + \
            self.loss_weight_bg * self._masked_mean(kl, bg)
        if self.loss_weight_bbox > 0:
            if bbox_pred_S is None or bbox_pred_T is None:
                raise ValueError('loss_weight_bbox > 0 needs bbox_pred_S and '
                                 'bbox_pred_T')
            loss = loss + self.loss_weight_bbox * self._bbox_loss(
                bbox_pred_S, bbox_pred_T, labels, fg)
        return self.loss_weight * loss

    @staticmethod
    def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not mask.any():
            return values.sum().mul(0).abs()
        return values[mask].sum() / mask.sum()

    @staticmethod
    def _bbox_loss(delta_S: torch.Tensor, delta_T: torch.Tensor,
                   labels: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
        if delta_S.shape != delta_T.shape:
            raise ValueError(f'student box deltas {tuple(delta_S.shape)} and '
                             f'teacher box deltas {tuple(delta_T.shape)} '
                             f'differ (class-agnostic vs class-specific?)')
        if not fg.any():
            return delta_S.sum().mul(0).abs()
        n = delta_S.size(0)
        d_S = delta_S.view(n, -1, 4)[fg]
        d_T = delta_T.view(n, -1, 4)[fg]
        if d_S.size(1) > 1:
            idx = labels[fg].view(-1, 1, 1).expand(-1, 1, 4)
            d_S = d_S.gather(1, idx)
            d_T = d_T.gather(1, idx)
        return (d_S - d_T).abs().mean()
