"""FGDLoss built for the whole batch: masks, fused backward, ATen calls.

* the masks of all images and boxes at once equal a cell-by-cell loop;
* value and gradients equal the autograd form with the former per-image
  masks (copied below as the reference);
* the ATen calls of a forward + backward do not grow with the batch or
  the number of boxes (issue #16 set-up: 5-level FPN, 32 channels).

Data samples are duck-typed (``SimpleNamespace``), as in
``test_detection_losses.py``.
"""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.models.losses.det_gt_utils import (
    batch_input_hw,
    gt_bboxes_of,
)
from visionkd.models.losses.fgd_loss import FGDLoss
from visionkd.utils import count_aten_calls


def sample(boxes, input_hw=(64, 64)):
    """A DetDataSample look-alike: xyxy pixel boxes of the padded batch."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return SimpleNamespace(gt_instances=SimpleNamespace(bboxes=boxes),
                           metainfo=dict(batch_input_shape=input_hw))


def random_samples(num_images, num_boxes, input_hw=(256, 256), seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_images):
        xy = torch.rand(num_boxes, 2, generator=gen) * 200
        wh = torch.rand(num_boxes, 2, generator=gen) * 60 + 2
        out.append(sample(torch.cat([xy, xy + wh], 1), input_hw))
    return out


# ---------------------------------------------------------------------------
# (a) masks
def loop_masks(samples, H, W):
    """Cell by cell: every box paints 1 / its cell count, the max wins."""
    fg = torch.zeros(len(samples), H, W, dtype=torch.float64)
    for i, s in enumerate(samples):
        h_in, w_in = s.metainfo['batch_input_shape']
        for x1, y1, x2, y2 in s.gt_instances.bboxes.tolist():
            x1, x2 = math.floor(x1 / w_in * W), math.ceil(x2 / w_in * W)
            y1, y2 = math.floor(y1 / h_in * H), math.ceil(y2 / h_in * H)
            area = 1.0 / ((y2 + 1 - y1) * (x2 + 1 - x1))
            for y in range(max(y1, 0), min(y2 + 1, H)):
                for x in range(max(x1, 0), min(x2 + 1, W)):
                    fg[i, y, x] = max(fg[i, y, x].item(), area)
    bg = (fg == 0).double()
    bg /= bg.sum((1, 2), keepdim=True).clamp(min=1)
    return fg.float(), bg.float()


MASK_SAMPLES = [
    # overlapping: the small box (area 1/4) wins over the large (1/25);
    # a box across the right / bottom border; one leaving the image
    sample([[0, 0, 32, 32], [8, 8, 16, 16], [48, 40, 70, 64],
            [-10, 50, 6, 70]]),
    sample([]),  # no box: all background
    # fractional coordinates, a box inside a cell, a degenerate box
    sample([[3.5, 7.25, 20.75, 9.0], [33, 33, 34, 34], [40, 8, 40, 8]]),
    sample([[0, 0, 64, 64]]),  # all foreground
    # another padded input size (each image maps with its own)
    sample([[0, 0, 32, 64], [100, 10, 128, 40]], input_hw=(64, 128)),
]


@pytest.mark.parametrize('size', [(8, 8), (5, 7), (16, 12), (1, 3)])
def test_masks_equal_cell_by_cell_loop(size):
    H, W = size
    fg, bg = FGDLoss.get_masks(MASK_SAMPLES, len(MASK_SAMPLES), H, W, 'cpu')
    ref_fg, ref_bg = loop_masks(MASK_SAMPLES, H, W)
    torch.testing.assert_close(fg, ref_fg, rtol=0, atol=0)
    torch.testing.assert_close(bg, ref_bg, rtol=0, atol=0)


def test_masks_smaller_box_wins_and_edge_cases():
    fg, bg = FGDLoss.get_masks(MASK_SAMPLES, 5, 8, 8, 'cpu')
    # box 1 covers cells 0..4 (5 x 5), box 2 cells 1..2: max is 1/4
    assert fg[0, 1, 1] == 0.25 and fg[0, 0, 0] == pytest.approx(1 / 25)
    assert fg[0, 7, 7] > 0  # the box across the border is clipped
    assert fg[1].sum() == 0 and bg[1].sum() == pytest.approx(1.0)
    assert bg[3].sum() == 0 and (fg[3] == 1 / 81).all()
    assert FGDLoss.get_masks(MASK_SAMPLES, 5, 8, 8, 'cpu',
                             torch.float64)[0].dtype == torch.float64


# ---------------------------------------------------------------------------
# (b) value and gradients
def old_get_masks(data_samples, N, H, W, device, dtype=torch.float32):
    """The masks as built before the batch version: a loop over images
    (copied from FGDLoss.get_masks of commit 4814a48)."""
    mask_fg = torch.zeros(N, H, W, device=device, dtype=dtype)
    ys = torch.arange(H, device=device)
    xs = torch.arange(W, device=device)
    for i, s in enumerate(data_samples):
        boxes = gt_bboxes_of(s, device)
        if boxes.numel() == 0:
            continue
        h_in, w_in = batch_input_hw(s)
        wmin = torch.floor(boxes[:, 0] / w_in * W)
        wmax = torch.ceil(boxes[:, 2] / w_in * W)
        hmin = torch.floor(boxes[:, 1] / h_in * H)
        hmax = torch.ceil(boxes[:, 3] / h_in * H)
        area = (1.0 / (hmax + 1 - hmin).to(dtype) /
                (wmax + 1 - wmin).to(dtype))
        in_y = (ys >= hmin[:, None]) & (ys <= hmax[:, None])
        in_x = (xs >= wmin[:, None]) & (xs <= wmax[:, None])
        inside = in_y[:, :, None] & in_x[:, None, :]
        value = torch.where(inside, area[:, None, None], area.new_zeros(()))
        mask_fg[i] = value.amax(dim=0).clamp(min=0)
    mask_bg = (mask_fg <= 0).to(dtype)
    bg_sum = mask_bg.sum(dim=(1, 2), keepdim=True)
    mask_bg = torch.where(bg_sum > 0, mask_bg / bg_sum.clamp(min=1),
                          mask_bg)
    return mask_fg, mask_bg


def reference_loss(m: FGDLoss, S, T, samples):
    """FGD in plain autograd with the per-image masks above."""
    if m.align is not None:
        S = m.align(S)
    N, C, H, W = T.shape
    fg, bg = old_get_masks(samples, N, H, W, S.device, S.dtype)

    def att(x):
        v = x.abs()
        sa = H * W * F.softmax(v.mean(1).reshape(N, -1) / m.temp, 1)
        ca = C * F.softmax(v.mean((2, 3)) / m.temp, 1)
        return sa.reshape(N, 1, H, W), ca.reshape(N, C, 1, 1)

    sa_t, ca_t = att(T)
    sa_s, ca_s = att(S)
    sq = (S - T).square() * sa_t * ca_t
    l_fg = (sq * fg[:, None]).sum() / N
    l_bg = (sq * bg[:, None]).sum() / N
    l_at = ((ca_s - ca_t).abs().sum() + (sa_s - sa_t).abs().sum()) / N
    loss = (m.alpha_fgd * l_fg + m.beta_fgd * l_bg + m.gamma_fgd * l_at +
            m.lambda_fgd * m.get_rela_loss(S, T))
    return m.loss_weight * loss


def grads(fn, m, S, T):
    """Value and gradients (S, T when it requires grad, parameters)."""
    m.zero_grad(set_to_none=True)
    S.grad = T.grad = None
    value = fn()
    value.backward()
    params = {n: p.grad.clone() for n, p in m.named_parameters()}
    t_grad = None if T.grad is None else T.grad.clone()
    return value.detach(), S.grad.clone(), t_grad, params


def randomised(m: FGDLoss) -> FGDLoss:
    """Every parameter redrawn: the zero init hides the GcBlock paths."""
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.5)
    return m


CASES = [
    # channels, dtype, teacher needs grad, map size, loss_weight
    (6, 6, torch.float32, False, (8, 10), 1.0),
    (4, 8, torch.float32, False, (8, 8), 2.0),  # with the align conv
    (6, 6, torch.float64, True, (7, 5), 1.0),
    (6, 6, torch.float32, True, (8, 10), 0.5),
]


@pytest.mark.parametrize('cs,ct,dtype,teacher_grad,size,weight', CASES)
def test_value_and_gradients_equal_per_image_reference(
        cs, ct, dtype, teacher_grad, size, weight):
    torch.manual_seed(0)
    m = randomised(FGDLoss(cs, ct, loss_weight=weight)).to(dtype)
    S = torch.randn(5, cs, *size, dtype=dtype, requires_grad=True)
    T = torch.randn(5, ct, *size, dtype=dtype, requires_grad=teacher_grad)
    samples = [sample(s.gt_instances.bboxes, s.metainfo['batch_input_shape'])
               for s in MASK_SAMPLES]
    got = grads(lambda: m(S, T, samples), m, S, T)
    ref = grads(lambda: reference_loss(m, S, T, samples), m, S, T)
    tol = (dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else
           dict(rtol=1e-10, atol=1e-12))
    gtol = (dict(rtol=1e-4, atol=1e-7) if dtype == torch.float32 else
            dict(rtol=1e-9, atol=1e-12))
    assert got[0].dtype == dtype and got[0].dim() == 0
    torch.testing.assert_close(got[0], ref[0], **tol)
    torch.testing.assert_close(got[1], ref[1], **gtol)
    if teacher_grad:
        torch.testing.assert_close(got[2], ref[2], **gtol)
    assert got[3].keys() == ref[3].keys()
    for name in ref[3]:
        torch.testing.assert_close(got[3][name], ref[3][name], **gtol,
                                   msg=name)


def test_negative_weight_takes_the_signed_sums():
    """With a negative weight the (S - T)^2 terms are summed with their
    signs (not as a 1-norm): value and gradients flip."""
    torch.manual_seed(4)
    pos = randomised(FGDLoss(6, 6))
    neg = FGDLoss(6, 6, loss_weight=-1.0)
    neg.load_state_dict(pos.state_dict())
    S = torch.randn(2, 6, 8, 8, requires_grad=True)
    T = torch.randn(2, 6, 8, 8)
    got = grads(lambda: neg(S, T, MASK_SAMPLES[:2]), neg, S, T)
    ref = grads(lambda: pos(S, T, MASK_SAMPLES[:2]), pos, S, T)
    torch.testing.assert_close(got[0], -ref[0])
    torch.testing.assert_close(got[1], -ref[1])
    for name in ref[3]:
        torch.testing.assert_close(got[3][name], -ref[3][name], msg=name)


def test_layouts_and_autocast_give_the_same_loss():
    torch.manual_seed(1)
    m = randomised(FGDLoss(6, 6))
    S = torch.randn(2, 6, 8, 8, requires_grad=True)
    T = torch.randn(2, 6, 8, 8)
    samples = MASK_SAMPLES[:2]
    value, grad_s, _, _ = grads(lambda: m(S, T, samples), m, S, T)
    # channels-last inputs (not viewable as (N, C, H*W)) are reshaped
    S_cl = S.detach().to(memory_format=torch.channels_last)
    S_cl.requires_grad_(True)
    T_cl = T.to(memory_format=torch.channels_last)
    got = grads(lambda: m(S_cl, T_cl, samples), m, S_cl, T_cl)
    torch.testing.assert_close(got[0], value)
    torch.testing.assert_close(got[1], grad_s)
    # under autocast the loss still computes in its inputs' dtype
    with torch.autocast('cpu', dtype=torch.bfloat16):
        auto = m(S, T, samples)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, value)


def test_second_order_gradients_are_refused():
    m = FGDLoss(4, 4)
    S = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = m(S, torch.randn(2, 4, 8, 8), MASK_SAMPLES[:2])
    (g, ) = torch.autograd.grad(loss, S, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


# ---------------------------------------------------------------------------
# (c) ATen calls
LEVELS = [64, 32, 16, 8, 4]  # P2..P6 of a 256 x 256 batch input


def level_counts(num_images, num_boxes):
    """ATen calls of forward + backward, per level (issue #16 set-up)."""
    torch.manual_seed(2)
    samples = random_samples(num_images, num_boxes)
    counts = []
    for size in LEVELS:
        m = FGDLoss(32, 32)
        S = torch.randn(num_images, 32, size, size, requires_grad=True)
        T = torch.randn(num_images, 32, size, size)
        counts.append(count_aten_calls(
            lambda m=m, S=S, T=T: m(S, T, samples)))
    return counts


def test_aten_calls_independent_of_batch_and_boxes():
    small = level_counts(2, 2)
    large = level_counts(8, 50)
    assert max(small) <= 300 and max(large) <= 300, (small, large)
    assert sum(large) <= 1.05 * sum(small), (small, large)
    assert all(b <= 1.05 * a for a, b in zip(small, large)), (small, large)


def test_aten_calls_independent_of_threads():
    """Large reductions to one element split over threads (more calls);
    the loss avoids them, so its count is the same on any machine."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = level_counts(8, 2)[:2]
        torch.set_num_threads(max(2, threads))
        many = level_counts(8, 2)[:2]
    finally:
        torch.set_num_threads(threads)
    assert one == many


def test_aten_calls_with_align_conv_stay_bounded():
    torch.manual_seed(3)
    m = FGDLoss(16, 32)
    assert isinstance(m.align, nn.Conv2d)
    S = torch.randn(2, 16, 16, 16, requires_grad=True)
    T = torch.randn(2, 32, 16, 16)
    samples = random_samples(2, 2)
    m(S, T, samples).backward()  # first use of the convolution backend
    assert count_aten_calls(lambda: m(S, T, samples)) <= 330
