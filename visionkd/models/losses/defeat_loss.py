"""Decoupled-feature distillation (DeFeat) for detectors."""
import functools
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .det_gt_utils import (
    batch_input_hw,
    check_level_inputs,
    check_samples,
    infer_stride,
    padded_gt_bboxes,
)

__all__ = ['DeFeatLoss']

#: Signs making (N, M, 2, 2) xyxy boxes [[-x1, -y1], [x2, y2]].
_LO_HI_SIGN = ((-1.0, ), (1.0, ))
_HI_LO_SIGN = ((1.0, ), (-1.0, ))


@functools.lru_cache(maxsize=256)
def _const(value, dtype: torch.dtype, device) -> torch.Tensor:
    """A cached constant tensor (no grad), saving per-call ATen calls."""
    return torch.tensor(value, dtype=dtype, device=device)


def _count_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if at least float32 (float32 counts exactly up to 2^24),
    else float32 (``torch.promote_types`` would be an ATen call)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@functools.lru_cache(maxsize=32)
def _cell_centres(H: int, W: int,
                  device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Signed cell centres of the columns, ``[[x + 0.5], [-(x + 0.5)]]``
    (2, W), and of the rows, ``[y + 0.5, -(y + 0.5)]`` (H, 2), float32
    (cached, no grad)."""
    xs = torch.arange(W, device=device, dtype=torch.float32) + 0.5
    ys = torch.arange(H, device=device, dtype=torch.float32) + 0.5
    return torch.stack([xs, -xs]), torch.stack([ys, -ys], dim=1)


@functools.lru_cache(maxsize=64)
def _first_area_of_level(finest_scale: float, level: int) -> float:
    """Smallest float32 area ``a = (w + 1) * (h + 1)`` that the official
    rule ``floor(log2(sqrt(a) / finest_scale + 1e-6))`` (float32, as in
    :meth:`DeFeatLoss.box_levels`) puts on ``level >= 1`` or above.

    Bisection over the bit patterns of the non-negative float32 numbers,
    which are ordered as the numbers (the rule is monotone in ``a``),
    started around the real-number bound ``(finest_scale * (2^level -
    1e-6))^2``.
    """

    def reaches(bits: int) -> bool:
        a = torch.tensor([bits], dtype=torch.int32).view(torch.float32)
        lvl = torch.floor(torch.log2(torch.sqrt(a) / finest_scale + 1e-6))
        return bool(lvl >= level)

    def bits_of(x: float) -> int:
        return int(torch.tensor([x]).view(torch.int32).item())

    bound = (finest_scale * (2.0**level - 1e-6))**2
    lo, hi = bits_of(bound * (1 - 1e-5)), bits_of(bound * (1 + 1e-5))
    if reaches(lo) or not reaches(hi):
        lo, hi = 0, 0x7F800000  # 0.0 (level <= -19) and +inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return torch.tensor([hi], dtype=torch.int32).view(torch.float32).item()


@functools.lru_cache(maxsize=64)
def _level_area_bounds(finest_scale: float, num_levels: int,
                       level: int) -> Tuple[float, Optional[float]]:
    """Area range ``[lo, hi)`` of the boxes on ``level`` of ``num_levels``
    (the clamp of the rule: level 0 from area 0, the top level without
    ``hi``, None; a negative area, NaN scale, is on no level)."""
    lo = 0.0 if level == 0 else _first_area_of_level(finest_scale, level)
    if level == num_levels - 1:
        return lo, None
    return lo, _first_area_of_level(finest_scale, level + 1)


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
    (``loss.double()``). The mask is built for the whole batch by tensor
    operations, with no loop over images or boxes (the number of ATen calls
    does not grow with either; the boolean (N, M, H, W) box rectangles are
    its largest tensor), and the loss is computed as one weighted sum
    ``sum(w * (adapt(S) - T)^2)``, ``w`` the per location factor of its
    part (see :meth:`_part_weights`).

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
        """FPN level index of each (..., 4) pixel box, as official."""
        scale = torch.sqrt((boxes[..., 2] - boxes[..., 0] + 1) *
                           (boxes[..., 3] - boxes[..., 1] + 1))
        lvls = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return lvls.clamp(min=0, max=len(self.strides) - 1).long()

    def get_mask(self, data_samples: List, N: int, H: int, W: int,
                 device: torch.device,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Binary GT mask of this level, shape (N, 1, H, W), ``dtype``.

        Built for all images and boxes at once from
        :func:`padded_gt_bboxes` (boxes (N, M, 4), padding rows dropped by
        ``valid``): per box a row range and a column range of the map and
        their outer product, united over the boxes of each image.

        Args:
            data_samples: One ``DetDataSample``-like object per image.
            N, H, W: Batch size and feature map size (``N`` must be
                ``len(data_samples)``).
            device: Device of the mask.
            dtype: Dtype of the mask (that of the features); ``torch.bool``
                returns the boolean mask.
        """
        check_samples(data_samples, N, 'DeFeatLoss')
        boxes, valid, _ = padded_gt_bboxes(data_samples, device)
        corners = boxes.view(N, -1, 2, 2)  # [[x1, y1], [x2, y2]]
        # Input sizes are metadata, read per image like the boxes are.
        input_hws = [batch_input_hw(sample) for sample in data_samples]
        keep = valid.view(N, -1, 1, 1)
        if self.assign_levels:
            keep = torch.bitwise_and(
                keep, self._in_level(corners, input_hws, H, W))
        scale = _cell_scale(input_hws, H, W, boxes.device)
        mask = _box_mask(corners, keep, scale, H, W)
        return mask if dtype == torch.bool else mask.to(dtype)

    def _in_level(self, corners: torch.Tensor, input_hws: List, H: int,
                  W: int) -> torch.Tensor:
        """(N, M, 1, 1) bool: the box is assigned to the H x W map's level.

        :meth:`box_levels` is monotone in the area ``(w + 1) * (h + 1)``
        (float32, as there), so a level is an area range ``[lo, hi)``
        whose bounds are found once from the same float32 operations
        (:func:`_level_area_bounds`); ``hi`` is None for the top level.
        """
        f32, dev = torch.float32, corners.device
        bounds = {hw: _level_area_bounds(
            self.finest_scale, len(self.strides),
            self.level_of_map(hw, H, W)) for hw in set(input_hws)}
        wh = (corners * _const(_LO_HI_SIGN, f32, dev)).sum(
            2, keepdim=True)  # (N, M, 1, 2): x2 - x1, y2 - y1
        area = (wh + _const(1.0, f32, dev)).prod(3, keepdim=True)
        if len(set(bounds.values())) > 1:  # input sizes of other levels
            lo, hi = torch.tensor(
                [[b if b is not None else math.nan for b in bounds[hw]]
                 for hw in input_hws], device=dev).view(-1, 2, 1, 1).unbind(1)
            lo, hi = lo[:, None], hi[:, None]
        else:
            lo, hi = bounds[input_hws[0]]
            lo = _const(lo, f32, dev)
            if hi is None:  # the top level: any area from lo up
                return area >= lo
            hi = _const(hi, f32, dev)
        # lo <= area < hi; a NaN hi is never reached.
        return torch.bitwise_xor(area >= lo, area >= hi)

    def _part_weights(self, mask: torch.Tensor, C: int,
                      dtype: torch.dtype) -> torch.Tensor:
        """Per location ``loss_weight * w_part / (L * 2 * C * N_part)``.

        ``w_part`` and ``N_part`` of the object part on ``mask``, of the
        background elsewhere, counted over the batch; in ``dtype`` (that of
        the squared difference: float32 under autocast), counted in at
        least float32. A part without locations gets a quotient that is
        never selected.
        """
        cdt = _count_dtype(dtype)
        dev = mask.device
        n_fg = mask.count_nonzero().to(cdt)
        n_bg = torch.sub(_const(float(mask.numel()), cdt, dev), n_fg)
        k = self.loss_weight / (2 * C * len(self.strides))
        weight = torch.where(
            mask, _const(k * self.loss_weight_fg, cdt, dev) / n_fg,
            _const(k * self.loss_weight_bg, cdt, dev) / n_bg)
        return weight if cdt == dtype else weight.to(dtype)

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
        diff = F.mse_loss(preds_S, preds_T, reduction='none')
        mask = self.get_mask(data_samples, N, H, W, diff.device, torch.bool)
        weight = self._part_weights(mask, C, diff.dtype)
        return (diff * weight).sum()


def _cell_scale(input_hws: List, H: int, W: int,
                device: torch.device) -> torch.Tensor:
    """Signed pixel-to-cell factors ``[[-sx, -sy], [sx, sy]]``, float32,
    (1, 2, 2), or (N, 1, 2, 2) when the input sizes differ;
    ``sx = W / W_in``, ``sy = H / H_in`` (float64 quotients, as official,
    rounded to float32)."""
    rows = {(h, w): ((-W / w, -H / h), (W / w, H / h))
            for h, w in set(input_hws)}
    if len(rows) == 1:
        return _const((rows[input_hws[0]], ), torch.float32, device)
    return torch.tensor([rows[hw] for hw in input_hws],
                        device=device).view(-1, 1, 2, 2)


def _box_mask(corners: torch.Tensor, keep: torch.Tensor, scale: torch.Tensor,
              H: int, W: int) -> torch.Tensor:
    """Boolean (N, 1, H, W) mask of the (N, M, 2, 2) boxes where ``keep``.

    Boxes become signed cell bounds ``[[-lx, -ly], [rx, ry]]``:
    ``trunc(-x1 * sx) = -trunc(x1 * sx)``, so one clamp
    ``max=[[0, 0], [W, H]]`` applies both ``lx >= 0`` and ``rx <= W``; cell
    ``x`` is in ``[lx, rx)`` iff ``x + 0.5 - lx`` and ``rx - x - 0.5`` are
    both positive (exact on these integers).
    """
    N, M = corners.shape[:2]
    f32, dev = torch.float32, corners.device
    zero = _const(0.0, f32, dev)
    bounds = (corners * scale).trunc().clamp(
        max=_const(((0.0, 0.0), (float(W), float(H))), f32, dev))
    # An empty row or column range marks the cell (y1, x1), clamped to the
    # map: bounds [[-l, -l'], [l + 1, l' + 1]].
    single = (bounds.sum(2, keepdim=True) == zero).any(3, keepdim=True)
    low = torch.maximum(bounds[:, :, :1], _const((1.0 - W, 1.0 - H), f32,
                                                 dev))
    cell = torch.addcmul(_const(((0.0, 0.0), (1.0, 1.0)), f32, dev), low,
                         _const(_HI_LO_SIGN, f32, dev))
    bounds = torch.where(single, cell, bounds)
    grid_x, grid_y = _cell_centres(H, W, dev)
    in_x = (bounds[..., :1] + grid_x).amin(2, keepdim=True) > zero
    in_y = (bounds[..., 1].view(N, M, 1, 2) + grid_y).amin(
        3, keepdim=True) > zero  # in_x (N, M, 1, W), in_y (N, M, H, 1)
    rect = torch.bitwise_and(torch.bitwise_and(in_y, keep), in_x)
    return rect.any(1, keepdim=True)
