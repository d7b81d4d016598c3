"""Fine-grained Feature Imitation (FGFI) for detectors."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from visionkd.registry import MODELS

from .det_gt_utils import (
    batch_input_hw,
    check_level_inputs,
    gt_bboxes_of,
    infer_stride,
)

__all__ = ['FGFILoss']


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
    (``loss.double()``).

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
        scales = torch.tensor(self.scales, device=device)
        ratios = torch.tensor(self.ratios, device=device)
        h_ratios = ratios.sqrt()
        w_ratios = 1 / h_ratios
        ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
        c = self.center_offset * base_size
        return torch.stack(
            [c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], dim=-1)

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

        Computed without materialising the IoU matrix. On the anchor grid
        the overlap of anchor shape ``a`` at (y, x) with box ``b`` is
        ``ih[a, b, y] * iw[a, b, x]`` (intersection heights of the anchor
        rows times widths of the anchor columns), and IoU
        ``o / (area_a + area_b - o)`` increases with ``o``. Hence the max
        IoU of a box is reached at ``max_y ih * max_x iw``, and
        ``IoU > thr`` is ``o > thr * (area_a + area_b) / (1 + thr)``: one
        product and one comparison over (A, n, H, W) per image. This is
        the official rule (mmdet IoU without ``+1``), up to float rounding
        exactly at the threshold.

        Args:
            data_samples: One ``DetDataSample``-like object per image.
            N, H, W: Batch size and feature map size.
            device: Device of the mask.
            dtype: Dtype of the mask (that of the features).
        """
        mask = torch.zeros(N, H, W, dtype=torch.bool, device=device)
        if self.stride is None:
            stride = infer_stride(batch_input_hw(data_samples[0]), (H, W))
        else:
            stride = self.stride
        base = self.base_size if self.base_size is not None else stride
        anchors = self.base_anchors(float(base), device)  # (A, 4)
        area_a = ((anchors[:, 2] - anchors[:, 0]) *
                  (anchors[:, 3] - anchors[:, 1]))[:, None]  # (A, 1)
        shift_x = torch.arange(W, device=device, dtype=torch.float32) * stride
        shift_y = torch.arange(H, device=device, dtype=torch.float32) * stride
        ax1 = (shift_x + anchors[:, 0:1])[:, None]  # (A, 1, W)
        ax2 = (shift_x + anchors[:, 2:3])[:, None]
        ay1 = (shift_y + anchors[:, 1:2])[:, None]  # (A, 1, H)
        ay2 = (shift_y + anchors[:, 3:4])[:, None]
        for i, sample in enumerate(data_samples):
            boxes = gt_bboxes_of(sample, device)
            if boxes.numel() == 0:
                continue
            bx1, by1, bx2, by2 = (boxes[:, k, None] for k in range(4))
            iw = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(min=0)
            ih = (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(min=0)
            area_b = ((bx2 - bx1) * (by2 - by1)).reshape(1, -1)  # (1, n)
            o_max = ih.amax(dim=2) * iw.amax(dim=2)  # (A, n)
            iou_max = o_max / (area_a + area_b - o_max).clamp(min=1e-6)
            thr = self.thr_factor * iou_max.amax(dim=0)  # (n, )
            min_overlap = thr * (area_a + area_b) / (1 + thr)  # (A, n)
            overlap = ih[..., :, None] * iw[..., None, :]  # (A, n, H, W)
            hit = overlap > min_overlap[..., None, None]
            mask[i] = hit.flatten(0, 1).any(dim=0)
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
        check_level_inputs(preds_S, preds_T, data_samples, 'FGFILoss')
        N, _, H, W = preds_T.shape
        if self.adapter is not None:
            preds_S = self.adapter(preds_S)
        diff = (preds_S - preds_T).pow(2)
        mask = self.get_mask(data_samples, N, H, W, diff.device, diff.dtype)
        norms = (mask.sum() * 2).clamp(min=1.0)
        return self.loss_weight * (diff * mask).sum() / norms

