"""Augmentation-free Dense Contrastive Distillation (Af-DCD)."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .seg_utils import check_same_size

__all__ = ['AfDCDLoss']


class _EnhancedProjector(nn.Module):
    """Two stacked conv3x3-ReLU blocks, each read out by its own conv3x3;
    the output is the mean of the two read-outs (Af-DCD's enhanced
    projector)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.block_1 = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.block_2 = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.adaptor_1 = nn.Conv2d(c, c, kernel_size=3, padding=1)
        self.adaptor_2 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_1 = self.block_1(x)
        x_2 = self.block_2(x_1)
        return (self.adaptor_1(x_1) + self.adaptor_2(x_2)) / 2.0


@MODELS.register_module()
class AfDCDLoss(nn.Module):
    """Af-DCD: masked feature generation plus omni-contrastive distillation.

    *Augmentation-free Dense Contrastive Knowledge Distillation for
    Efficient Semantic Segmentation* (Fan et al., NeurIPS 2023), following
    the official ``OmniContrastiveFeatureLoss`` of OSVAI/Af-DCD
    (``losses/ocmgd.py``) and its training script (``train_ocmgd.py``).
    For the student map ``S`` (after the 1x1 ``align`` conv when the
    channels differ) and the teacher map ``T``, both (N, C, H, W):

    * masking: a keep-mask ``M`` (N, 1, H, W) drops a fraction
      ``mask_ratio`` of the locations at random (``u <= 1 - mask_ratio``
      kept, ``u ~ U[0, 1)``; official ``torch.where(mat > 1 - ratio, 0,
      1)``), or, with ``rand_mask=False``, the centre third
      ``[H//3:2H//3, W//3:2W//3]``;
    * a projector ``P`` (conv3x3-ReLU-conv3x3 on C channels, or the
      enhanced two-branch projector) regenerates ``T``: ``P = P(S * M)``;
    * feature term: ``L_fd = sum((P - T)^2) / N``;
    * omni-contrastive term: ``P`` and ``T`` are max-pooled by
      ``pool_size`` (optionally cropped first to ``ctr_crop``, the
      official CamVid branch, which crops to 44x44 and does not pool) to
      (h, w), cut into ``patch_size`` patches, and each patch's channels
      into ``num_groups`` groups of ``C / num_groups``: a patch gives
      ``K = ph * pw * num_groups`` tokens. In every patch, the student
      token (location l, group g) has as positive the teacher token
      (l, g) and as negatives the teacher tokens of every other group at
      every location (``K - ph * pw`` of them); similarity is the negative
      L1 distance, temperature ``tau``, and
      ``L_ctr = sum_tokens CE(positive first) / (h * w) / N``;
    * ``loss = loss_weight * (lambda_fd * L_fd + lambda_ctr * L_ctr)``.

    The negatives are gathered with a masked ``logsumexp`` over each
    similarity row instead of the official boolean indexing: the same
    logits, summed in another order.

    Differences from the official code, on purpose: ``align`` is skipped
    when the channels are equal (the official ``forward`` fails there:
    its ``align`` exists only for unequal channels); pooled maps whose
    size is not a multiple of ``patch_size`` are cut at the bottom/right
    to the largest multiple (the official reshape fails); the random mask
    is drawn on the feature's device (official: CPU, then copied). The
    official step clips the gradient norm of the loss's parameters to 15;
    use the optimizer wrapper's ``clip_grad`` for that.

    Args:
        student_channels: Channels of the student feature (filled in by the
            distiller).
        teacher_channels: Channels of the teacher feature (filled in by the
            distiller); the projector works on these.
        tau: Temperature of the contrastive logits (official ``tau_ocd``).
            Defaults to 0.07.
        num_groups: Channel groups per token (official ``M_ocd``); the
            teacher channels must be divisible by it. Defaults to 16.
        pool_size: Max-pooling window and stride before the contrastive
            term; 0 disables pooling. Defaults to 4.
        patch_size: (ph, pw) patch of the contrastive term. Defaults to
            (4, 4).
        rand_mask: Random mask (True) or the fixed centre mask. Defaults
            to True.
        mask_ratio: Fraction of masked locations (official ``zeta_fd``,
            ``--mask-ratio``). Defaults to 0.75.
        enhance_projector: Use the enhanced projector. Defaults to False.
        ctr_crop: Crop the maps to their top-left ``ctr_crop`` x
            ``ctr_crop`` before the contrastive term (the official CamVid
            setting: 44 with ``pool_size=0``). Defaults to None.
        lambda_fd: Weight of ``L_fd`` (official ``--lambda-fd``; the
            script's default 4e-5). Defaults to 4e-5.
        lambda_ctr: Weight of ``L_ctr`` (official ``--lambda-ctr``; the
            script's default 1e-3). Defaults to 1e-3.
        loss_weight: Extra factor on the total (not in the official
            code). Defaults to 1.0.
    """

    #: A 1x1 conv aligns student channels to the teacher's.
    allow_channel_mismatch = True

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 tau: float = 0.07,
                 num_groups: int = 16,
                 pool_size: int = 4,
                 patch_size: Tuple[int, int] = (4, 4),
                 rand_mask: bool = True,
                 mask_ratio: float = 0.75,
                 enhance_projector: bool = False,
                 ctr_crop: Optional[int] = None,
                 lambda_fd: float = 4e-5,
                 lambda_ctr: float = 1e-3,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        _check_args(teacher_channels, tau, num_groups, pool_size,
                    patch_size, mask_ratio, ctr_crop)
        self.tau = float(tau)
        self.num_groups = int(num_groups)
        self.pool_size = int(pool_size)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.rand_mask = bool(rand_mask)
        self.mask_ratio = float(mask_ratio)
        self.ctr_crop = None if ctr_crop is None else int(ctr_crop)
        self.lambda_fd = float(lambda_fd)
        self.lambda_ctr = float(lambda_ctr)
        self.loss_weight = float(loss_weight)
        self.align = (nn.Conv2d(student_channels, teacher_channels, 1)
                      if student_channels != teacher_channels else None)
        c = teacher_channels
        if enhance_projector:
            self.projector = _EnhancedProjector(c)
        else:
            self.projector = nn.Sequential(
                nn.Conv2d(c, c, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, kernel_size=3, padding=1))

    def keep_mask(self, feat: torch.Tensor) -> torch.Tensor:
        """Keep-mask (N, 1, H, W) in ``feat``'s dtype, 1 = kept location.

        The random mask is drawn in float32 whatever the dtype, so a seed
        gives the same mask in every precision.
        """
        N, _, H, W = feat.shape
        if self.rand_mask:
            u = torch.rand((N, 1, H, W), device=feat.device)
            return (u <= 1 - self.mask_ratio).to(feat.dtype)
        mask = feat.new_ones((N, 1, H, W))
        mask[:, :, H // 3:2 * H // 3, W // 3:2 * W // 3] = 0
        return mask

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N * patches, ph * pw * G, C / G) tokens, token
        index ``location * G + group`` (the official order)."""
        N, C, h, w = x.shape
        ph, pw = self.patch_size
        G = self.num_groups
        x = x.reshape(N, G, C // G, h // ph, ph, w // pw, pw)
        # -> (N, h/ph, w/pw, ph, pw, G, C/G)
        x = x.permute(0, 3, 5, 4, 6, 1, 2)
        return x.reshape(-1, ph * pw * G, C // G)

    def contrastive(self, preds: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
        """``L_ctr`` summed over the batch, / (h * w) (not yet / N).

        Args:
            preds: Projected student map, (N, C, H, W).
            targets: Teacher map, (N, C, H, W).
        """
        if self.ctr_crop is not None:
            preds = preds[:, :, :self.ctr_crop, :self.ctr_crop]
            targets = targets[:, :, :self.ctr_crop, :self.ctr_crop]
        if self.pool_size:
            preds = F.max_pool2d(preds, self.pool_size)
            targets = F.max_pool2d(targets, self.pool_size)
        ph, pw = self.patch_size
        h = preds.shape[2] // ph * ph
        w = preds.shape[3] // pw * pw
        if h == 0 or w == 0:
            raise ValueError(
                f'AfDCDLoss: the pooled map {tuple(preds.shape[2:])} is '
                f'smaller than patch_size {self.patch_size}; lower '
                'pool_size or patch_size')
        preds, targets = preds[:, :, :h, :w], targets[:, :, :h, :w]
        tok_s, tok_t = self._tokens(preds), self._tokens(targets)
        sim = -torch.cdist(tok_s, tok_t, p=1) / self.tau  # (B', K, K)
        K = sim.shape[-1]
        group = torch.arange(K, device=sim.device) % self.num_groups
        eye = torch.eye(K, dtype=torch.bool, device=sim.device)
        allowed = (group[:, None] != group[None, :]) | eye
        lse = sim.masked_fill(~allowed, float('-inf')).logsumexp(dim=-1)
        positives = sim.diagonal(dim1=-2, dim2=-1)
        return (lse - positives).sum() / (h * w)

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C_s, H, W).
            preds_T: Teacher feature, shape (N, C_t, H, W).

        Returns:
            Scalar loss.
        """
        check_same_size(preds_S, preds_T, 'AfDCDLoss')
        if self.align is not None:
            preds_S = self.align(preds_S)
        N = preds_T.shape[0]
        new_fea = self.projector(preds_S * self.keep_mask(preds_S))
        loss_fd = (new_fea - preds_T).pow(2).sum() / N
        loss_ctr = self.contrastive(new_fea, preds_T) / N
        return self.loss_weight * (self.lambda_fd * loss_fd +
                                   self.lambda_ctr * loss_ctr)


def _check_args(teacher_channels: int, tau: float, num_groups: int,
                pool_size: int, patch_size: Tuple[int, int],
                mask_ratio: float, ctr_crop: Optional[int]) -> None:
    """Raise a ValueError naming the first invalid AfDCDLoss argument."""
    if tau <= 0:
        raise ValueError(f'AfDCDLoss: tau must be > 0, got {tau}')
    if num_groups < 1 or teacher_channels % num_groups:
        raise ValueError(
            f'AfDCDLoss: num_groups={num_groups} must divide the teacher '
            f'channels ({teacher_channels}); choose a divisor of them')
    if pool_size < 0:
        raise ValueError(f'AfDCDLoss: pool_size must be >= 0 (0 = no '
                         f'pooling), got {pool_size}')
    if len(patch_size) != 2 or min(patch_size) < 1:
        raise ValueError(f'AfDCDLoss: patch_size must be two positive '
                         f'ints, got {patch_size}')
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f'AfDCDLoss: mask_ratio must be in [0, 1], got '
                         f'{mask_ratio}')
    if ctr_crop is not None and ctr_crop < 1:
        raise ValueError(f'AfDCDLoss: ctr_crop must be a positive int or '
                         f'None, got {ctr_crop}')
