"""Pearson-correlation based feature distillation."""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

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

    Args:
        loss_weight: Weight of the loss. Defaults to 1.0.
        resize_stu: If the spatial sizes differ, resize the student to the
            teacher (True) or the teacher to the student (False), bilinear.
            Defaults to True.
    """

    #: The distiller may feed maps of different spatial size.
    allow_spatial_mismatch = True

    def __init__(self, loss_weight: float = 1.0,
                 resize_stu: bool = True) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.resize_stu = bool(resize_stu)

    @staticmethod
    def norm(feat: torch.Tensor) -> torch.Tensor:
        """Standardise each channel over (N, H, W); shape kept (N, C, H, W)."""
        N, C, H, W = feat.shape
        flat = feat.transpose(0, 1).reshape(C, -1)
        mean = flat.mean(dim=-1, keepdim=True)
        std = flat.std(dim=-1, keepdim=True)
        flat = (flat - mean) / (std + 1e-6)
        return flat.reshape(C, N, H, W).transpose(0, 1)

    def forward(self, preds_S: Features, preds_T: Features) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature (N, C, H, W) or a tuple of levels.
            preds_T: Teacher feature(s) with the same channels; detached.

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
            pred_T = pred_T.detach()
            if pred_S.shape[2:] != pred_T.shape[2:]:
                if self.resize_stu:
                    pred_S = F.interpolate(
                        pred_S, pred_T.shape[2:], mode='bilinear')
                else:
                    pred_T = F.interpolate(
                        pred_T, pred_S.shape[2:], mode='bilinear')
            loss = loss + F.mse_loss(
                self.norm(pred_S.float()), self.norm(pred_T.float())) / 2
        return self.loss_weight * loss
