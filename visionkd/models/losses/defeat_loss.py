"""Decoupled-feature distillation (DeFeat) for detectors."""
import math
from typing import List, Sequence

import torch
import torch.nn as nn

from visionkd.registry import MODELS

from .det_gt_utils import (
    batch_input_hw,
    check_level_inputs,
    gt_bboxes_of,
    infer_stride,
)

__all__ = ['DeFeatLoss']


@MODELS.register_module()
class DeFeatLoss(nn.Module):
    """DeFeat: feature imitation decoupled into object and background parts.

    *Distilling Object Detectors via Decoupled Features* (Guo et al., CVPR
    2021), following the neck distillation of the official code
    ggjy/DeFeat.pytorch (``kd_cfg.type='neck-adapt,neck-decouple,
    mask-neck-gt,pixel-wise'``: ``AnchorHead.get_gt_mask`` for the mask,
    ``batch_processor_kd`` in ``mmdet/apis/train.py`` for the loss,
    ``TwoStageDetectorKD`` for the adapter). For one FPN level
    (N, C, H, W):

    * GT-to-level assignment (the FPN RoI rule of the official code): a box
      of ``scale = sqrt((w + 1) * (h + 1))`` pixels goes to level
      ``clamp(floor(log2(scale / finest_scale + 1e-6)), 0, L - 1)`` of
      ``strides`` (``L = len(strides)``); this level is the entry of
      ``strides`` nearest to the stride of the map
      (``2 ** round(log2(H_in / H))``). Only the boxes of this level are in
      its mask; ``assign_levels=False`` puts every box on every level;
    * binary GT mask: box ``(x1, y1, x2, y2)`` mapped onto the map by
      ``W / W_in`` and ``H / H_in`` and truncated to ints covers rows
      ``[max(y1, 0), min(y2, H))`` and columns ``[max(x1, 0), min(x2, W))``
      (the cell containing ``x2``/``y2`` is excluded); a box with an empty
      row or column range marks the single cell ``(y1, x1)``;
    * adapter ``conv3x3(C_s, C_t)`` without activation on the student
      (weights truncated normal with std 1e-4, PyTorch default bias);
    * ``L_fg = sum(M * (adapt(S) - T)^2) / max(1, 2 * C * sum(M))`` and
      ``L_bg = sum((1 - M) * (adapt(S) - T)^2) / max(1, 2 * C *
      sum(1 - M))``, sums over the whole batch;
    * ``loss = loss_weight * (loss_weight_fg * L_fg + loss_weight_bg *
      L_bg) / L``. The official code averages the levels' losses before
      weighting; dividing each level by ``L`` makes the sum that the
      distiller takes over the levels equal to that average.

    Defaults are those of the official Faster R-CNN config
    (``voc_stu_faster_rcnn_r50_decouple_neck.py``: ``hint_neck_w=3``,
    ``hint_neck_back_w=12``, RPN strides 4-64).

    Differences from the official code:

    * Boxes are mapped by the feature map's own size relative to the padded
      ``batch_input_shape`` instead of dividing by the nominal stride; they
      agree whenever the input is divisible by the stride.
    * A degenerate box at the right/bottom border marks the last cell (the
      official code indexes out of range there).
    * ``loss_weight`` (default 1) is an extra overall factor and
      ``adapter=False`` (equal channels only) an extension.

    The adapter stays inside the loss (rather than a connector) because it
    is part of the method, with its own initialisation, and checkpoints
    hold it under this loss. The loss computes in the dtype of its inputs;
    like any module with parameters it is converted with them
    (``loss.double()``).

    Args:
        student_channels: Channels of the student feature (filled in by the
            distiller).
        teacher_channels: Channels of the teacher feature (filled in by the
            distiller).
        loss_weight_fg: Weight of the object (foreground) part.
            Defaults to 3.0.
        loss_weight_bg: Weight of the background part. Defaults to 12.0.
        strides: Strides of all distilled levels, used for the GT-to-level
            assignment and the level average. Defaults to
            (4, 8, 16, 32, 64).
        finest_scale: Box scale that maps to level 0 in the assignment.
            Defaults to 56.
        assign_levels: Put each box only on its assigned level.
            Defaults to True.
        adapter: Use the conv adapter on the student. Defaults to True.
        loss_weight: Extra factor on the total. Defaults to 1.0.
    """

    #: Ground truth this loss reads from every data sample.
    gt_field = 'gt_instances'

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 loss_weight_fg: float = 3.0,
                 loss_weight_bg: float = 12.0,
                 strides: Sequence[int] = (4, 8, 16, 32, 64),
                 finest_scale: float = 56,
                 assign_levels: bool = True,
                 adapter: bool = True,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if not strides:
            raise ValueError('DeFeatLoss needs at least one stride')
        self.loss_weight_fg = float(loss_weight_fg)
        self.loss_weight_bg = float(loss_weight_bg)
        self.strides = [int(s) for s in strides]
        self.finest_scale = float(finest_scale)
        self.assign_levels = bool(assign_levels)
        self.loss_weight = float(loss_weight)
        if adapter:
            self.adapter = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=3, padding=1)
            with torch.no_grad():
                self.adapter.weight.normal_().fmod_(2).mul_(0.0001)
        elif student_channels != teacher_channels:
            raise ValueError(
                f'DeFeatLoss with adapter=False needs equal channels, got '
                f'student {student_channels} and teacher {teacher_channels}')
        else:
            self.adapter = None
        #: The adapter maps student channels to the teacher's.
        self.allow_channel_mismatch = bool(adapter)

    def level_of_map(self, input_hw, H: int, W: int) -> int:
        """Index in ``strides`` of an H x W map of a ``input_hw`` input."""
        stride = infer_stride(input_hw, (H, W))
        dist = [abs(math.log2(stride) - math.log2(s)) for s in self.strides]
        level = min(range(len(dist)), key=dist.__getitem__)
        if dist[level] > 0.5:
            raise ValueError(
                f'DeFeatLoss: a {H}x{W} map of a {input_hw} input has stride '
                f'{stride}, not in strides={self.strides}')
        return level

    def box_levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """FPN level index of each (n, 4) pixel box, as official."""
        scale = torch.sqrt((boxes[:, 2] - boxes[:, 0] + 1) *
                           (boxes[:, 3] - boxes[:, 1] + 1))
        lvls = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return lvls.clamp(min=0, max=len(self.strides) - 1).long()

    def get_mask(self, data_samples: List, N: int, H: int, W: int,
                 device: torch.device,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Binary GT mask of this level, shape (N, 1, H, W), ``dtype``.

        Args:
            data_samples: One ``DetDataSample``-like object per image.
            N, H, W: Batch size and feature map size.
            device: Device of the mask.
            dtype: Dtype of the mask (that of the features).
        """
        mask = torch.zeros(N, H, W, dtype=torch.bool, device=device)
        ys = torch.arange(H, device=device)
        xs = torch.arange(W, device=device)
        for i, sample in enumerate(data_samples):
            boxes = gt_bboxes_of(sample, device)
            h_in, w_in = batch_input_hw(sample)
            if boxes.numel() and self.assign_levels:
                level = self.level_of_map((h_in, w_in), H, W)
                boxes = boxes[self.box_levels(boxes) == level]
            if boxes.numel() == 0:
                continue
            lx = torch.trunc(boxes[:, 0] * (W / w_in)).clamp(min=0)
            rx = torch.trunc(boxes[:, 2] * (W / w_in)).clamp(max=W)
            ly = torch.trunc(boxes[:, 1] * (H / h_in)).clamp(min=0)
            ry = torch.trunc(boxes[:, 3] * (H / h_in)).clamp(max=H)
            single = (lx == rx) | (ly == ry)
            lx = torch.where(single, lx.clamp(max=W - 1), lx)
            ly = torch.where(single, ly.clamp(max=H - 1), ly)
            rx = torch.where(single, lx + 1, rx)
            ry = torch.where(single, ly + 1, ry)
            in_y = (ys >= ly[:, None]) & (ys < ry[:, None])  # (n, H)
            in_x = (xs >= lx[:, None]) & (xs < rx[:, None])  # (n, W)
            mask[i] = (in_y[:, :, None] & in_x[:, None, :]).any(dim=0)
        return mask[:, None].to(dtype)

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
        check_level_inputs(preds_S, preds_T, data_samples, 'DeFeatLoss')
        N, C, H, W = preds_T.shape
        if self.adapter is not None:
            preds_S = self.adapter(preds_S)
        diff = (preds_S - preds_T).pow(2)
        mask = self.get_mask(data_samples, N, H, W, diff.device, diff.dtype)
        n_fg = mask.sum()
        n_bg = N * H * W - n_fg
        fg = (diff * mask).sum() / (2 * C * n_fg).clamp(min=1.0)
        bg = (diff * (1 - mask)).sum() / (2 * C * n_bg).clamp(min=1.0)
        loss = self.loss_weight_fg * fg + self.loss_weight_bg * bg
        return self.loss_weight * loss / len(self.strides)
