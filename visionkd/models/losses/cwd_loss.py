"""Channel-wise knowledge distillation loss."""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .level_batch import LevelBatch, per_level_values

__all__ = ['ChannelWiseDivergence']


@MODELS.register_module()
class ChannelWiseDivergence(nn.Module):
    """Channel-wise distillation (CWD).

    *Channel-wise Knowledge Distillation for Dense Prediction* (Shu et al.,
    ICCV 2021). Each channel's activation map is turned into a distribution
    over the H*W locations with a softmax at temperature ``tau``; the loss is

    ``tau^2 / (N * C) * sum_{n,c} KL(p_T(n, c) || p_S(n, c))`` with
    ``p_X(n, c) = softmax(X_nc / tau)`` over the H*W locations,

    exactly as in the official code (sum over locations, mean over N*C).
    A distillation term over several levels calls :meth:`forward_levels`
    once instead (the levels joined, see
    :mod:`~visionkd.models.losses.level_batch`): the same values.

    Args:
        tau: Temperature. Defaults to 1.0.
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

    #: :meth:`forward_levels` gives the per-level values in one call.
    batches_levels = True

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.tau = float(tau)
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature or logits, shape (N, C, H, W).
            preds_T: Teacher tensor of the same shape.

        Returns:
            Scalar loss.
        """
        N, C, H, W = preds_S.shape
        logits_S = preds_S.reshape(N * C, H * W) / self.tau
        logits_T = preds_T.reshape(N * C, H * W) / self.tau
        log_p_T = F.log_softmax(logits_T, dim=1)
        kl = (log_p_T.exp() * (log_p_T - F.log_softmax(logits_S, dim=1)))
        loss = kl.sum() * self.tau**2 / (N * C)
        return self.loss_weight * loss

    def forward_levels(self, preds_S: List[torch.Tensor],
                       preds_T: List[torch.Tensor]) -> torch.Tensor:
        """The loss of each level, in one call.

        Args:
            preds_S: Student maps, level ``l`` of shape (N, C, H_l, W_l).
            preds_T: Teacher maps of the same shapes.

        Returns:
            ``(L,)`` tensor: ``self(preds_S[l], preds_T[l])`` for each
            level (up to float rounding).
        """
        batch = LevelBatch.of(preds_S, preds_T)
        if batch is None or any(
                s.shape != t.shape for s, t in zip(preds_S, preds_T)):
            return per_level_values(self, preds_S, preds_T)
        N, C = preds_S[0].shape[:2]
        log_p_T, log_p_S = (batch.log_softmax(batch.join(x) / self.tau)
                            for x in (preds_T, preds_S))
        kl = batch.sum((log_p_T.exp() * (log_p_T - log_p_S)).sum((0, 1)))
        return self.loss_weight * (kl * (self.tau**2 / (N * C)))
