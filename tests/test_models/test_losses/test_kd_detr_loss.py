"""KD-DETR's class and box losses on hand-checkable queries."""
import math

import pytest
import torch

from visionkd.models.losses import KDDETRBoxLoss, KDDETRClsLoss
from visionkd.models.losses.kd_detr_loss import generalized_iou

#: KL([3/4, 1/4] || [1/2, 1/2])
KL = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def test_cls_hand_value_and_teacher_confidence_weight():
    s = torch.tensor([[0., 0.]])
    t = torch.tensor([[math.log(3.), 0.]])
    # T = 1: KL averaged over the 2 classes, weight sigmoid(log 3) = 3/4
    loss = KDDETRClsLoss(T=1.0)
    assert loss(s, t).item() == pytest.approx(0.75 * KL / 2, rel=1e-5)
    # T = 2 on doubled logits: same distributions, times T^2 = 4, but the
    # confidence is sigmoid(2 log 3) = 9/10
    loss2 = KDDETRClsLoss(T=2.0)
    assert loss2(2 * s, 2 * t).item() == pytest.approx(0.9 * 4 * KL / 2,
                                                       rel=1e-5)
    # 'sum' over queries (the released code) vs 'mean'; explicit weights
    s3, t3 = s.repeat(3, 1), t.repeat(3, 1)
    w = torch.tensor([1., 0., 2.])
    assert loss(s3, t3, weight=w).item() == pytest.approx(3 * KL / 2,
                                                          rel=1e-5)
    mean = KDDETRClsLoss(T=1.0, reduction='mean')
    assert mean(s3, t3, weight=w).item() == pytest.approx(KL / 2, rel=1e-5)


def test_box_hand_value():
    # (0.5, 0.5, 0.2, 0.2) vs (0.6, 0.5, 0.2, 0.2): L1 mean 0.1 / 4; the
    # xyxy boxes [.4, .4, .6, .6], [.5, .4, .7, .6] overlap 0.02 of a 0.06
    # union, hull 0.06: GIoU = 1/3
    s = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    t = torch.tensor([[0.6, 0.5, 0.2, 0.2]])
    loss = KDDETRBoxLoss()
    want = 5 * 0.025 + 2 * (1 - 1 / 3)
    assert loss(s, t).item() == pytest.approx(want, rel=1e-4)
    # a second, identical query of weight 3 divides by the weight sum 4
    s2, t2 = torch.cat([s, t]), torch.cat([t, t])
    value = loss(s2, t2, weight=torch.tensor([1., 3.]))
    assert value.item() == pytest.approx(want / 4, rel=1e-4)


def test_generalized_iou_disjoint_boxes():
    # [0, 0, 1, 1] and [2, 0, 3, 1]: no overlap, hull 3, union 2
    a = torch.tensor([0., 0., 1., 1.])
    b = torch.tensor([2., 0., 3., 1.])
    assert generalized_iou(a, b).item() == pytest.approx(-1 / 3, rel=1e-5)


def test_shapes_and_settings_are_checked():
    with pytest.raises(ValueError, match='same shape'):
        KDDETRClsLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r'\(\.\.\., 4\)'):
        KDDETRBoxLoss()(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match='one per query'):
        KDDETRClsLoss()(torch.zeros(2, 3), torch.zeros(2, 3),
                        weight=torch.ones(3))
    with pytest.raises(ValueError, match='reduction'):
        KDDETRClsLoss(reduction='none')
    with pytest.raises(ValueError, match='T must be positive'):
        KDDETRClsLoss(T=0)


def test_dtype_is_kept():
    s = torch.rand(2, 5, 4, dtype=torch.float64) * 0.5 + 0.25
    t = torch.rand(2, 5, 4, dtype=torch.float64) * 0.5 + 0.25
    assert KDDETRBoxLoss()(s, t).dtype == torch.float64
    assert KDDETRClsLoss()(s, t).dtype == torch.float64


@pytest.mark.parametrize('loss', [KDDETRClsLoss(), KDDETRBoxLoss()])
def test_fp32_under_bf16_through_the_term(loss):
    """mode='detr_query' calls both losses through ``run_loss``: bf16
    decoder outputs under autocast give a float32 value, close to the
    float32 loss on the same (rounded) inputs, with finite gradients."""
    from visionkd.models.distillers.terms.base_term import BaseDistillTerm
    torch.manual_seed(0)
    s = torch.rand(2, 6, 4).bfloat16().requires_grad_()
    t = torch.rand(2, 6, 4).bfloat16()
    w = torch.rand(2, 6).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = BaseDistillTerm.run_loss(loss, s, t, weight=w)
    want = loss(s.detach().float(), t.float(), weight=w.float())
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want)
    got.backward()
    assert s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad).all()
