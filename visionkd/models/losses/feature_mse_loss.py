"""FitNets hint loss."""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .level_batch import LevelBatch, per_level_values

__all__ = ['FeatureMSELoss']


@MODELS.register_module()
class FeatureMSELoss(nn.Module):
    """Mean squared error between student and teacher feature maps.

    The hint loss of *FitNets: Hints for Thin Deep Nets* (Romero et al.,
    ICLR 2015), ``1/2 * ||u_h(x) - r(v_g(x))||^2``, written here with the usual
    mean reduction (the 1/2 and the sum go into ``loss_weight``). The
    regressor ``r`` of the paper is the term's connector in a distiller.
    A distillation term over several levels calls :meth:`forward_levels`
    once instead (the levels joined, see
    :mod:`~visionkd.models.losses.level_batch`; not with
    ``reduction='none'``): the same values.

    Args:
        loss_weight: Weight of the loss. Defaults to 1.0.
        normalize: If True, each sample's feature (flattened over C, H, W) is
            L2-normalised before the error is taken, which makes the loss
            independent of the features' scale. Defaults to False.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``. Defaults to ``'mean'``.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 normalize: bool = False,
                 reduction: str = 'mean') -> None:
        super().__init__()
        if reduction not in ('mean', 'sum', 'none'):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', "
                             f'got {reduction!r}')
        self.loss_weight = float(loss_weight)
        self.normalize = bool(normalize)
        self.reduction = reduction

    @property
    def batches_levels(self) -> bool:
        """Whether :meth:`forward_levels` applies (scalar reductions)."""
        return self.reduction != 'none'

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C, H, W) or any shape.
            preds_T: Teacher feature of the same shape.

        Returns:
            Scalar loss (or per-element loss for ``reduction='none'``).
        """
        if self.normalize:
            preds_S = F.normalize(preds_S.flatten(1), dim=1).view_as(preds_S)
            preds_T = F.normalize(preds_T.flatten(1), dim=1).view_as(preds_T)
        loss = F.mse_loss(preds_S, preds_T, reduction=self.reduction)
        return self.loss_weight * loss

    def forward_levels(self, preds_S: List[torch.Tensor],
                       preds_T: List[torch.Tensor]) -> torch.Tensor:
        """The loss of each level, in one call (``'mean'``/``'sum'``).

        Args:
            preds_S: Student features, level ``l`` of shape
                (N, C, H_l, W_l).
            preds_T: Teacher features of the same shapes.

        Returns:
            ``(L,)`` tensor: ``self(preds_S[l], preds_T[l])`` for each
            level (up to float rounding).
        """
        if not self.batches_levels:
            raise ValueError("FeatureMSELoss.forward_levels needs reduction "
                             "'mean' or 'sum', got 'none'")
        batch = LevelBatch.of(preds_S, preds_T)
        if batch is None or any(
                s.shape != t.shape for s, t in zip(preds_S, preds_T)):
            return per_level_values(self, preds_S, preds_T)
        s, t = batch.join(preds_S), batch.join(preds_T)
        if self.normalize:
            s, t = self._normalize_levels(batch, s), self._normalize_levels(
                batch, t)
        sq = batch.sum((s - t).pow(2).sum((0, 1)))
        if self.reduction == 'mean':
            sq = sq / (batch.size * (s.shape[0] * s.shape[1]))
        return self.loss_weight * sq

    @staticmethod
    def _normalize_levels(batch: LevelBatch,
                          x: torch.Tensor) -> torch.Tensor:
        """Each image's level of joined (N, C, S) features L2-normalised
        over (C, H_l, W_l), clamped at 1e-12 as
        :func:`torch.nn.functional.normalize`."""
        norm = batch.sum(x.pow(2).sum(1)).sqrt().clamp_min(1e-12)
        return x / batch.spread(norm)[:, None]
