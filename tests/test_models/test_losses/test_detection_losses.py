"""Masks and math of the GT-driven detection losses FGD, MGD, FGFI, DeFeat.

Data samples are duck-typed (``SimpleNamespace``) so that everything but
``test_real_det_data_samples`` runs without mmdet.
"""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from visionkd.models.losses.defeat_loss import DeFeatLoss
from visionkd.models.losses.fgd_loss import FGDLoss
from visionkd.models.losses.fgfi_loss import FGFILoss
from visionkd.models.losses.mgd_loss import MGDLoss


def sample(boxes, input_hw=(64, 64), img_shape=None):
    """A DetDataSample look-alike: xyxy pixel boxes of the padded batch."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    meta = dict(batch_input_shape=input_hw, pad_shape=input_hw,
                img_shape=img_shape or input_hw)
    return SimpleNamespace(
        gt_instances=SimpleNamespace(bboxes=boxes), metainfo=meta)


def identity_conv_(conv: nn.Conv2d) -> None:
    """Make a conv with equal in/out channels the identity."""
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
        nn.init.zeros_(conv.bias)


def grads_ok(loss_fn, s, t, *args):
    """Backward and return the loss; the student gets a gradient.

    The teacher comes without grad, as from the distillation term (which
    detaches it); the loss itself does not detach.
    """
    assert not t.requires_grad
    loss = loss_fn(s, t, *args)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert torch.isfinite(s.grad).all()
    return loss


# ---------------------------------------------------------------------------
# FGD
def fgd_reference_masks(samples, H, W):
    """Cell-by-cell FGD masks, written independently of the module."""
    N = len(samples)
    fg = torch.zeros(N, H, W)
    for i, s in enumerate(samples):
        h_in, w_in = s.metainfo['batch_input_shape']
        for x1, y1, x2, y2 in s.gt_instances.bboxes.tolist():
            x1, x2 = math.floor(x1 * W / w_in), math.ceil(x2 * W / w_in)
            y1, y2 = math.floor(y1 * H / h_in), math.ceil(y2 * H / h_in)
            a = 1.0 / ((y2 + 1 - y1) * (x2 + 1 - x1))
            for y in range(max(y1, 0), min(y2 + 1, H)):
                for x in range(max(x1, 0), min(x2 + 1, W)):
                    fg[i, y, x] = max(fg[i, y, x].item(), a)
    bg = (fg == 0).float()
    for i in range(N):
        if bg[i].sum() > 0:
            bg[i] /= bg[i].sum()
    return fg, bg


def fgd_reference_loss(m: FGDLoss, S, T, samples):
    """FGD in the official sqrt-weighted form (same parameters as ``m``)."""
    N, C, H, W = T.shape
    fg, bg = fgd_reference_masks(samples, H, W)

    def att(x):
        v = x.abs()
        sa = H * W * torch.softmax(v.mean(1).reshape(N, -1) / m.temp, 1)
        ca = C * torch.softmax(v.mean((2, 3)) / m.temp, 1)
        return sa.reshape(N, 1, H, W), ca.reshape(N, C, 1, 1)

    sa_t, ca_t = att(T)
    sa_s, ca_s = att(S)
    w = sa_t.sqrt() * ca_t.sqrt()
    l_fg = ((S * w - T * w) * fg[:, None].sqrt()).pow(2).sum() / N
    l_bg = ((S * w - T * w) * bg[:, None].sqrt()).pow(2).sum() / N
    l_at = ((ca_s - ca_t).abs().sum() + (sa_s - sa_t).abs().sum()) / N

    def gc(x, conv_mask, add):
        p = torch.softmax(conv_mask(x).reshape(N, -1), 1)
        ctx = (x.reshape(N, C, -1) * p[:, None]).sum(-1)
        return x + add(ctx.reshape(N, C, 1, 1))

    l_gl = (gc(S, m.conv_mask_s, m.channel_add_conv_s) -
            gc(T, m.conv_mask_t, m.channel_add_conv_t)).pow(2).sum() / N
    return (m.alpha_fgd * l_fg + m.beta_fgd * l_bg + m.gamma_fgd * l_at +
            m.lambda_fgd * l_gl)


def test_fgd_masks_one_box_hand():
    # 64x64 input, 8x8 map: stride 8. Box x 8..24, y 16..40 -> cells
    # x [1, 3], y [2, 5] inclusive (ceil end cell included): 3 x 4 = 12.
    fg, bg = FGDLoss.get_masks([sample([[8, 16, 24, 40]])], 1, 8, 8, 'cpu')
    expected = torch.zeros(8, 8)
    expected[2:6, 1:4] = 1 / 12
    torch.testing.assert_close(fg[0], expected)
    torch.testing.assert_close(bg[0], (expected == 0).float() / 52)
    assert bg.sum().item() == pytest.approx(1.0)


def test_fgd_masks_fractional_overlap_and_border():
    # Box 1: x,y 4..12 -> 0.5..1.5 -> floor 0, ceil 2 -> 3x3, area 1/9.
    # Box 2 (inside box 1's cells): 8..16 -> 1..2 -> 2x2 (1..2), 1/4 wins.
    # Box 3 at the border: 48..64 -> 6..8 -> cells 6..7 kept, area uses
    # the unclipped 3 x 3 like the official code.
    boxes = [[4, 4, 12, 12], [8, 8, 16, 16], [48, 48, 64, 64]]
    fg, _ = FGDLoss.get_masks([sample(boxes)], 1, 8, 8, 'cpu')
    expected = torch.zeros(8, 8)
    expected[0:3, 0:3] = 1 / 9
    expected[1:3, 1:3] = 1 / 4
    expected[6:8, 6:8] = 1 / 9
    torch.testing.assert_close(fg[0], expected)


def test_fgd_masks_use_batch_input_shape():
    # Image 64x64 padded to 64x128; 8x16 map. The box is mapped by the
    # padded width (W / 128), not by img_shape (which would double it).
    s = sample([[0, 0, 32, 32]], input_hw=(64, 128), img_shape=(64, 64))
    fg, _ = FGDLoss.get_masks([s], 1, 8, 16, 'cpu')
    expected = torch.zeros(8, 16)
    expected[0:5, 0:5] = 1 / 25
    torch.testing.assert_close(fg[0], expected)


def test_fgd_zero_gt_and_batch_of_two():
    samples = [sample([[8, 16, 24, 40], [40, 0, 64, 10]]), sample([])]
    fg, bg = FGDLoss.get_masks(samples, 2, 8, 8, 'cpu')
    ref_fg, ref_bg = fgd_reference_masks(samples, 8, 8)
    torch.testing.assert_close(fg, ref_fg)
    torch.testing.assert_close(bg, ref_bg)
    assert fg[1].sum() == 0
    torch.testing.assert_close(bg[1], torch.full((8, 8), 1 / 64))


def test_fgd_matches_reference_value():
    torch.manual_seed(0)
    m = FGDLoss(6, 6, loss_weight=2.0)
    # Non-zero GcBlock output convs so the global term is non-trivial.
    for seq in (m.channel_add_conv_s, m.channel_add_conv_t):
        nn.init.normal_(seq[-1].weight, std=0.5)
    S, T = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    samples = [sample([[8, 16, 24, 40], [48, 48, 64, 64]]),
               sample([[0, 0, 5, 5]])]
    with torch.no_grad():
        got = m(S, T, samples)
        ref = 2.0 * fgd_reference_loss(m, S, T, samples)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_fgd_fused_gradients_match_reference():
    # forward() expands the global term instead of building S + G_s(S) and
    # T + G_t(T); value and every gradient must equal the reference form.
    torch.manual_seed(5)
    m = FGDLoss(6, 6)
    for seq in (m.channel_add_conv_s, m.channel_add_conv_t):
        nn.init.normal_(seq[-1].weight, std=0.5)
        nn.init.normal_(seq[-1].bias, std=0.5)
    S = torch.randn(2, 6, 8, 10, requires_grad=True)
    T = torch.randn(2, 6, 8, 10)
    samples = [sample([[8, 16, 24, 40]]), sample([[40, 0, 64, 30]])]

    def grads(fn):
        m.zero_grad()
        S.grad = None
        value = fn()
        value.backward()
        return value.detach(), S.grad.clone(), {
            n: p.grad.clone() for n, p in m.named_parameters()}

    v_got, gs_got, gp_got = grads(lambda: m(S, T, samples))
    v_ref, gs_ref, gp_ref = grads(
        lambda: fgd_reference_loss(m, S, T, samples))
    torch.testing.assert_close(v_got, v_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gs_got, gs_ref, rtol=1e-4, atol=1e-8)
    assert gp_got.keys() == gp_ref.keys()
    for name in gp_ref:
        torch.testing.assert_close(gp_got[name], gp_ref[name], rtol=1e-4,
                                   atol=1e-8, msg=name)
    # the global term alone equals get_rela_loss
    with torch.no_grad():
        full = m(S, T, samples)
        m.lambda_fgd = 0.0
        no_global = m(S, T, samples)
        rela = m.get_rela_loss(S, T)
    torch.testing.assert_close((full - no_global) / 5e-6, rela, rtol=1e-3,
                               atol=1e-4)


def test_fgd_zero_for_identical_inputs():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 8, 8)
    samples = [sample([[8, 16, 24, 40]]), sample([])]
    # GcBlocks start as the identity (zero last conv), so S == T gives 0.
    assert FGDLoss(8, 8)(x, x.clone(), samples).item() == 0.0


def test_fgd_gradients():
    torch.manual_seed(2)
    m = FGDLoss(4, 8)
    assert isinstance(m.align, nn.Conv2d)
    for seq in (m.channel_add_conv_s, m.channel_add_conv_t):
        nn.init.normal_(seq[-1].weight, std=0.1)
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.randn(2, 8, 8, 8)
    samples = [sample([[8, 16, 24, 40]]), sample([[0, 0, 64, 64]] * 2)]
    grads_ok(m, s, t, samples)
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fgd_official_init():
    torch.manual_seed(3)
    m = FGDLoss(16, 16)
    for seq in (m.channel_add_conv_s, m.channel_add_conv_t):
        assert seq[-1].weight.abs().sum() == 0
        assert seq[-1].bias.abs().sum() == 0
    assert m.conv_mask_s.bias.abs().sum() == 0
    assert m.align is None


def test_fgd_zero_gt_batch_is_finite():
    torch.manual_seed(4)
    s = torch.randn(2, 4, 5, 7, requires_grad=True)
    t = torch.randn(2, 4, 5, 7)
    loss = grads_ok(FGDLoss(4, 4), s, t, [sample([]), sample([])])
    assert torch.isfinite(loss) and loss > 0


# ---------------------------------------------------------------------------
# MGD
def test_mgd_mask_rule_matches_official():
    m = MGDLoss(4, 4, lambda_mgd=0.65)
    x = torch.zeros(3, 4, 20, 30)
    torch.manual_seed(5)
    mask = m.random_mask(x)
    torch.manual_seed(5)
    mat = torch.rand((3, 1, 20, 30))
    official = torch.where(mat > 1 - 0.65, 0, 1).float()
    torch.testing.assert_close(mask, official)
    assert abs(mask.mean().item() - 0.35) < 0.05


def test_mgd_reproducible_under_seed():
    torch.manual_seed(6)
    m = MGDLoss(4, 8)
    s, t = torch.randn(2, 4, 6, 6), torch.randn(2, 8, 6, 6)
    torch.manual_seed(7)
    a = m(s, t)
    torch.manual_seed(7)
    b = m(s, t)
    c = m(s, t)  # next draw, other mask
    assert a.item() == b.item()
    assert a.item() != c.item()


def test_mgd_value_with_identity_generator():
    # The generator sits between student and teacher, so MGD is not zero
    # for identical inputs in general. With an identity generator (dirac
    # convs, non-negative features so the ReLU passes them) it is
    # alpha * sum(((M * S) - T)^2) / N, and zero when nothing is masked.
    torch.manual_seed(8)
    m = MGDLoss(4, 4, alpha_mgd=0.5)
    identity_conv_(m.generation[0])
    identity_conv_(m.generation[2])
    x = torch.rand(2, 4, 6, 6)
    torch.manual_seed(9)
    got = m(x, x.clone())
    torch.manual_seed(9)
    mask = m.random_mask(x)
    expected = 0.5 * (x * mask - x).pow(2).sum() / 2
    torch.testing.assert_close(got, expected)
    assert got > 0
    m.lambda_mgd = 0.0
    assert m(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_mgd_gradients():
    torch.manual_seed(10)
    m = MGDLoss(4, 8, loss_weight=3.0)
    s = torch.randn(2, 4, 6, 6, requires_grad=True)
    t = torch.randn(2, 8, 6, 6)
    torch.manual_seed(11)
    loss = grads_ok(m, s, t)
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    torch.manual_seed(11)
    m.loss_weight = 1.0
    torch.testing.assert_close(m(s, t), loss / 3)


# ---------------------------------------------------------------------------
# FGFI
def one_anchor_fgfi(**kwargs):
    # One 8x8 anchor per location of an 8x8 map (stride 8), centred at
    # (8x, 8y): anchor (x, y) = [8x - 4, 8y - 4, 8x + 4, 8y + 4].
    cfg = dict(stride=8, scales=(1, ), ratios=(1.0, ), base_size=8,
               adapter=False, loss_weight=1.0)
    cfg.update(kwargs)
    return FGFILoss(4, 4, **cfg)


def test_fgfi_anchors_hand():
    m = one_anchor_fgfi()
    anchors = m.grid_anchors(2, 3, 8, 'cpu')
    expected = torch.tensor([[-4, -4, 4, 4], [4, -4, 12, 4], [12, -4, 20, 4],
                             [-4, 4, 4, 12], [4, 4, 12, 12], [12, 4, 20, 12]],
                            dtype=torch.float32)
    torch.testing.assert_close(anchors, expected)
    # Default: 3 ratios x 3 scales on stride 16, mmdet order (ratio-major).
    base = FGFILoss(4, 4).base_anchors(16.0, 'cpu')
    assert base.shape == (9, 4)
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    torch.testing.assert_close(w * h, torch.tensor([16.0**2 * s**2 for s in (
        8, 16, 32)] * 3))
    torch.testing.assert_close(h / w, torch.tensor([0.5] * 3 + [1.0] * 3 +
                                                   [2.0] * 3))


def test_fgfi_mask_hand():
    m = one_anchor_fgfi()
    # Exactly anchor (x=2, y=3): IoU 1 there, 0 at the neighbours.
    mask = m.get_mask([sample([[12, 20, 20, 28]])], 1, 8, 8, 'cpu')
    expected = torch.zeros(8, 8)
    expected[3, 2] = 1
    torch.testing.assert_close(mask[0, 0], expected)
    # 12 px wide: IoU 2/3 with anchor x=2, 1/4 with x=3. Threshold
    # 0.5 * 2/3 = 1/3 keeps only x=2; 0.3 * 2/3 = 0.2 keeps both.
    box = [[12, 20, 24, 28]]
    mask = m.get_mask([sample(box)], 1, 8, 8, 'cpu')
    assert mask.sum() == 1 and mask[0, 0, 3, 2] == 1
    mask = one_anchor_fgfi(thr_factor=0.3).get_mask([sample(box)], 1, 8, 8,
                                                    'cpu')
    assert mask.sum() == 2 and mask[0, 0, 3, 2] == mask[0, 0, 3, 3] == 1


def test_fgfi_mask_matches_brute_force_iou():
    """The separable IoU equals anchor-by-anchor IoU on grid_anchors."""
    torch.manual_seed(20)
    m = FGFILoss(4, 4, stride=16, scales=(2, 4), ratios=(0.5, 1.0, 2.0))
    xy = torch.rand(5, 2) * 150
    boxes = torch.cat([xy, xy + torch.rand(5, 2) * 90 + 2], 1)
    samples = [sample(boxes.tolist(), (160, 192)), sample([], (160, 192))]
    got = m.get_mask(samples, 2, 10, 12, 'cpu')

    anchors = m.grid_anchors(10, 12, 16, 'cpu')  # (H * W * A, 4)
    lt = torch.max(anchors[:, None, :2], boxes[None, :, :2])
    rb = torch.min(anchors[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)

    def area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    iou = inter / (area(anchors)[:, None] + area(boxes)[None] - inter)
    hit = iou > 0.5 * iou.max(0).values
    expected = torch.zeros(2, 1, 10, 12)
    expected[0, 0] = hit.reshape(10, 12, -1).any(-1).float()
    assert expected.sum() > 5
    torch.testing.assert_close(got, expected)


def test_fgfi_loss_value_border_and_batch():
    torch.manual_seed(12)
    m = one_anchor_fgfi(loss_weight=0.5)
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    # Image 0: border box = anchor (7, 7) clipped to the image; image 1:
    # two boxes, exact anchors (0, 0) and (5, 1).
    samples = [sample([[52, 52, 64, 64]]),
               sample([[-4, -4, 4, 4], [36, 4, 44, 12]])]
    mask = m.get_mask(samples, 2, 8, 8, 'cpu')
    expected = torch.zeros(2, 1, 8, 8)
    expected[0, 0, 7, 7] = 1
    expected[1, 0, 0, 0] = expected[1, 0, 1, 5] = 1
    torch.testing.assert_close(mask, expected)
    d2 = (s - t).pow(2).sum(1)  # (N, H, W)
    hand = 0.5 * (d2[0, 7, 7] + d2[1, 0, 0] + d2[1, 1, 5]) / (2 * 3)
    torch.testing.assert_close(m(s, t, samples), hand)


def test_fgfi_zero_for_identical_and_zero_gt():
    torch.manual_seed(13)
    x = torch.randn(2, 4, 8, 8)
    samples = [sample([[8, 8, 40, 40]]), sample([])]
    assert FGFILoss(4, 4, adapter=False)(x, x.clone(), samples).item() == 0
    # The official adapter (conv3x3 + ReLU) made the identity: zero on
    # non-negative features.
    m = FGFILoss(4, 4)
    identity_conv_(m.adapter[0])
    assert m(x.abs(), x.abs(), samples).item() == 0
    # No GT anywhere: no masked location, loss 0 and not NaN.
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = m(s, x, [sample([]), sample([])])
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_fgfi_gradients_and_adapter_init():
    torch.manual_seed(14)
    m = FGFILoss(4, 8, stride=8)
    conv = m.adapter[0]
    assert conv.kernel_size == (3, 3) and isinstance(m.adapter[1], nn.ReLU)
    assert conv.weight.abs().max() <= 2e-4  # truncated normal, std 1e-4
    with torch.no_grad():  # make the ReLU pass something
        conv.bias.fill_(0.1)
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.randn(2, 8, 8, 8)
    samples = [sample([[8, 8, 40, 40]]), sample([[0, 30, 20, 64]] * 3)]
    grads_ok(m, s, t, samples)
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fgfi_stride_inferred_per_level():
    m = FGFILoss(4, 4, stride=None, scales=(1, ), ratios=(1.0, ),
                 adapter=False)
    box = [[8, 8, 24, 24]]
    # 64 / 4 -> stride 16, base 16: exactly the anchor at (1, 1).
    mask = m.get_mask([sample(box)], 1, 4, 4, 'cpu')
    assert mask[0, 0].nonzero().tolist() == [[1, 1]]
    # Stride 8, base 8: anchor (2, 2) lies inside the box (IoU 1/4, the
    # max); its 4-neighbours overlap half (IoU 1/9 < 1/8).
    mask = m.get_mask([sample(box)], 1, 8, 8, 'cpu')
    assert mask[0, 0].nonzero().tolist() == [[2, 2]]


# ---------------------------------------------------------------------------
# DeFeat
def test_defeat_mask_hand():
    m = DeFeatLoss(4, 4, assign_levels=False, adapter=False)
    boxes = [
        [8, 16, 24, 40],  # x 1..3, y 2..5 -> cols [1, 3), rows [2, 5)
        [50, 50, 64, 64],  # border: 6.25..8 -> [6, 8)
        [9, 9, 12, 12],  # 1.1..1.5 -> empty range -> single cell (1, 1)
    ]
    mask = m.get_mask([sample(boxes)], 1, 8, 8, 'cpu')
    expected = torch.zeros(8, 8)
    expected[2:5, 1:3] = 1
    expected[6:8, 6:8] = 1
    expected[1, 1] = 1
    torch.testing.assert_close(mask[0, 0], expected)
    # Zero-width box on the right border marks the last cell (official
    # code would index column 8 of an 8-wide map).
    mask = m.get_mask([sample([[64, 10, 64, 20]])], 1, 8, 8, 'cpu')
    assert mask[0, 0].nonzero().tolist() == [[1, 7]]


def test_defeat_level_assignment():
    m = DeFeatLoss(4, 4, strides=(8, 16), adapter=False)
    small = [2, 2, 31, 31]  # sqrt(30 * 30) = 30 < 56 * 2 -> level 0
    large = [0, 0, 119, 119]  # sqrt(120 * 120) / 56 = 2.1 -> level 1
    s = [sample([small, large], input_hw=(128, 128))]
    torch.testing.assert_close(
        m.box_levels(s[0].gt_instances.bboxes), torch.tensor([0, 1]))
    p3 = m.get_mask(s, 1, 16, 16, 'cpu')  # stride 8
    p4 = m.get_mask(s, 1, 8, 8, 'cpu')  # stride 16
    exp3 = torch.zeros(16, 16)
    exp3[0:3, 0:3] = 1
    exp4 = torch.zeros(8, 8)
    exp4[0:7, 0:7] = 1
    torch.testing.assert_close(p3[0, 0], exp3)
    torch.testing.assert_close(p4[0, 0], exp4)
    with pytest.raises(ValueError, match='stride'):
        m.get_mask(s, 1, 4, 4, 'cpu')  # stride 32 not distilled


def test_defeat_loss_value_hand():
    torch.manual_seed(15)
    m = DeFeatLoss(3, 3, loss_weight_fg=2.0, loss_weight_bg=5.0,
                   strides=(8, ), adapter=False, loss_weight=0.5)
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    samples = [sample([[8, 16, 24, 40]]), sample([])]  # 6 fg cells
    d2 = (s - t).pow(2)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, 2:5, 1:3] = 1
    fg = (d2 * mask).sum() / (2 * 3 * 6)
    bg = (d2 * (1 - mask)).sum() / (2 * 3 * (128 - 6))
    torch.testing.assert_close(m(s, t, samples), 0.5 * (2 * fg + 5 * bg))
    # Level average: 5 strides divide each level's loss by 5.
    m5 = DeFeatLoss(3, 3, 2.0, 5.0, strides=(2, 4, 8, 16, 32),
                    assign_levels=False, adapter=False, loss_weight=0.5)
    torch.testing.assert_close(m5(s, t, samples), m(s, t, samples) / 5)


def test_defeat_zero_identical_zero_gt_and_gradients():
    torch.manual_seed(16)
    x = torch.randn(2, 4, 8, 8)
    samples = [sample([[8, 8, 40, 40]]), sample([])]
    assert DeFeatLoss(4, 4, adapter=False)(x, x.clone(), samples).item() == 0
    m = DeFeatLoss(4, 4)
    identity_conv_(m.adapter)
    assert m(x, x.clone(), samples).item() == pytest.approx(0.0, abs=1e-10)
    m = DeFeatLoss(4, 8)
    assert m.adapter.weight.abs().max() <= 2e-4
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.randn(2, 8, 8, 8)
    loss = grads_ok(m, s, t, [sample([]), sample([])])  # background only
    assert torch.isfinite(loss) and loss > 0
    s.grad = None
    m.zero_grad()
    grads_ok(m, s, t, [sample([[0, 0, 20, 20], [30, 30, 60, 62]]),
                       sample([[8, 8, 16, 16]])])
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------
# All four
SPECS = {
    'FGDLoss': dict(),
    'MGDLoss': dict(),
    'FGFILoss': dict(stride=None, scales=(8, ), adapter_relu=False),
    'DeFeatLoss': dict(strides=(8, 16)),
}


@pytest.mark.parametrize('name', sorted(SPECS))
def test_registered_and_built_per_level_by_distill_term(name):
    """A feature term builds one loss per level and feeds data_samples."""
    from tests.test_models.test_distillers.helpers import (
        StubRecords,
        build_term,
    )
    from visionkd.registry import MODELS
    assert MODELS.get(name) is not None
    torch.manual_seed(17)
    s = [torch.randn(2, 4, 16, 16, requires_grad=True),
         torch.randn(2, 4, 8, 8, requires_grad=True)]
    t = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8)]
    term = build_term('fpn', dict(
        student='neck', teacher='neck', loss=dict(type=name, **SPECS[name])),
        s, t)
    assert len(term.losses) == 2
    assert term.losses[0] is not term.losses[1]
    samples = [sample([[4, 4, 60, 40], [64, 64, 120, 128]], (128, 128)),
               sample([], (128, 128))]
    out = term(StubRecords(s, t), samples)
    assert sorted(out) == ['loss_kd_fpn_l0', 'loss_kd_fpn_l1']
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(x.grad is not None for x in s)


def test_real_det_data_samples():
    """mmdet DetDataSample with HorizontalBoxes gives the same losses."""
    pytest.importorskip('mmcv.ops')
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    boxes = [[[8., 16., 24., 40.], [48., 48., 64., 64.]], []]
    real, fake = [], []
    for i, b in enumerate(boxes):
        ds = DetDataSample(metainfo=dict(
            img_shape=(64, 60), pad_shape=(64, 64),
            batch_input_shape=(64, 64)))
        inst = InstanceData()
        tensor = torch.tensor(b).reshape(-1, 4)
        inst.bboxes = HorizontalBoxes(tensor) if i == 0 else tensor
        inst.labels = torch.zeros(len(tensor), dtype=torch.long)
        ds.gt_instances = inst
        real.append(ds)
        fake.append(sample(b, img_shape=(64, 60)))
    torch.manual_seed(18)
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for loss in (FGDLoss(4, 4), FGFILoss(4, 4, stride=8, scales=(1, 2)),
                 DeFeatLoss(4, 4, strides=(8, ), adapter=False)):
        torch.testing.assert_close(loss(s, t, real), loss(s, t, fake))
        assert loss(s, t, real) > 0


def test_anchors_match_mmdet_anchor_generator():
    # Values of mmdet 3.3 AnchorGenerator(strides=[16], scales=[8],
    # ratios=[0.5, 1.0, 2.0]).grid_priors([(2, 3)]): base anchors, then
    # location-major grid (location (y=0, x=1) is rows 3..5).
    r = 90.5096664428711
    q = 45.25483322143555
    base = torch.tensor([[-r, -q, r, q], [-64., -64., 64., 64.],
                         [-q, -r, q, r]])
    m = FGFILoss(4, 4, scales=(8, ))
    torch.testing.assert_close(m.base_anchors(16.0, 'cpu'), base)
    grid = m.grid_anchors(2, 3, 16, 'cpu')
    assert grid.shape == (18, 4)
    torch.testing.assert_close(grid[3:6], base + torch.tensor(
        [16., 0., 16., 0.]))
    torch.testing.assert_close(grid[15:18], base + torch.tensor(
        [32., 16., 32., 16.]))


def test_fast_on_a_large_level():
    """P2-sized level with many boxes: mask building stays vectorised."""
    import time
    torch.manual_seed(19)
    xy = torch.rand(2, 60, 2) * 700
    wh = torch.rand(2, 60, 2) * 200 + 4
    samples = [sample(torch.cat([xy[i], xy[i] + wh[i]], 1).tolist(),
                      (800, 1216)) for i in range(2)]
    start = time.perf_counter()
    FGDLoss.get_masks(samples, 2, 200, 304, 'cpu')
    FGFILoss(4, 4, stride=4, scales=(8, )).get_mask(samples, 2, 200, 304,
                                                     'cpu')
    DeFeatLoss(4, 4).get_mask(samples, 2, 200, 304, 'cpu')
    assert time.perf_counter() - start < 3.0
