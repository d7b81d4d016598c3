"""Focal and Global Knowledge Distillation (FGD) for detectors."""
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .det_gt_utils import batch_input_hw, check_level_inputs, gt_bboxes_of

__all__ = ['FGDLoss']


@MODELS.register_module()
class FGDLoss(nn.Module):
    """FGD: focal (fg/bg, attention) and global (GcBlock) distillation.

    *Focal and Global Knowledge Distillation for Detectors* (Yang et al.,
    CVPR 2022), re-implemented after the official ``FeatureLoss`` of
    yzd-v/FGD (``mmdet/distillation/losses/fgd.py``, commit ``f1da292``,
    identical to mmrazor's ``FGDLoss``). For one FPN level, with ``S``
    (after the optional 1x1 ``align`` conv) and ``T`` of shape (N, C, H, W):

    * attention of a feature ``X``, from ``|X|``:
      spatial ``A_S = H * W * softmax_hw(mean_c|X| / temp)`` (N, H, W) and
      channel ``A_C = C * softmax_c(mean_hw|X| / temp)`` (N, C);
    * masks: every GT box is mapped onto the map by ``W / W_in`` and
      ``H / H_in``, then ``x1 -> floor``, ``x2 -> ceil`` (same for y); cells
      ``[floor(y1), ceil(y2)] x [floor(x1), ceil(x2)]`` (inclusive) get
      ``1 / ((ceil(y2) + 1 - floor(y1)) * (ceil(x2) + 1 - floor(x1)))`` and
      ``M_fg`` is the max over boxes (the area uses the unclipped indices,
      as in the official code). ``M_bg = 1`` where ``M_fg == 0``, divided by
      its sum per image (left as is if the image is all foreground);
    * ``L_fg = sum(M_fg * A_S^T * A_C^T * (S - T)^2) / N`` and ``L_bg`` the
      same with ``M_bg`` (teacher attentions only);
    * ``L_at = (sum|A_C^S - A_C^T| + sum|A_S^S - A_S^T|) / N``;
    * ``L_global = sum((S + G_s(S) - T - G_t(T))^2) / N``, with ``G`` a
      GcBlock (softmax context pooling by ``conv_mask``, then
      ``conv1x1(C, C/2) - LayerNorm - ReLU - conv1x1(C/2, C)``); student and
      teacher have their own GcBlock, both trained by this loss;
    * ``loss = loss_weight * (alpha * L_fg + beta * L_bg + gamma * L_at +
      lambda * L_global)``.

    Initialisation as in the official code: ``conv_mask`` Kaiming-normal
    (``fan_in``, ReLU gain) with zero bias, the last conv of each
    ``channel_add_conv`` zero, everything else PyTorch's default. With the
    zero last conv the GcBlocks start as the identity.

    The 1x1 ``align`` conv stays inside the loss (rather than a connector)
    because it is part of the method: the official ``FeatureLoss`` owns it,
    and checkpoints hold it under this loss. The loss computes in the dtype
    of its inputs; like any module with parameters it must be converted
    with them (``loss.double()``, or the whole distiller).

    Differences from the official code:

    * Boxes are mapped with the padded ``batch_input_shape``, the size the
      feature map is computed from; the official code divides by the
      unpadded ``img_shape``, which stretches boxes when the batch is
      padded. Both agree when there is no padding.
    * Negative ``floor(x1)`` / ``floor(y1)`` (boxes leaving the image) are
      clipped to 0; the official code slices with the negative index,
      which usually gives an empty slice and drops the box.
    * ``loss_weight`` (default 1) is an extra overall factor.
    * ``(sqrt(w) * S - sqrt(w) * T)^2`` is computed as ``w * (S - T)^2``
      (same value and gradient; the weights come from the teacher only).
    * The mask is indexed ``[y, x]`` as in official commit ``f1da292`` and
      mmrazor; an earlier official version (``04900ad``) sliced it
      ``[x, y]``.

    Args:
        student_channels: Channels of the student feature (filled in by the
            distiller).
        teacher_channels: Channels of the teacher feature (filled in by the
            distiller). A 1x1 ``align`` conv maps the student to these if
            they differ.
        temp: Temperature of the attentions. Defaults to 0.5.
        alpha_fgd: Weight of the foreground loss. Defaults to 0.001.
        beta_fgd: Weight of the background loss. Defaults to 0.0005.
        gamma_fgd: Weight of the attention (mask) loss. Defaults to 0.001.
        lambda_fgd: Weight of the global relation loss. Defaults to 5e-6.
        loss_weight: Extra factor on the total. Defaults to 1.0.
    """

    #: A 1x1 conv aligns student channels to the teacher's.
    allow_channel_mismatch = True

    #: Ground truth this loss reads from every data sample.
    gt_field = 'gt_instances'

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 temp: float = 0.5,
                 alpha_fgd: float = 0.001,
                 beta_fgd: float = 0.0005,
                 gamma_fgd: float = 0.001,
                 lambda_fgd: float = 0.000005,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if teacher_channels < 2:
            raise ValueError('FGDLoss needs teacher_channels >= 2 (GcBlock '
                             f'bottleneck C // 2), got {teacher_channels}')
        self.temp = float(temp)
        self.alpha_fgd = float(alpha_fgd)
        self.beta_fgd = float(beta_fgd)
        self.gamma_fgd = float(gamma_fgd)
        self.lambda_fgd = float(lambda_fgd)
        self.loss_weight = float(loss_weight)
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=1)
        else:
            self.align = None
        c = teacher_channels
        self.conv_mask_s = nn.Conv2d(c, 1, kernel_size=1)
        self.conv_mask_t = nn.Conv2d(c, 1, kernel_size=1)
        self.channel_add_conv_s = self._channel_add(c)
        self.channel_add_conv_t = self._channel_add(c)
        self.reset_parameters()

    @staticmethod
    def _channel_add(c: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c, c // 2, kernel_size=1),
            nn.LayerNorm([c // 2, 1, 1]), nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, kernel_size=1))

    def reset_parameters(self) -> None:
        """Official init: Kaiming ``conv_mask``, zero last GcBlock conv."""
        for conv in (self.conv_mask_s, self.conv_mask_t):
            nn.init.kaiming_normal_(
                conv.weight, a=0, mode='fan_in', nonlinearity='relu')
            nn.init.zeros_(conv.bias)
        for seq in (self.channel_add_conv_s, self.channel_add_conv_t):
            nn.init.zeros_(seq[-1].weight)
            nn.init.zeros_(seq[-1].bias)

    # ------------------------------------------------------------------
    def get_attention(self,
                      feat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Spatial (N, H, W) and channel (N, C) attention of ``feat``."""
        N, C, H, W = feat.shape
        value = feat.abs()
        fea_map = value.mean(dim=1).reshape(N, -1)
        s_att = H * W * F.softmax(fea_map / self.temp, dim=1)
        c_att = C * F.softmax(value.mean(dim=(2, 3)) / self.temp, dim=1)
        return s_att.reshape(N, H, W), c_att

    @staticmethod
    def get_masks(data_samples: List, N: int, H: int, W: int,
                  device: torch.device,
                  dtype: torch.dtype = torch.float32
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Foreground (area-scaled) and normalised background masks.

        Args:
            data_samples: One ``DetDataSample``-like object per image.
            N, H, W: Batch size and feature map size.
            device: Device of the masks.
            dtype: Dtype of the masks (that of the features). Box
                coordinates are mapped in float32, the GT's precision.

        Returns:
            ``(mask_fg, mask_bg)``, each of shape (N, H, W).
        """
        mask_fg = torch.zeros(N, H, W, device=device, dtype=dtype)
        ys = torch.arange(H, device=device)
        xs = torch.arange(W, device=device)
        for i, sample in enumerate(data_samples):
            boxes = gt_bboxes_of(sample, device)
            if boxes.numel() == 0:
                continue
            h_in, w_in = batch_input_hw(sample)
            wmin = torch.floor(boxes[:, 0] / w_in * W)
            wmax = torch.ceil(boxes[:, 2] / w_in * W)
            hmin = torch.floor(boxes[:, 1] / h_in * H)
            hmax = torch.ceil(boxes[:, 3] / h_in * H)
            area = (1.0 / (hmax + 1 - hmin).to(dtype) /
                    (wmax + 1 - wmin).to(dtype))
            in_y = (ys >= hmin[:, None]) & (ys <= hmax[:, None])  # (n, H)
            in_x = (xs >= wmin[:, None]) & (xs <= wmax[:, None])  # (n, W)
            inside = in_y[:, :, None] & in_x[:, None, :]  # (n, H, W)
            value = torch.where(inside, area[:, None, None],
                                area.new_zeros(()))
            mask_fg[i] = value.amax(dim=0).clamp(min=0)
        mask_bg = (mask_fg <= 0).to(dtype)
        bg_sum = mask_bg.sum(dim=(1, 2), keepdim=True)
        mask_bg = torch.where(bg_sum > 0, mask_bg / bg_sum.clamp(min=1),
                              mask_bg)
        return mask_fg, mask_bg

    def spatial_pool(self, x: torch.Tensor, conv_mask: nn.Conv2d
                     ) -> torch.Tensor:
        """GcBlock context: softmax-weighted sum over H*W, (N, C, 1, 1).

        The 1x1 ``conv_mask`` (C -> 1) is applied as a matrix product: same
        parameters and value as the convolution, but far cheaper to
        differentiate on CPU than a one-output-channel convolution.
        """
        N, C, H, W = x.shape
        flat = x.reshape(N, C, H * W)
        logits = torch.matmul(conv_mask.weight.reshape(1, C), flat)
        weights = F.softmax(logits + conv_mask.bias.reshape(1, 1, 1), dim=2)
        context = torch.bmm(flat, weights.transpose(1, 2))
        return context.reshape(N, C, 1, 1)

    @staticmethod
    def channel_add(context: torch.Tensor,
                    seq: nn.Sequential) -> torch.Tensor:
        """``channel_add_conv`` on a (N, C, 1, 1) context, as dense layers.

        Equals ``seq(context)``: on a 1x1 map each 1x1 conv is a linear
        layer and ``LayerNorm([C/2, 1, 1])`` a layer norm over C/2.

        Returns:
            (N, C) tensor.
        """
        conv1, norm, _, conv2 = seq
        h = F.linear(context.flatten(1), conv1.weight.flatten(1), conv1.bias)
        h = F.layer_norm(h, (h.shape[1], ), norm.weight.flatten(),
                         norm.bias.flatten(), norm.eps)
        return F.linear(F.relu(h), conv2.weight.flatten(1), conv2.bias)

    def get_rela_loss(self, preds_S: torch.Tensor,
                      preds_T: torch.Tensor) -> torch.Tensor:
        """Global relation loss between the GcBlock outputs (reference form).

        ``sum((S + G_s(S) - T - G_t(T))^2) / N``; :meth:`forward` computes
        the same value without building the (N, C, H, W) GcBlock outputs.
        """
        out_s = preds_S + self.channel_add_conv_s(
            self.spatial_pool(preds_S, self.conv_mask_s))
        out_t = preds_T + self.channel_add_conv_t(
            self.spatial_pool(preds_T, self.conv_mask_t))
        return (out_s - out_t).pow(2).sum() / len(out_s)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                data_samples: List) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C_s, H, W).
            preds_T: Teacher feature, shape (N, C_t, H, W).
            data_samples: One ``DetDataSample`` per image, with
                ``gt_instances.bboxes`` (n, 4) xyxy pixels of the padded
                batch and ``metainfo['batch_input_shape']``.

        Returns:
            Scalar loss.
        """
        check_level_inputs(preds_S, preds_T, data_samples, 'FGDLoss')
        S, T = preds_S, preds_T
        if self.align is not None:
            S = self.align(S)
        N, C, H, W = T.shape

        s_att_t, c_att_t = self.get_attention(T)
        s_att_s, c_att_s = self.get_attention(S)
        mask_fg, mask_bg = self.get_masks(data_samples, N, H, W, S.device,
                                          S.dtype)

        # One (N, C, H, W) difference and its square serve every term.
        diff = S - T
        sq = diff.square()
        # sum over channels of A_C * (S - T)^2 as one batched matmul
        # (N, 1, C) @ (N, C, H*W), times A_S: (N, H, W)
        err = torch.bmm(c_att_t[:, None, :], sq.reshape(N, C, H * W))
        err = err.reshape(N, H, W) * s_att_t
        fg_loss = (err * mask_fg).sum() / N
        bg_loss = (err * mask_bg).sum() / N
        mask_loss = ((c_att_s - c_att_t).abs().sum() +
                     (s_att_s - s_att_t).abs().sum()) / N
        # Global term: the GcBlock adds one vector per image and channel,
        # so with D = S - T and e = G_s(S) - G_t(T) of shape (N, C, 1, 1):
        # sum((D + e)^2) = sum(D^2) + 2 sum_nc e * sum_hw D + H*W * sum(e^2)
        # (= get_rela_loss, without materialising S + G_s(S), T + G_t(T)).
        e = (self.channel_add(self.spatial_pool(S, self.conv_mask_s),
                              self.channel_add_conv_s) -
             self.channel_add(self.spatial_pool(T, self.conv_mask_t),
                              self.channel_add_conv_t))
        rela_loss = (sq.sum() + 2 * (e * diff.sum(dim=(2, 3))).sum() +
                     H * W * e.square().sum()) / N
        loss = (self.alpha_fgd * fg_loss + self.beta_fgd * bg_loss +
                self.gamma_fgd * mask_loss + self.lambda_fgd * rela_loss)
        return self.loss_weight * loss
