"""FitNets hint loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

__all__ = ['FeatureMSELoss']


@MODELS.register_module()
class FeatureMSELoss(nn.Module):
    """Mean squared error between student and teacher feature maps.

    The hint loss of *FitNets: Hints for Thin Deep Nets* (Romero et al.,
    ICLR 2015), ``1/2 * ||u_h(x) - r(v_g(x))||^2``, written here with the usual
    mean reduction (the 1/2 and the sum go into ``loss_weight``). The
    regressor ``r`` of the paper is the term's connector in a distiller.

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
