"""Pixel-wise distillation of Structured Knowledge Distillation (SKD)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .seg_utils import check_same_size

__all__ = ['PixelWiseKDLoss']


@MODELS.register_module()
class PixelWiseKDLoss(nn.Module):
    """Pixel-wise KL divergence between dense class distributions.

    *Structured Knowledge Distillation for Semantic Segmentation* (Liu et
    al., CVPR 2019), pixel-wise term (Eq. 1 of the paper):

    ``tau^2 / (N * H * W) * sum_{n,h,w} KL(softmax(T_nhw / tau) ||
    softmax(S_nhw / tau))``

    i.e. KL summed over classes and averaged over every pixel of the batch.

    Differences from the official ``CriterionPixelWise``
    (irfanICMLL/structure_knowledge_distillation, ``utils/criterion.py``),
    which computes ``sum(-softmax(T) * log_softmax(S)) / (H * W)``:

    * it is the cross-entropy, not the KL; the two differ by the teacher's
      entropy, a constant, so the student gradients are identical, while
      the KL is 0 for identical inputs;
    * it is summed, not averaged, over the images on each GPU (divided by
      H*W only). To reproduce its scale use ``loss_weight = lambda_pi *
      images_per_gpu`` (the official ``lambda_pi`` is 10.0);
    * it has no temperature; ``tau=1`` (the default) matches it.

    Student and teacher logits must have the same shape; for different
    sizes add ``connector=dict(type='ResizeConnector')`` (bilinear) to the
    distillation term.

    Args:
        tau: Temperature. Defaults to 1.0.
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 tau: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'tau must be positive, got {tau}')
        self.tau = float(tau)
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student logits, shape (N, C, H, W).
            preds_T: Teacher logits of the same shape.

        Returns:
            Scalar loss.
        """
        check_same_size(preds_S, preds_T, 'PixelWiseKDLoss')
        if preds_S.shape[1] != preds_T.shape[1]:
            raise ValueError(f'PixelWiseKDLoss needs the same number of '
                             f'classes, got {preds_S.shape[1]} (student) '
                             f'and {preds_T.shape[1]} (teacher)')
        N, _, H, W = preds_T.shape
        log_p_S = F.log_softmax(preds_S / self.tau, dim=1)
        log_p_T = F.log_softmax(preds_T / self.tau, dim=1)
        kl = (log_p_T.exp() * (log_p_T - log_p_S)).sum()
        loss = kl * self.tau**2 / (N * H * W)
        return self.loss_weight * loss
