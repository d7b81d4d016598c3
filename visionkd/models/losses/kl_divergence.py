"""Hinton knowledge distillation on class logits."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

__all__ = ['KLDivergence']


@MODELS.register_module()
class KLDivergence(nn.Module):
    """KL divergence between temperature-softened class distributions.

    *Distilling the Knowledge in a Neural Network* (Hinton et al., 2015):
    ``tau^2 * KL(softmax(T / tau) || softmax(S / tau))`` with the class
    dimension at dim 1, so it applies to (N, C) classifier logits and to
    (N, C, H, W) dense logits alike.

    Args:
        tau: Temperature. Defaults to 1.0.
        loss_weight: Weight of the loss. Defaults to 1.0.
        reduction: As in :func:`torch.nn.functional.kl_div`: ``'batchmean'``
            (sum divided by N, the mathematically correct KL mean),
            ``'sum'``, ``'mean'`` (divided by the element count) or
            ``'none'``. Defaults to ``'batchmean'``.
    """

    def __init__(self,
                 tau: float = 1.0,
                 loss_weight: float = 1.0,
                 reduction: str = 'batchmean') -> None:
        super().__init__()
        if reduction not in ('none', 'batchmean', 'sum', 'mean'):
            raise ValueError("reduction must be one of 'none', 'batchmean', "
                             f"'sum', 'mean', got {reduction!r}")
        self.tau = float(tau)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student logits, shape (N, C) or (N, C, ...).
            preds_T: Teacher logits of the same shape.

        Returns:
            Scalar loss (per-element for ``reduction='none'``).
        """
        log_p_S = F.log_softmax(preds_S / self.tau, dim=1)
        p_T = F.softmax(preds_T / self.tau, dim=1)
        loss = F.kl_div(log_p_S, p_T, reduction=self.reduction)
        return self.loss_weight * self.tau**2 * loss
