"""FGFI and DeFeat masks built for the whole batch at once (issue #16).

* the masks equal a per-image, per-box reference (the loops the losses
  used before, copied here): several images, one without boxes,
  overlapping boxes, boxes across the border, tiny and degenerate boxes,
  for DeFeat boxes of different levels and images of different input
  sizes;
* loss values and student gradients equal those computed from the
  reference masks with the previous formulas;
* the ATen calls of a forward + backward neither grow with the batch nor
  with the boxes, and stay within 150 per level (deterministic counts).

Data samples are duck-typed, except for the op counts, which use mmdet's
``DetDataSample`` as in training.
"""
import math
from types import SimpleNamespace

import pytest
import torch

from visionkd.models.losses.defeat_loss import (
    DeFeatLoss,
    _level_area_bounds,
)
from visionkd.models.losses.det_gt_utils import (
    batch_input_hw,
    gt_bboxes_of,
    infer_stride,
)
from visionkd.models.losses.fgfi_loss import FGFILoss


def sample(boxes, input_hw=(64, 64)):
    """A DetDataSample look-alike: xyxy pixel boxes of the padded batch."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    meta = dict(batch_input_shape=input_hw, pad_shape=input_hw)
    return SimpleNamespace(
        gt_instances=SimpleNamespace(bboxes=boxes), metainfo=meta)


# ---------------------------------------------------------------------------
# References: the previous per-image, per-box mask code.
def ref_base_anchors(loss, base_size):
    scales = torch.tensor(loss.scales)
    ratios = torch.tensor(loss.ratios)
    h_ratios = ratios.sqrt()
    w_ratios = 1 / h_ratios
    ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
    c = loss.center_offset * base_size
    return torch.stack(
        [c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], dim=-1)


def ref_fgfi_mask(loss, data_samples, N, H, W):
    mask = torch.zeros(N, H, W, dtype=torch.bool)
    if loss.stride is None:
        stride = infer_stride(batch_input_hw(data_samples[0]), (H, W))
    else:
        stride = loss.stride
    base = loss.base_size if loss.base_size is not None else stride
    anchors = ref_base_anchors(loss, float(base))  # (A, 4)
    area_a = ((anchors[:, 2] - anchors[:, 0]) *
              (anchors[:, 3] - anchors[:, 1]))[:, None]  # (A, 1)
    shift_x = torch.arange(W, dtype=torch.float32) * stride
    shift_y = torch.arange(H, dtype=torch.float32) * stride
    ax1 = (shift_x + anchors[:, 0:1])[:, None]  # (A, 1, W)
    ax2 = (shift_x + anchors[:, 2:3])[:, None]
    ay1 = (shift_y + anchors[:, 1:2])[:, None]  # (A, 1, H)
    ay2 = (shift_y + anchors[:, 3:4])[:, None]
    for i, s in enumerate(data_samples):
        boxes = gt_bboxes_of(s, 'cpu')
        if boxes.numel() == 0:
            continue
        bx1, by1, bx2, by2 = (boxes[:, k, None] for k in range(4))
        iw = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(min=0)
        ih = (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(min=0)
        area_b = ((bx2 - bx1) * (by2 - by1)).reshape(1, -1)  # (1, n)
        o_max = ih.amax(dim=2) * iw.amax(dim=2)  # (A, n)
        iou_max = o_max / (area_a + area_b - o_max).clamp(min=1e-6)
        thr = loss.thr_factor * iou_max.amax(dim=0)  # (n, )
        min_overlap = thr * (area_a + area_b) / (1 + thr)  # (A, n)
        overlap = ih[..., :, None] * iw[..., None, :]  # (A, n, H, W)
        hit = overlap > min_overlap[..., None, None]
        mask[i] = hit.flatten(0, 1).any(dim=0)
    return mask[:, None].float()


def ref_box_levels(loss, boxes):
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0] + 1) *
                       (boxes[:, 3] - boxes[:, 1] + 1))
    lvls = torch.floor(torch.log2(scale / loss.finest_scale + 1e-6))
    return lvls.clamp(min=0, max=len(loss.strides) - 1).long()


def ref_defeat_mask(loss, data_samples, N, H, W):
    mask = torch.zeros(N, H, W, dtype=torch.bool)
    ys = torch.arange(H)
    xs = torch.arange(W)
    for i, s in enumerate(data_samples):
        boxes = gt_bboxes_of(s, 'cpu')
        h_in, w_in = batch_input_hw(s)
        if boxes.numel() and loss.assign_levels:
            level = loss.level_of_map((h_in, w_in), H, W)
            boxes = boxes[ref_box_levels(loss, boxes) == level]
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
    return mask[:, None].float()


def ref_loss(loss, s, t, mask):
    """The previous formulas on a given mask."""
    if loss.adapter is not None:
        s = loss.adapter(s)
    diff = (s - t).pow(2)
    mask = mask.to(diff.dtype)
    if isinstance(loss, FGFILoss):
        norms = (mask.sum() * 2).clamp(min=1.0)
        return loss.loss_weight * (diff * mask).sum() / norms
    N, C, H, W = t.shape
    n_fg = mask.sum()
    n_bg = N * H * W - n_fg
    fg = (diff * mask).sum() / (2 * C * n_fg).clamp(min=1.0)
    bg = (diff * (1 - mask)).sum() / (2 * C * n_bg).clamp(min=1.0)
    total = loss.loss_weight_fg * fg + loss.loss_weight_bg * bg
    return loss.loss_weight * total / len(loss.strides)


# ---------------------------------------------------------------------------
# Batches
def hand_batch(input_hw=(64, 64)):
    """Four images: overlapping, border, tiny, degenerate and outside
    boxes; one image without boxes."""
    return [
        sample([[8, 16, 24, 40], [12, 20, 30, 30], [10, 10, 60, 50]],
               input_hw),  # overlapping
        sample([], input_hw),  # no GT
        sample([[-6, -4, 10, 9], [50, 52, 64, 64], [60, 0, 70, 20],
                [64, 10, 64, 20]], input_hw),  # across / on the border
        sample([[9, 9, 12, 12], [30.2, 30.1, 30.6, 30.3], [5, 40, 5, 40],
                [20, 20, 21, 29], [70, 70, 80, 80], [-20, 5, -10, 8]],
               input_hw),  # tiny, degenerate, outside
    ]


def random_batch(n_images, n_boxes, input_hw, seed):
    gen = torch.Generator().manual_seed(seed)
    h, w = input_hw
    out = []
    for i in range(n_images):
        n = 0 if i == 1 else n_boxes - i  # image 1 has no boxes
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w, h]) * 1.1
        xy -= torch.tensor([w, h]) * 0.05
        wh = torch.rand(n, 2, generator=gen) ** 2 * torch.tensor([w, h])
        out.append(sample(torch.cat([xy, xy + wh], 1).tolist(), input_hw))
    return out


FGFI_CFGS = [
    dict(),  # official: stride 16, 3 scales x 3 ratios
    dict(stride=None, scales=(8, ), adapter_relu=False),  # FPN
    dict(stride=8, scales=(1, 2), ratios=(1.0, ), thr_factor=0.3,
         center_offset=0.5, base_size=6),
]


@pytest.mark.parametrize('cfg', FGFI_CFGS)
@pytest.mark.parametrize('hw', [(8, 8), (4, 4), (5, 7)])
def test_fgfi_mask_equals_reference(cfg, hw):
    loss = FGFILoss(4, 4, **cfg)
    H, W = hw
    for samples in (hand_batch(), random_batch(5, 12, (64, 64), 0),
                    [sample([]), sample([])]):
        got = loss.get_mask(samples, len(samples), H, W, 'cpu')
        expected = ref_fgfi_mask(loss, samples, len(samples), H, W)
        assert torch.equal(got, expected)
    assert got.sum() == 0  # no GT in the batch
    bool_mask = loss.get_mask(samples, 2, H, W, 'cpu', torch.bool)
    assert bool_mask.dtype == torch.bool


@pytest.mark.parametrize('cfg', FGFI_CFGS[1:] + [
    dict(stride=4, scales=(2, 4, 8))])
def test_fgfi_mask_equals_reference_dense(cfg):
    """Many boxes on a larger map: many IoUs near the thresholds."""
    loss = FGFILoss(4, 4, **cfg)
    samples = random_batch(6, 40, (128, 96), 3)
    got = loss.get_mask(samples, 6, 32, 24, 'cpu')
    expected = ref_fgfi_mask(loss, samples, 6, 32, 24)
    assert torch.equal(got, expected)


def test_fgfi_padding_rows_mark_nothing():
    """An image with one box in a batch padded to 6 boxes gets the mask of
    that box alone; images without GT stay empty."""
    loss = FGFILoss(4, 4, stride=8, scales=(1, 2))
    box = [[12, 20, 20, 28]]
    crowd = [[4 * i, 2 * i, 4 * i + 20, 2 * i + 30] for i in range(6)]
    batch = loss.get_mask([sample(box), sample(crowd), sample([])], 3, 8, 8,
                          'cpu')
    alone = loss.get_mask([sample(box)], 1, 8, 8, 'cpu')
    assert torch.equal(batch[:1], alone) and alone.sum() > 0
    assert batch[2].sum() == 0


def defeat_losses():
    return [
        DeFeatLoss(4, 4, strides=(4, 8, 16), finest_scale=16),
        DeFeatLoss(4, 4, strides=(8, ), finest_scale=16),
        DeFeatLoss(4, 4, strides=(8, 16), assign_levels=False),
        DeFeatLoss(4, 4),  # official: strides 4-64, finest scale 56
    ]


@pytest.mark.parametrize('index', range(4))
def test_defeat_mask_equals_reference(index):
    loss = defeat_losses()[index]
    batches = [hand_batch(), random_batch(5, 15, (64, 64), 1),
               random_batch(3, 40, (64, 96), 2),
               [sample([]), sample([])]]
    for samples in batches:
        h_in, w_in = batch_input_hw(samples[0])
        for stride in loss.strides:
            H, W = math.ceil(h_in / stride), math.ceil(w_in / stride)
            got = loss.get_mask(samples, len(samples), H, W, 'cpu')
            expected = ref_defeat_mask(loss, samples, len(samples), H, W)
            assert torch.equal(got, expected), (stride, h_in, w_in)


def test_defeat_boxes_on_all_levels_and_mixed_input_sizes():
    """Boxes of every level in one image, and images whose input sizes put
    a map on different levels (per image level and scale)."""
    loss = DeFeatLoss(4, 4, strides=(4, 8, 16, 32), finest_scale=16)
    boxes = [[0, 0, 14, 14], [10, 10, 45, 40], [0, 0, 63, 63],
             [20, 4, 28, 12], [33, 1, 64, 64], [0, 0, 127, 127]]
    levels = ref_box_levels(loss, torch.tensor(boxes, dtype=torch.float32))
    assert sorted(set(levels.tolist())) == [0, 1, 2, 3]
    samples = [sample(boxes), sample(boxes, (128, 128)),
               sample([], (128, 128)), sample(boxes[1:], (64, 128))]
    for H, W in ((16, 16), (8, 8), (16, 8)):
        got = loss.get_mask(samples, 4, H, W, 'cpu')
        expected = ref_defeat_mask(loss, samples, 4, H, W)
        assert torch.equal(got, expected), (H, W)


def test_defeat_level_bounds_match_the_official_rule():
    """Areas (w + 1) * (h + 1) on and next to each level bound (every
    float32 step, boxes of height 0) get the levels of the official rule;
    the masks keep them apart."""
    loss = DeFeatLoss(4, 4, strides=(4, 8, 16, 32), finest_scale=56)
    areas = []
    for level in range(1, 4):
        bound = torch.tensor(_level_area_bounds(56.0, 4, level)[0])
        steps = torch.arange(-3, 4, dtype=torch.int32)
        areas += (bound.view(torch.int32) + steps).view(torch.float32)
    # x2 = area - 1 is exact here, and so is (x2 - 0 + 1) * (y - y + 1);
    # each box marks the first cell of its own row.
    boxes = torch.tensor([[0.0, 40.0 * i, a - 1, 40.0 * i]
                          for i, a in enumerate(areas)])
    lvls = ref_box_levels(loss, boxes)
    assert torch.equal(loss.box_levels(boxes), lvls)
    assert lvls.tolist() == [0] * 3 + [1] * 7 + [2] * 7 + [3] * 4
    samples = [sample(boxes.tolist(), (1024, 1024))]
    for stride in loss.strides:
        side = 1024 // stride
        got = loss.get_mask(samples, 1, side, side, 'cpu')
        expected = ref_defeat_mask(loss, samples, 1, side, side)
        assert torch.equal(got, expected), stride


# ---------------------------------------------------------------------------
# Values and gradients
def value_and_grad(fn, s):
    s = s.detach().clone().requires_grad_(True)
    value = fn(s)
    (grad, ) = torch.autograd.grad(value, s)
    return value, grad


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('name', ['FGFILoss', 'DeFeatLoss'])
def test_value_and_gradient_equal_reference(name, dtype):
    torch.manual_seed(3)
    if name == 'FGFILoss':
        losses = [FGFILoss(4, 6, stride=None, scales=(8, ),
                           adapter_relu=False, loss_weight=0.7),
                  FGFILoss(4, 6, stride=8, scales=(1, 2))]
        ref_mask = ref_fgfi_mask
    else:
        losses = [DeFeatLoss(4, 6, strides=(8, 16), finest_scale=16,
                             loss_weight=0.5),
                  DeFeatLoss(4, 6, loss_weight_fg=2.0, strides=(8, ),
                             assign_levels=False)]
        ref_mask = ref_defeat_mask
    samples = hand_batch()
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else {}
    for loss in losses:
        loss = loss.to(dtype)
        for p in loss.parameters():
            with torch.no_grad():  # a non-trivial adapter
                p.normal_(std=0.3)
        for H, W in ((8, 8), (4, 4)):
            s = torch.randn(4, 4, H, W, dtype=dtype)
            t = torch.randn(4, 6, H, W, dtype=dtype)
            mask = ref_mask(loss, samples, 4, H, W)
            got, got_grad = value_and_grad(
                lambda x, loss=loss, t=t: loss(x, t, samples), s)
            exp, exp_grad = value_and_grad(
                lambda x, loss=loss, t=t, m=mask: ref_loss(loss, x, t, m), s)
            assert got.dtype == dtype and got_grad.dtype == dtype
            torch.testing.assert_close(got, exp, **tol)
            torch.testing.assert_close(got_grad, exp_grad, **tol)
    # No GT anywhere: DeFeat has only background, FGFI gives 0.
    s = torch.randn(2, 4, 4, 4, dtype=dtype)
    t = torch.randn(2, 6, 4, 4, dtype=dtype)
    empty = [sample([]), sample([])]
    got, got_grad = value_and_grad(lambda x: loss(x, t, empty), s)
    exp, exp_grad = value_and_grad(
        lambda x: ref_loss(loss, x, t, torch.zeros(2, 1, 4, 4)), s)
    torch.testing.assert_close(got, exp, **tol)
    torch.testing.assert_close(got_grad, exp_grad, **tol)
    assert torch.isfinite(got_grad).all()


@pytest.mark.parametrize('name', ['FGFILoss', 'DeFeatLoss'])
def test_low_precision_keeps_dtype(name):
    cls = FGFILoss if name == 'FGFILoss' else DeFeatLoss
    kwargs = dict(stride=8) if name == 'FGFILoss' else dict(strides=(8, ))
    loss = cls(4, 4, adapter=False, **kwargs)
    torch.manual_seed(4)
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    samples = hand_batch()[:2]
    value = loss(s.bfloat16(), t.bfloat16(), samples)
    assert value.dtype == torch.bfloat16
    torch.testing.assert_close(value.float(), loss(s, t, samples),
                               rtol=2e-2, atol=0)


# ---------------------------------------------------------------------------
# ATen calls
def det_samples(n_images, n_boxes):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(n_images * 100 + n_boxes)
    out = []
    for _ in range(n_images):
        xy = torch.rand(n_boxes, 2, generator=gen) * 200
        wh = torch.rand(n_boxes, 2, generator=gen) * 120 + 2
        ds = DetDataSample(metainfo=dict(batch_input_shape=(256, 256)))
        ds.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1))
        out.append(ds)
    return out


def fpn_counts(cfg, n_images, n_boxes):
    """ATen calls of forward + backward per level of a 5-level FPN."""
    from visionkd.registry import MODELS
    from visionkd.utils import count_aten_calls
    torch.manual_seed(5)
    samples = det_samples(n_images, n_boxes)
    counts = []
    for size in (64, 32, 16, 8, 4):
        loss = MODELS.build(dict(student_channels=32, teacher_channels=32,
                                 **cfg))
        s = torch.randn(n_images, 32, size, size, requires_grad=True)
        t = torch.randn(n_images, 32, size, size)
        loss(s, t, samples)  # fills the geometry and constant caches
        counts.append(count_aten_calls(
            lambda loss=loss, s=s, t=t: loss(s, t, samples)))
    return counts


@pytest.mark.parametrize('cfg', [
    dict(type='FGFILoss'),
    dict(type='FGFILoss', stride=None, scales=(8, ), adapter_relu=False),
    dict(type='DeFeatLoss'),
])
def test_aten_calls_independent_of_batch_and_boxes(cfg):
    pytest.importorskip('mmdet')
    small = fpn_counts(cfg, 2, 2)
    large = fpn_counts(cfg, 8, 50)
    assert sum(large) <= 1.05 * sum(small), (small, large)
    assert max(small + large) <= 150, (small, large)
