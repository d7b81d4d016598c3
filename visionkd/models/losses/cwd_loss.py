"""Channel-wise knowledge distillation loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

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

    Args:
        tau: Temperature. Defaults to 1.0.
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

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
