"""Attention Transfer loss."""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .level_batch import LevelBatch, per_level_values

__all__ = ['ATLoss']


@MODELS.register_module()
class ATLoss(nn.Module):
    """Activation-based attention transfer.

    *Paying More Attention to Attention* (Zagoruyko & Komodakis, ICLR 2017).
    The spatial attention map of a feature ``F`` (N, C, H, W) is
    ``Q = mean_c |F_c|^p`` flattened to (N, H*W) and L2-normalised per sample;
    the loss is the mean squared difference of the student's and teacher's
    normalised maps, as in the official implementation
    (``(at(x) - at(y)).pow(2).mean()``). The paper weights it by
    ``beta / 2`` with ``beta = 1000``: set ``loss_weight=500`` to match.
    A distillation term over several levels calls :meth:`forward_levels`
    once instead (the levels joined, see
    :mod:`~visionkd.models.losses.level_batch`): the same values.

    Args:
        loss_weight: Weight of the loss. Defaults to 1.0.
        p: Power applied to the absolute activations. Defaults to 2.
    """

    #: :meth:`forward_levels` gives the per-level values in one call.
    batches_levels = True

    def __init__(self, loss_weight: float = 1.0, p: float = 2) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.p = p

    def attention(self, feat: torch.Tensor) -> torch.Tensor:
        """Normalised spatial attention map, shape (N, H*W)."""
        return F.normalize(feat.abs().pow(self.p).mean(1).flatten(1), dim=1)

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C_s, H, W).
            preds_T: Teacher feature, shape (N, C_t, H, W); the channel
                counts may differ.

        Returns:
            Scalar loss.
        """
        diff = self.attention(preds_S) - self.attention(preds_T)
        return self.loss_weight * diff.pow(2).mean()

    def forward_levels(self, preds_S: List[torch.Tensor],
                       preds_T: List[torch.Tensor]) -> torch.Tensor:
        """The loss of each level, in one call.

        Args:
            preds_S: Student features, level ``l`` of shape
                (N, C_s, H_l, W_l).
            preds_T: Teacher features, (N, C_t, H_l, W_l).

        Returns:
            ``(L,)`` tensor: ``self(preds_S[l], preds_T[l])`` for each
            level (up to float rounding).
        """
        batch = LevelBatch.of(preds_S, preds_T)
        if batch is None or preds_S[0].shape[0] != preds_T[0].shape[0]:
            return per_level_values(self, preds_S, preds_T)
        diff = (self._attention_levels(batch, batch.join(preds_S))
                - self._attention_levels(batch, batch.join(preds_T)))
        sq = batch.sum(diff.pow(2).sum(0))
        return self.loss_weight * (sq / (batch.size * diff.shape[0]))

    def _attention_levels(self, batch: LevelBatch,
                          feat: torch.Tensor) -> torch.Tensor:
        """:meth:`attention` of every level of joined (N, C, S) features,
        (N, S); the L2 norm per image and level, clamped at 1e-12 as
        :func:`torch.nn.functional.normalize`."""
        q = feat.abs().pow(self.p).mean(1)
        norm = batch.sum(q.pow(2)).sqrt().clamp_min(1e-12)
        return q / batch.spread(norm)
