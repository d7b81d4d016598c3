"""Pearson-correlation based feature distillation."""
from typing import List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .level_batch import LevelBatch, per_level_values

__all__ = ['PKDLoss']

Features = Union[torch.Tensor, Sequence[torch.Tensor]]


@MODELS.register_module()
class PKDLoss(nn.Module):
    """PKD: feature distillation with the Pearson correlation coefficient.

    *PKD: General Distillation Framework for Object Detectors via Pearson
    Correlation Coefficient* (Cao et al., NeurIPS 2022). Each channel of the
    student and teacher features is standardised over (N, H, W) (zero mean,
    unit unbiased std, ``eps=1e-6`` added to the std as in the official
    code); the loss is ``MSE(norm(S), norm(T)) / 2``, which equals
    ``1 - r`` with ``r`` the Pearson correlation. Tuples of levels are
    summed.

    Student and teacher maps must have the same shape. MMRazor's
    ``PKDLoss`` (and earlier versions of this one, ``resize_stu=True``)
    resize the student to the teacher bilinearly inside the loss; here
    alignment is the connectors' job:
    ``connector=dict(type='ResizeConnector')`` in the distillation term
    gives the same values.

    A distillation term over several levels calls :meth:`forward_levels`
    once instead (the levels joined, see
    :mod:`~visionkd.models.losses.level_batch`): the same values.

    Args:
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

    #: :meth:`forward_levels` gives the per-level values in one call.
    batches_levels = True

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    @staticmethod
    def norm(feat: torch.Tensor) -> torch.Tensor:
        """Standardise each channel over (N, H, W); shape kept (N, C, H, W)."""
        N, C, H, W = feat.shape
        flat = feat.transpose(0, 1).reshape(C, -1)
        mean = flat.mean(dim=-1, keepdim=True)
        std = flat.std(dim=-1, keepdim=True)
        flat = (flat - mean) / (std + 1e-6)
        return flat.reshape(C, N, H, W).transpose(0, 1)

    @staticmethod
    def _check_shapes(pred_S: torch.Tensor, pred_T: torch.Tensor) -> None:
        if pred_S.shape != pred_T.shape:
            raise ValueError(
                f'PKDLoss needs student and teacher maps of the same '
                f'shape, got {tuple(pred_S.shape)} and '
                f'{tuple(pred_T.shape)}; align them with connectors '
                f"(dict(type='ConvConnector') for channels, "
                f"dict(type='ResizeConnector') for H, W)")

    def forward(self, preds_S: Features, preds_T: Features) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature (N, C, H, W) or a tuple of levels.
            preds_T: Teacher feature(s) of the same shapes.

        Returns:
            Scalar loss summed over levels.
        """
        if isinstance(preds_S, torch.Tensor):
            preds_S, preds_T = (preds_S, ), (preds_T, )
        if len(preds_S) != len(preds_T):
            raise ValueError(f'PKDLoss got {len(preds_S)} student levels and '
                             f'{len(preds_T)} teacher levels')
        loss = preds_S[0].new_zeros(())
        for pred_S, pred_T in zip(preds_S, preds_T):
            self._check_shapes(pred_S, pred_T)
            loss = loss + F.mse_loss(
                self.norm(pred_S), self.norm(pred_T)) / 2
        return self.loss_weight * loss

    def forward_levels(self, preds_S: List[torch.Tensor],
                       preds_T: List[torch.Tensor]) -> torch.Tensor:
        """The loss of each level (not summed), in one call.

        Args:
            preds_S: Student features, level ``l`` of shape
                (N, C, H_l, W_l).
            preds_T: Teacher features of the same shapes.

        Returns:
            ``(L,)`` tensor: ``self(preds_S[l], preds_T[l])`` for each
            level (up to float rounding).
        """
        for pred_S, pred_T in zip(preds_S, preds_T):
            self._check_shapes(pred_S, pred_T)
        batch = LevelBatch.of(preds_S, preds_T)
        if batch is None:
            return per_level_values(self, preds_S, preds_T)
        N, C = preds_S[0].shape[:2]
        count = batch.size * N  # elements per channel of a level
        s = self._norm_levels(batch, batch.join(preds_S), count)
        t = self._norm_levels(batch, batch.join(preds_T), count)
        sq = batch.sum((s - t).pow(2).sum((0, 1)))
        return self.loss_weight * (sq / (count * (2 * C)))

    @staticmethod
    def _norm_levels(batch: LevelBatch, x: torch.Tensor,
                     count: torch.Tensor) -> torch.Tensor:
        """:meth:`norm` of every level of joined (N, C, S) features: each
        channel standardised over the level's (N, H_l, W_l)."""
        x = x - batch.spread(batch.sum(x.sum(0)) / count)
        std = (batch.sum(x.pow(2).sum(0)) / (count - 1)).sqrt()
        return x / (batch.spread(std) + 1e-6)
