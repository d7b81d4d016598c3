"""Attention Transfer loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

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

    Args:
        loss_weight: Weight of the loss. Defaults to 1.0.
        p: Power applied to the absolute activations. Defaults to 2.
    """

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
