"""DIST: relation (Pearson correlation) based logit distillation."""
import torch
import torch.nn as nn

from visionkd.registry import MODELS

from .seg_utils import check_same_size

__all__ = ['DISTLoss']


def _pearson(x: torch.Tensor, y: torch.Tensor,
             eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of two (R, D) matrices, shape (R,).

    As the official code: the cosine similarity of the mean-centred rows,
    ``eps`` added to the product of the norms.
    """
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1) + eps)


@MODELS.register_module()
class DISTLoss(nn.Module):
    """DIST: inter- and intra-class relation distillation.

    *Knowledge Distillation from A Stronger Teacher* (Huang et al., NeurIPS
    2022), as the official code (hunto/DIST_KD, ``segmentation/losses/
    dist_kd.py`` for dense logits, ``classification`` for ``tau``):

    * dense logits (N, C, H, W) are reshaped to (N*H*W, C) (every pixel is
      a sample); (N, C) logits are used as they are;
    * ``Y = softmax(logits / tau)`` for student and teacher;
    * ``inter = 1 - mean_rows pearson(Y_S[r], Y_T[r])`` (per pixel, across
      classes);
    * ``intra = 1 - mean_cols pearson(Y_S[:, c], Y_T[:, c])`` (per class,
      across all pixels of the batch);
    * ``loss = tau^2 * (beta * inter + gamma * intra)``.

    Pearson is the cosine of the centred vectors with ``eps=1e-8`` added to
    the norm product, as officially. The official segmentation version has
    no temperature (``tau=1``, the default here); the classification
    version and MMRazor's ``DISTLoss`` use ``tau`` as above. Student and
    teacher logits must have the same shape; where MMRazor resizes the
    student to the teacher inside the loss, add
    ``connector=dict(type='ResizeConnector')`` to the distillation term.

    Args:
        beta: Weight of the inter-class relation. Defaults to 1.0.
        gamma: Weight of the intra-class relation. Defaults to 1.0.
        tau: Temperature. Defaults to 1.0.
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 beta: float = 1.0,
                 gamma: float = 1.0,
                 tau: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'tau must be positive, got {tau}')
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student logits, shape (N, C) or (N, C, H, W).
            preds_T: Teacher logits of the same shape.

        Returns:
            Scalar loss.
        """
        if preds_S.dim() not in (2, 4) or preds_S.dim() != preds_T.dim():
            raise ValueError(f'DISTLoss expects (N, C) or (N, C, H, W) '
                             f'logits, got {tuple(preds_S.shape)} and '
                             f'{tuple(preds_T.shape)}')
        if preds_S.dim() == 4:
            check_same_size(preds_S, preds_T, 'DISTLoss')
        if preds_S.shape != preds_T.shape:
            raise ValueError(f'DISTLoss needs logits of the same shape, got '
                             f'{tuple(preds_S.shape)} (student) and '
                             f'{tuple(preds_T.shape)} (teacher)')
        C = preds_S.shape[1]
        if preds_S.dim() == 4:
            preds_S = preds_S.transpose(1, 3).reshape(-1, C)
            preds_T = preds_T.transpose(1, 3).reshape(-1, C)
        y_S = (preds_S / self.tau).softmax(dim=1)
        y_T = (preds_T / self.tau).softmax(dim=1)
        inter = 1 - _pearson(y_S, y_T).mean()
        intra = 1 - _pearson(y_S.t(), y_T.t()).mean()
        loss = self.tau**2 * (self.beta * inter + self.gamma * intra)
        return self.loss_weight * loss
