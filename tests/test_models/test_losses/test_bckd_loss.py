"""BCKD losses against the official formulas (TinyTigerPan/BCKD)."""
import math

import pytest
import torch
import torch.nn.functional as F

import visionkd  # noqa: F401
from visionkd.registry import MODELS


def official_cls_kd(pred, soft_label, weight, avg_factor, beta=1.0):
    """``NovelKDLoss`` of the official code, written out: detached sigmoid
    target, BCE times ``|t - s| ** beta``, class sum, mmdet's weighted mean
    with ``avg_factor``."""
    target = soft_label.sigmoid().detach()
    scale = (target - pred.sigmoid()).abs().pow(beta)
    per_loc = (F.binary_cross_entropy_with_logits(
        pred, target, reduction='none') * scale).sum(dim=1)
    return (per_loc * weight).sum() / avg_factor


def official_reg_kd(pred, soft_targets, points, weight, avg_factor):
    """``loss_score_kd`` of the official ``LDHead.loss_single``: GFL's
    integral, boxes decoded at the points, mmdet's GIoU loss (eps 1e-6)
    against the detached teacher boxes."""
    def decode(logits):
        bins = logits.size(1) // 4
        prob = F.softmax(logits.reshape(-1, bins), dim=1)
        dist = F.linear(prob, torch.linspace(0, bins - 1, bins).to(
            logits)).reshape(-1, 4)
        return torch.stack([points[:, 0] - dist[:, 0],
                            points[:, 1] - dist[:, 1],
                            points[:, 0] + dist[:, 2],
                            points[:, 1] + dist[:, 3]], dim=1)

    b1, b2 = decode(pred), decode(soft_targets).detach()
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    wh = (torch.min(b1[:, 2:], b2[:, 2:]) -
          torch.max(b1[:, :2], b2[:, :2])).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    union = torch.max(area1 + area2 - overlap, torch.tensor(1e-6).to(b1))
    ewh = (torch.max(b1[:, 2:], b2[:, 2:]) -
           torch.min(b1[:, :2], b2[:, :2])).clamp(min=0)
    enclose = torch.max(ewh[:, 0] * ewh[:, 1], torch.tensor(1e-6).to(b1))
    giou = overlap / union - (enclose - union) / enclose
    return ((1 - giou) * weight).sum() / avg_factor


def seeded(n=30, c=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = (2 * torch.randn(n, c, generator=gen)).requires_grad_(True)
    t = (2 * torch.randn(n, c, generator=gen)).requires_grad_(True)
    w = (torch.rand(n, generator=gen) > 0.2).float()
    return s, t, w


@pytest.mark.parametrize('beta', [1.0, 2.0])
def test_cls_equals_official_formula_and_grads(beta):
    s, t, w = seeded()
    loss = MODELS.build(dict(type='BCKDClsLoss', beta=beta, loss_weight=1.5))
    ours = loss(s, t.detach(), weight=w, avg_factor=7.0)
    ref = 1.5 * official_cls_kd(s, t, w, 7.0, beta)
    torch.testing.assert_close(ours, ref)
    g_ours, = torch.autograd.grad(ours, s)
    g_ref, = torch.autograd.grad(ref, s)
    torch.testing.assert_close(g_ours, g_ref)
    assert t.grad is None  # the official target is detached


def test_reg_equals_official_formula_and_grads():
    s, t, w = seeded(c=4 * 17, seed=1)
    gen = torch.Generator().manual_seed(2)
    points = torch.rand(30, 2, generator=gen) * 50  # any anchor centres
    loss = MODELS.build(dict(type='BCKDRegLoss', loss_weight=4.0))
    ours = loss(s, t.detach(), weight=w, avg_factor=5.0)
    ref = 4.0 * official_reg_kd(s, t, points, w, 5.0)
    assert ours.item() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    g_ours, = torch.autograd.grad(ours, s)
    g_ref, = torch.autograd.grad(ref, s)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-3, atol=1e-6)
    assert t.grad is None


def test_cls_hand_value():
    # p_S = 0.5, p_T = 0.75: BCE = ln 2, gap 0.25
    s, t = torch.zeros(1, 1), torch.full((1, 1), math.log(3.0))
    one = MODELS.build(dict(type='BCKDClsLoss'))(s, t)
    assert one.item() == pytest.approx(math.log(2) * 0.25, rel=1e-6)
    two = MODELS.build(dict(type='BCKDClsLoss', beta=2.0))(s, t)
    assert two.item() == pytest.approx(math.log(2) * 0.0625, rel=1e-6)
    # two classes, one location weighted 0, avg_factor 2
    s2, t2 = torch.zeros(2, 2), torch.full((2, 2), math.log(3.0))
    value = MODELS.build(dict(type='BCKDClsLoss'))(
        s2, t2, weight=torch.tensor([1.0, 0.0]), avg_factor=2.0)
    assert value.item() == pytest.approx(2 * math.log(2) * 0.25 / 2,
                                         rel=1e-6)


def test_reg_hand_value():
    # reg_max = 1: distance = P(bin 1). Student: 0.5 on every side (a 1 x 1
    # box), teacher: 0.75 (1.5 x 1.5, enclosing it): GIoU = IoU = 1 / 2.25
    s = torch.zeros(1, 8)
    t = torch.tensor([[0.0, math.log(3.0)] * 4])
    loss = MODELS.build(dict(type='BCKDRegLoss'))
    value = loss(s, t, weight=torch.tensor([2.0]), avg_factor=4.0)
    assert value.item() == pytest.approx(2 * (1 - 1 / 2.25) / 4, rel=1e-5)
    assert loss(s, t).item() == pytest.approx(1 - 1 / 2.25, rel=1e-5)


@pytest.mark.parametrize('name,c', [('BCKDClsLoss', 5), ('BCKDRegLoss', 20)])
def test_zero_for_identical_inputs_and_dtype(name, c):
    x = torch.randn(9, c, dtype=torch.float64)
    loss = MODELS.build(dict(type=name))
    value = loss(x, x.clone(), weight=torch.ones(9, dtype=torch.float64),
                 avg_factor=3.0)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(0.0, abs=1e-7)


def test_bad_input():
    cls = MODELS.build(dict(type='BCKDClsLoss'))
    reg = MODELS.build(dict(type='BCKDRegLoss'))
    with pytest.raises(ValueError, match='same shape'):
        cls(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match='one per location'):
        cls(torch.zeros(3, 2), torch.zeros(3, 2), weight=torch.ones(3, 2))
    with pytest.raises(ValueError, match='4 \\* \\(reg_max'):
        reg(torch.zeros(3, 6), torch.zeros(3, 6))
    with pytest.raises(ValueError, match='beta must be positive'):
        MODELS.build(dict(type='BCKDClsLoss', beta=0.0))
