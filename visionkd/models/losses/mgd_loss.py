"""Masked Generative Distillation (MGD)."""
import torch
import torch.nn as nn

from visionkd.registry import MODELS

__all__ = ['MGDLoss']


@MODELS.register_module()
class MGDLoss(nn.Module):
    """MGD: regenerate the teacher feature from a masked student feature.

    *Masked Generative Distillation* (Yang et al., ECCV 2022), following the
    official detection ``FeatureLoss`` of yzd-v/MGD
    (``det/mmdet/distillation/losses/mgd.py``). For one level, with ``S``
    (after the optional 1x1 ``align`` conv) and ``T`` of shape (N, C, H, W):

    * a random spatial mask ``M`` (N, 1, H, W) keeps a location where
      ``u <= 1 - lambda_mgd`` with ``u ~ U[0, 1)`` (official:
      ``torch.where(mat > 1 - lambda_mgd, 0, 1)``), so a fraction
      ``lambda_mgd`` of the locations is dropped, the same for all channels;
    * a generator ``conv3x3(C, C) - ReLU - conv3x3(C, C)`` (PyTorch default
      init, as official) regenerates the teacher feature;
    * ``loss = loss_weight * alpha_mgd * sum((G(S * M) - T)^2) / N``.

    The mask is drawn with ``torch.rand`` on the feature's device, so it is
    reproducible under ``torch.manual_seed`` (the official code draws it on
    the CPU and copies it over; same distribution, different samples on
    GPU). Because the generator sits between student and teacher, the loss
    is not zero for identical inputs; it is zero only if the generator
    reproduces ``T`` from the masked input.

    The optional 1x1 ``align`` conv stays inside the loss (rather than a
    connector) because it is part of the method (the official
    ``FeatureLoss`` owns it) and checkpoints hold it under this loss. The
    loss computes in the dtype of its inputs; like any module with
    parameters it must be converted with them (``loss.double()``).

    Args:
        student_channels: Channels of the student feature (filled in by the
            distiller).
        teacher_channels: Channels of the teacher feature (filled in by the
            distiller); the generator works on these. A 1x1 ``align`` conv
            maps the student to them if they differ.
        alpha_mgd: Weight of the generation loss. Defaults to 0.00002.
        lambda_mgd: Fraction of masked locations. Defaults to 0.65.
        loss_weight: Extra factor on the total (not in the official code).
            Defaults to 1.0.
    """

    #: A 1x1 conv aligns student channels to the teacher's.
    allow_channel_mismatch = True

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 alpha_mgd: float = 0.00002,
                 lambda_mgd: float = 0.65,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= lambda_mgd <= 1.0:
            raise ValueError(f'lambda_mgd must be in [0, 1], got {lambda_mgd}')
        self.alpha_mgd = float(alpha_mgd)
        self.lambda_mgd = float(lambda_mgd)
        self.loss_weight = float(loss_weight)
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=1)
        else:
            self.align = None
        c = teacher_channels
        self.generation = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, kernel_size=3, padding=1))

    def random_mask(self, feat: torch.Tensor) -> torch.Tensor:
        """Keep-mask (N, 1, H, W) in ``feat``'s dtype, 1 = kept location.

        Drawn in float32 whatever the dtype, so that a seed gives the same
        mask in every precision.
        """
        N, _, H, W = feat.shape
        mat = torch.rand((N, 1, H, W), device=feat.device)
        return (mat <= 1 - self.lambda_mgd).to(feat.dtype)

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C_s, H, W).
            preds_T: Teacher feature, shape (N, C_t, H, W).

        Returns:
            Scalar loss.
        """
        if preds_S.shape[-2:] != preds_T.shape[-2:]:
            raise ValueError(f'MGDLoss needs maps of equal size, got student'
                             f' {tuple(preds_S.shape)} and teacher '
                             f'{tuple(preds_T.shape)}')
        if self.align is not None:
            preds_S = self.align(preds_S)
        N = preds_T.shape[0]
        new_fea = self.generation(preds_S * self.random_mask(preds_S))
        loss = (new_fea - preds_T).pow(2).sum() / N
        return self.loss_weight * self.alpha_mgd * loss
