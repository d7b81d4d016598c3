"""Fine-grained Feature Imitation (FGFI) for detectors."""
import functools
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

__all__ = ['FGFILoss']


_SIGN4 = (-1.0, -1.0, 1.0, 1.0)


@functools.lru_cache(maxsize=256)
def _const(value, dtype: torch.dtype, device) -> torch.Tensor:
    """A cached constant tensor (no grad), saving per-call ATen calls."""
    return torch.tensor(value, dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def _base_anchors(scales: Tuple[float, ...], ratios: Tuple[float, ...],
                  center_offset: float, base_size: float,
                  device) -> torch.Tensor:
    """The (A, 4) anchors of location (0, 0), mmdet order (cached)."""
    scales = torch.tensor(scales, device=device)
    ratios = torch.tensor(ratios, device=device)
    h_ratios = ratios.sqrt()
    w_ratios = 1 / h_ratios
    ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
    c = center_offset * base_size
    return torch.stack(
        [c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], dim=-1)


@functools.lru_cache(maxsize=32)
def _anchor_intervals(H: int, W: int, stride: float, base_size: float,
                      scales: Tuple[float, ...], ratios: Tuple[float, ...],
                      center_offset: float, device
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Separable anchor geometry of an H x W grid (cached, no grad).

    Returns:
        ``(ax, ay, area_a)``: the signed column intervals
        ``[-x1, x2]`` of shape (1, 1, A, 1, 2, 1, W), the signed row
        intervals ``[-y1, y2]`` of shape (1, 1, A, 1, 2, H, 1) and the
        anchor areas (1, 1, A, 1, 1, 1), float32.
    """
    anchors = _base_anchors(scales, ratios, center_offset, base_size,
                            device)  # (A, 4)
    A = anchors.shape[0]
    shift_x = torch.arange(W, device=device, dtype=torch.float32) * stride
    shift_y = torch.arange(H, device=device, dtype=torch.float32) * stride
    ax = torch.stack([-(shift_x + anchors[:, 0:1]),
                      shift_x + anchors[:, 2:3]], dim=1)  # (A, 2, W)
    ay = torch.stack([-(shift_y + anchors[:, 1:2]),
                      shift_y + anchors[:, 3:4]], dim=1)  # (A, 2, H)
    area_a = ((anchors[:, 2] - anchors[:, 0]) *
              (anchors[:, 3] - anchors[:, 1]))
    return (ax.view(1, 1, A, 1, 2, 1, W), ay.view(1, 1, A, 1, 2, H, 1),
            area_a.view(1, 1, A, 1, 1, 1))


@MODELS.register_module()
class FGFILoss(nn.Module):
    """FGFI: imitate the teacher at locations near the GT objects.

    *Distilling Object Detectors with Fine-grained Feature Imitation*
    (Wang et al., CVPR 2019), following the official code of
    twangnh/Distilling-Object-Detectors (``anchor_target_layer.py`` for the
    mask, ``trainval_net_sup.py`` for the loss, ``vgg11.py`` for the
    adapter). For one feature level (N, C, H, W):

    * anchors: ``A = len(scales) * len(ratios)`` anchors per location,
      generated like mmdet's ``AnchorGenerator`` (``base_size`` square
      scaled by ``scales`` and reshaped by ``ratios = h / w``, centred at
      ``center_offset * base_size``, shifted by ``stride`` on the grid);
    * imitation mask: per GT box, the IoU with all ``H * W * A`` anchors and
      ``thr = thr_factor * max IoU``; a location is masked if any of its
      anchors has IoU ``> thr`` for any GT of its image;
    * an adapter ``conv3x3(C_s, C_t) - ReLU`` (weights truncated normal,
      std 1e-4; PyTorch default bias), as official;
    * ``loss = loss_weight * sum(M * (adapt(S) - T)^2) / (2 * N_p)``, with
      ``N_p = sum(M)`` the number of masked locations in the batch (not
      multiplied by the channels, as official).

    One loss instance is built per level. ``stride`` is the stride of the
    level it distils (official: 16, VGG ``conv5_3`` of Faster R-CNN, with
    scales 8/16/32 on VOC, 4/8/16/32 on COCO). For FPN features, where the
    distiller builds one instance per level from the same config, set
    ``stride=None``: the stride is then inferred per call as
    ``2 ** round(log2(H_in / H))`` from ``batch_input_shape``, and
    ``base_size`` follows it; mmdet's
    ``anchor_generator=dict(scales=[8], ratios=[0.5, 1.0, 2.0],
    strides=[4, 8, 16, 32, 64])`` becomes ``scales=[8], stride=None``.

    Differences from the official code:

    * Anchors and IoU follow mmdet (no ``+1`` on widths, anchors centred at
      ``center_offset * base_size`` with no rounding), matching the mmdet
      student whose anchors are imitated; the official py-faster-rcnn
      anchors use the legacy ``+1`` convention and centre ``7.5``.
    * ``loss_weight`` defaults to the official ``--ilw`` default 0.01.
    * A batch without any masked location gives 0 (the official code
      divides by zero).
    * ``adapter=False`` (equal channels only) and ``adapter_relu=False``
      are extensions; drop the ReLU for features that can be negative
      (e.g. FPN outputs; DeFeat's FGFI re-implementation does the same).

    The adapter stays inside the loss (rather than a connector) because it
    is part of the method, with its own initialisation, and checkpoints
    hold it under this loss. Anchors and boxes are compared in float32
    (the GT's precision); the loss computes in the dtype of its inputs and,
    like any module with parameters, is converted with them
    (``loss.double()``). The mask is built for the whole batch by tensor
    operations, with no loop over images or boxes (the number of ATen calls
    does not grow with either; the (N, A, M, H, W) float32 overlaps are its
    largest tensor); the anchor geometry, pure geometry without grad,
    is cached per (H, W, stride, device). The loss is then
    ``sum(w * (adapt(S) - T)^2)`` with ``w = loss_weight / (2 * N_p)`` on
    the mask and 0 elsewhere.

    Args:
        student_channels: Channels of the student feature (filled in by the
            distiller).
        teacher_channels: Channels of the teacher feature (filled in by the
            distiller).
        thr_factor: Factor ``psi`` of the per-box max IoU. Defaults to 0.5.
        stride: Stride of this level in input pixels; None infers it.
            Defaults to 16.
        scales: Anchor scales (multiples of ``base_size``).
            Defaults to (8, 16, 32).
        ratios: Anchor height/width ratios. Defaults to (0.5, 1.0, 2.0).
        base_size: Anchor base size; None uses the stride.
            Defaults to None.
        center_offset: Anchor centre offset in units of ``base_size``
            (mmdet's ``center_offset``). Defaults to 0.0.
        adapter: Use the conv adapter on the student. Defaults to True.
        adapter_relu: ReLU after the adapter conv. Defaults to True.
        loss_weight: Weight of the loss. Defaults to 0.01.
    """

    #: Ground truth this loss reads from every data sample.
    gt_field = 'gt_instances'

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 thr_factor: float = 0.5,
                 stride: Optional[int] = 16,
                 scales: Sequence[float] = (8, 16, 32),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 base_size: Optional[float] = None,
                 center_offset: float = 0.0,
                 adapter: bool = True,
                 adapter_relu: bool = True,
                 loss_weight: float = 0.01) -> None:
        super().__init__()
        if not scales or not ratios:
            raise ValueError('FGFILoss needs at least one scale and ratio')
        if not 0.0 <= thr_factor <= 1.0:
            raise ValueError(f'thr_factor must be in [0, 1], got {thr_factor}')
        if stride is not None and stride <= 0:
            raise ValueError(f'stride must be positive or None, got {stride}')
        self.thr_factor = float(thr_factor)
        self.stride = stride
        self.scales = [float(s) for s in scales]
        self.ratios = [float(r) for r in ratios]
        self.base_size = base_size
        self.center_offset = float(center_offset)
        self.loss_weight = float(loss_weight)
        if adapter:
            conv = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=3, padding=1)
            with torch.no_grad():
                conv.weight.normal_().fmod_(2).mul_(0.0001)
            layers = [conv] + ([nn.ReLU()] if adapter_relu else [])
            self.adapter = nn.Sequential(*layers)
        elif student_channels != teacher_channels:
            raise ValueError(
                f'FGFILoss with adapter=False needs equal channels, got '
                f'student {student_channels} and teacher {teacher_channels}')
        else:
            self.adapter = None
        #: The adapter maps student channels to the teacher's.
        self.allow_channel_mismatch = bool(adapter)

    @property
    def num_anchors(self) -> int:
        """Anchors per location."""
        return len(self.scales) * len(self.ratios)

    def base_anchors(self, base_size: float,
                     device: torch.device) -> torch.Tensor:
        """The (A, 4) anchors of location (0, 0), mmdet order."""
        return _base_anchors(tuple(self.scales), tuple(self.ratios),
                             self.center_offset, float(base_size),
                             device).clone()

    def grid_anchors(self, H: int, W: int, stride: float,
                     device: torch.device) -> torch.Tensor:
        """All anchors of an H x W map, (H * W * A, 4), location-major."""
        base = self.base_size if self.base_size is not None else stride
        base_anchors = self.base_anchors(float(base), device)
        shift_x = torch.arange(W, device=device, dtype=torch.float32) * stride
        shift_y = torch.arange(H, device=device, dtype=torch.float32) * stride
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        return (shifts[:, None, :] + base_anchors[None]).reshape(-1, 4)

    def get_mask(self, data_samples: List, N: int, H: int, W: int,
                 device: torch.device,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Imitation mask, shape (N, 1, H, W), ``dtype`` in {0, 1}.

        Built for all images and boxes at once from
        :func:`padded_gt_bboxes` (boxes (N, M, 4)), without materialising
        the IoU matrix. On the anchor grid the overlap of anchor shape
        ``a`` at (y, x) with box ``b`` is ``ih[a, b, y] * iw[a, b, x]``
        (intersection heights of the anchor rows times widths of the
        anchor columns), and IoU ``o / (area_a + area_b - o)`` increases
        with ``o``. Hence the max IoU of a box is reached at
        ``max_y ih * max_x iw``, and ``IoU > thr`` is
        ``o > thr * (area_a + area_b) / (1 + thr)``: one product and one
        comparison over (N, A, M, H, W). This is the official rule (mmdet
        IoU without ``+1``), up to float rounding exactly at the
        threshold. A padding row (a zero box) overlaps no anchor, so its
        threshold is 0 and its strict comparison ``0 > 0`` marks nothing;
        an image without GT gets an empty mask.

        Args:
            data_samples: One ``DetDataSample``-like object per image.
            N, H, W: Batch size and feature map size (``N`` must be
                ``len(data_samples)``).
            device: Device of the mask.
            dtype: Dtype of the mask (that of the features); ``torch.bool``
                returns the boolean mask.
        """
        check_samples(data_samples, N, 'FGFILoss')
        boxes, _, _ = padded_gt_bboxes(data_samples, device)
        if self.stride is None:
            stride = infer_stride(batch_input_hw(data_samples[0]), (H, W))
        else:
            stride = self.stride
        mask = self._imitation_mask(boxes, H, W, stride)
        return mask if dtype == torch.bool else mask.to(dtype)

    def _imitation_mask(self, boxes: torch.Tensor, H: int, W: int,
                        stride: float) -> torch.Tensor:
        """Boolean (N, 1, H, W) mask of (N, M, 4) padded pixel boxes."""
        base = self.base_size if self.base_size is not None else stride
        ax, ay, area_a = _anchor_intervals(
            H, W, float(stride), float(base), tuple(self.scales),
            tuple(self.ratios), self.center_offset, boxes.device)
        N, M = boxes.shape[:2]
        # Boxes as signed intervals [-lo, hi]: min(-lo_a, -lo_b) +
        # min(hi_a, hi_b) is the overlap length, bit-exactly
        # min(hi_a, hi_b) - max(lo_a, lo_b). Dims (N, 1, A-slot, M,
        # lo|hi, x|y, H-slot, W-slot).
        signed = (boxes * _const(_SIGN4, boxes.dtype, boxes.device)).view(
            N, 1, 1, M, 2, 2, 1, 1)
        iw = torch.minimum(ax, signed[:, :, :, :, :, 0]).sum(4).clamp_min(0)
        ih = torch.minimum(ay, signed[:, :, :, :, :, 1]).sum(4).clamp_min(0)
        # iw (N, 1, A, M, 1, W), ih (N, 1, A, M, H, 1).
        o_max = ih.amax(4, keepdim=True) * iw.amax(5, keepdim=True)
        area_b = signed.sum(4).prod(4)  # (N, 1, 1, M, 1, 1)
        area_sum = area_a + area_b  # (N, 1, A, M, 1, 1)
        iou_max = o_max / (area_sum - o_max).clamp_min(1e-6)
        thr = iou_max.amax(2, keepdim=True) * _const(
            self.thr_factor, boxes.dtype, boxes.device)
        min_overlap = thr * area_sum / (
            thr + _const(1.0, boxes.dtype, boxes.device))
        hit = ih * iw > min_overlap  # (N, 1, A, M, H, W)
        return hit.any(dim=(2, 3))

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
        check_level_inputs(preds_S, preds_T, data_samples, 'FGFILoss')
        N, _, H, W = preds_T.shape
        if self.adapter is not None:
            preds_S = self.adapter(preds_S)
        diff = F.mse_loss(preds_S, preds_T, reduction='none')
        mask = self.get_mask(data_samples, N, H, W, diff.device, torch.bool)
        # loss_weight / (2 N_p) on the masked locations, 0 elsewhere, in
        # the dtype of the squared difference (float32 under autocast) and
        # counted in at least float32; the quotient, infinite if N_p = 0,
        # is then never selected.
        dtype, device = diff.dtype, diff.device
        cdt = dtype if dtype in (torch.float32, torch.float64) else (
            torch.float32)
        coef = _const(self.loss_weight / 2, cdt, device) / (
            mask.count_nonzero())
        weight = torch.where(mask, coef, _const(0.0, cdt, device))
        if cdt != dtype:
            weight = weight.to(dtype)
        return (diff * weight).sum()
