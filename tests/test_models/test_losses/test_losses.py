"""Math of every registered distillation loss."""
import math
from types import SimpleNamespace

import pytest
import torch

import visionkd  # noqa: F401
from visionkd.registry import MODELS

LOSS_NAMES = sorted(
    n for n, c in MODELS.module_dict.items()
    if n.endswith(('Loss', 'Divergence')))

# Constructor arguments, input shape and the ground truth a loss needs
# ('det' boxes, 'seg' label maps or None) for the generic checks. A loss
# registered without an entry here makes test_every_loss_is_covered fail.
SHAPE = (2, 4, 8, 8)
LOSS_CASES = {
    'ATLoss': (dict(), (2, 4, 5, 6), None),
    'ChannelWiseDivergence': (dict(tau=2.0), (2, 4, 5, 6), None),
    'FeatureMSELoss': (dict(), (2, 4, 5, 6), None),
    'KLDivergence': (dict(tau=3.0), (6, 10), None),
    'PKDLoss': (dict(), (2, 4, 5, 6), None),
    'FGDLoss': (dict(student_channels=4, teacher_channels=4), SHAPE, 'det'),
    'MGDLoss': (dict(student_channels=4, teacher_channels=4), SHAPE, None),
    'AfDCDLoss': (dict(student_channels=4, teacher_channels=4, num_groups=2,
                       pool_size=0, patch_size=(2, 2)), SHAPE, None),
    'FGFILoss': (dict(student_channels=4, teacher_channels=4, adapter=False,
                      stride=8, scales=(1, 2), loss_weight=1.0), SHAPE,
                 'det'),
    'DeFeatLoss': (dict(student_channels=4, teacher_channels=4,
                        adapter=False, strides=(8, )), SHAPE, 'det'),
    'PixelWiseKDLoss': (dict(tau=2.0), SHAPE, None),
    'PairWiseAffinityLoss': (dict(), SHAPE, None),
    'IFVDLoss': (dict(num_classes=3), SHAPE, 'seg'),
    'BPKDLoss': (dict(edge_kernel_size=3), SHAPE, 'seg'),
    'CIRKDMiniBatchLoss': (dict(), SHAPE, None),
    'CIRKDMemoryLoss': (dict(num_classes=3, teacher_channels=4,
                             pixel_memory_size=50, region_memory_size=10,
                             pixel_contrast_size=12,
                             region_contrast_size=6), SHAPE, 'seg'),
    'DISTLoss': (dict(tau=2.0), SHAPE, None),
    'RoIKDLoss': (dict(tau=2.0, loss_weight_bg=0.5), (8, 4), 'roi'),
    # CrossKD: (N, C) class logits; (N, reg_max + 1) box side bins
    'KDQualityFocalLoss': (dict(beta=1.0), (8, 4), None),
    'KDKLDivLoss': (dict(T=1.0, class_reduction='sum'), (8, 5), None),
    # BCKD: (N, C) class logits; (N, 4 * (reg_max + 1)) box bin logits
    'BCKDClsLoss': (dict(beta=1.0), (8, 4), None),
    'BCKDRegLoss': (dict(), (8, 16), None),
    # KD-DETR: (N, Q, C) class logits; (N, Q, 4) boxes ('box': the random
    # inputs through a sigmoid, as DETR heads predict normalised boxes)
    'KDDETRClsLoss': (dict(T=2.0), (2, 6, 5), None),
    'KDDETRBoxLoss': (dict(), (2, 6, 4), 'box'),
    # DETRDistill: (N, Q, 3 + 4) class logits and box logits (boxes through
    # a sigmoid); neck features with the teacher's decoder queries
    'DETRDistillMatchLoss': (dict(), (2, 6, 7), 'detr_match'),
    'DETRDistillFeatureLoss': (dict(topk=4), SHAPE, 'detr_feat'),
}
# A random spatial mask and a generator sit between student and teacher;
# DETRDistill's BCE towards the teacher's probabilities is their entropy
# at best (test_detr_distill_loss.py checks that value).
NONZERO_FOR_IDENTICAL = {'MGDLoss', 'AfDCDLoss', 'DETRDistillMatchLoss'}


def samples_for(name, shape):
    """GT for GT-driven losses: duck-typed Det/SegDataSamples, RoI labels."""
    kind = LOSS_CASES[name][2]
    if kind == 'roi':  # RoI sampling labels: classes 0..C-1, background C
        return torch.arange(shape[0]) % shape[1]
    n, _, h, w = shape
    if kind == 'det':  # one box per image, stride-8 input
        boxes = torch.tensor([[8., 8., 40., 32.]])
        meta = dict(batch_input_shape=(8 * h, 8 * w),
                    img_shape=(8 * h, 8 * w))
        return [SimpleNamespace(gt_instances=SimpleNamespace(bboxes=boxes),
                                metainfo=meta) for _ in range(n)]
    gen = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n):
        label = torch.randint(0, 3, (1, h, w), generator=gen)
        label[0, 0, :2] = 255
        out.append(SimpleNamespace(gt_sem_seg=SimpleNamespace(data=label)))
    return out


def build(name, **kwargs):
    cfg = dict(LOSS_CASES[name][0])
    cfg.update(kwargs)
    return MODELS.build(dict(type=name, **cfg))


def _detr_feat_call(loss, s, t):
    gen = torch.Generator().manual_seed(6)
    n, c = s.shape[:2]
    hidden = torch.randn(n, 5, c, generator=gen)
    cls = torch.randn(n, 5, 3, generator=gen)
    box = torch.rand(n, 5, 4, generator=gen) * 0.4 + 0.3
    return loss([s], [t], hidden, cls, box)


def call(name, loss, s, t):
    if LOSS_CASES[name][2] == 'detr_match':
        return sum(loss(s[..., :3], s[..., 3:].sigmoid(), t[..., :3],
                        t[..., 3:].sigmoid()))
    if LOSS_CASES[name][2] == 'detr_feat':
        return _detr_feat_call(loss, s, t)
    if LOSS_CASES[name][2] == 'box':
        return loss(s.sigmoid(), t.sigmoid())
    if LOSS_CASES[name][2] is not None:
        return loss(s, t, samples_for(name, s.shape))
    return loss(s, t)


def test_every_loss_is_covered():
    assert LOSS_NAMES, 'no loss registered'
    assert set(LOSS_NAMES) == set(LOSS_CASES)


@pytest.mark.parametrize('name', LOSS_NAMES)
def test_zero_for_identical_inputs(name):
    if name in NONZERO_FOR_IDENTICAL:
        pytest.skip(f'{name} is not zero for identical inputs by design')
    torch.manual_seed(0)
    x = torch.randn(LOSS_CASES[name][1])
    value = call(name, build(name), x, x.clone())
    assert value.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize('name', LOSS_NAMES)
def test_non_negative_and_positive_when_different(name):
    torch.manual_seed(1)
    shape = LOSS_CASES[name][1]
    value = call(name, build(name), torch.randn(shape), torch.randn(shape))
    assert value.dim() == 0
    assert value.item() > 0


@pytest.mark.parametrize('name', LOSS_NAMES)
def test_gradient_reaches_student(name):
    # The teacher comes detached: the distillation term detaches it, the
    # loss itself is plain math (see test_gradcheck.py for the values).
    torch.manual_seed(2)
    shape = LOSS_CASES[name][1]
    s = torch.randn(shape, requires_grad=True)
    t = torch.randn(shape)
    call(name, build(name), s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize('name', LOSS_NAMES)
def test_loss_weight_scales(name):
    torch.manual_seed(3)
    shape = LOSS_CASES[name][1]
    s, t = torch.randn(shape), torch.randn(shape)
    torch.manual_seed(4)  # losses with random init/masks/memory
    one = call(name, build(name), s, t)
    torch.manual_seed(4)
    three = call(name, build(name, loss_weight=3.0), s, t)
    torch.testing.assert_close(three, 3 * one)


def test_feature_mse_hand_value():
    s = torch.tensor([[[[1., 2.], [3., 4.]]]])
    t = torch.zeros_like(s)
    assert MODELS.build(dict(type='FeatureMSELoss'))(
        s, t).item() == pytest.approx(7.5)
    # normalize: s/||s|| vs 0 -> mean of squares of a unit vector = 1/4
    assert MODELS.build(dict(type='FeatureMSELoss', normalize=True))(
        s, t).item() == pytest.approx(0.25)


def test_at_hand_value():
    # attention maps [1, 0] and [0, 1] (already unit norm) -> mean((1,-1)^2)
    s = torch.tensor([[[[1., 0.]]]])
    t = torch.tensor([[[[0., 1.]]]])
    assert MODELS.build(dict(type='ATLoss'))(s, t).item() == pytest.approx(1.0)
    # channel counts may differ: attention averages over channels
    t2 = torch.cat([t, -t], dim=1)
    assert MODELS.build(dict(type='ATLoss'))(s, t2).item() == pytest.approx(
        1.0)


KL_3_1_VS_UNIFORM = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def test_cwd_hand_value():
    # one channel over 2 locations: p_T = [3/4, 1/4], p_S = [1/2, 1/2]
    s = torch.tensor([[[[0., 0.]]]])
    t = torch.tensor([[[[math.log(3.), 0.]]]])
    loss = MODELS.build(dict(type='ChannelWiseDivergence', tau=1.0))
    assert loss(s, t).item() == pytest.approx(KL_3_1_VS_UNIFORM, rel=1e-5)
    # tau=2 on t*2 gives the same distributions, scaled by tau^2; a second
    # identical channel and sample leave the (N*C) mean unchanged.
    loss2 = MODELS.build(dict(type='ChannelWiseDivergence', tau=2.0))
    s2, t2 = s.repeat(2, 2, 1, 1), (2 * t).repeat(2, 2, 1, 1)
    assert loss2(s2, t2).item() == pytest.approx(
        4 * KL_3_1_VS_UNIFORM, rel=1e-5)


def test_kl_divergence_hand_value():
    s = torch.tensor([[0., 0.]])
    t = torch.tensor([[math.log(3.), 0.]])
    loss = MODELS.build(dict(type='KLDivergence', tau=1.0))
    assert loss(s, t).item() == pytest.approx(KL_3_1_VS_UNIFORM, rel=1e-5)
    # batchmean divides the sum by N: two identical rows keep the value
    assert loss(s.repeat(2, 1), t.repeat(2, 1)).item() == pytest.approx(
        KL_3_1_VS_UNIFORM, rel=1e-5)
    loss_sum = MODELS.build(dict(type='KLDivergence', reduction='sum'))
    assert loss_sum(s.repeat(2, 1), t.repeat(2, 1)).item() == pytest.approx(
        2 * KL_3_1_VS_UNIFORM, rel=1e-5)


def test_kd_quality_focal_hand_value():
    # S = 0 (p = 1/2) towards T = log 3 (p_T = 3/4): BCE = log 2, factor
    # |1/2 - 3/4| = 1/4; beta=2 squares it
    s = torch.tensor([[0.]])
    t = torch.tensor([[math.log(3.)]])
    loss = MODELS.build(dict(type='KDQualityFocalLoss', beta=1.0))
    assert loss(s, t).item() == pytest.approx(math.log(2) / 4, rel=1e-5)
    loss2 = MODELS.build(dict(type='KDQualityFocalLoss', beta=2.0))
    assert loss2(s, t).item() == pytest.approx(math.log(2) / 16, rel=1e-5)
    # per-row weight and avg_factor: (2 * v + 0 * v) / 4
    s2, t2 = s.repeat(2, 3), t.repeat(2, 3)
    value = loss(s2, t2, weight=torch.tensor([2., 0.]), avg_factor=4.0)
    assert value.item() == pytest.approx(3 * 2 * math.log(2) / 4 / 4,
                                         rel=1e-5)


def test_kd_kl_div_hand_value():
    s = torch.tensor([[0., 0.]])
    t = torch.tensor([[math.log(3.), 0.]])
    loss = MODELS.build(dict(type='KDKLDivLoss'))  # bins summed
    assert loss(s, t).item() == pytest.approx(KL_3_1_VS_UNIFORM, rel=1e-5)
    mean = MODELS.build(dict(type='KDKLDivLoss', class_reduction='mean'))
    assert mean(s, t).item() == pytest.approx(KL_3_1_VS_UNIFORM / 2,
                                              rel=1e-5)
    # T=2 on 2 * t: same distributions, times T^2
    hot = MODELS.build(dict(type='KDKLDivLoss', T=2.0))
    assert hot(s, 2 * t).item() == pytest.approx(4 * KL_3_1_VS_UNIFORM,
                                                 rel=1e-5)
    # per-row weights, avg_factor: (0.5 + 1.5) * kl / 4
    value = loss(s.repeat(2, 1), t.repeat(2, 1),
                 weight=torch.tensor([0.5, 1.5]), avg_factor=4.0)
    assert value.item() == pytest.approx(KL_3_1_VS_UNIFORM / 2, rel=1e-5)


def test_pkd_hand_value():
    # one channel with values [1, 2, 3] vs [3, 2, 1]: standardised to
    # [-1, 0, 1] and [1, 0, -1]; MSE = 8/3, halved = 4/3.
    s = torch.tensor([1., 2., 3.]).view(3, 1, 1, 1)
    t = torch.tensor([3., 2., 1.]).view(3, 1, 1, 1)
    loss = MODELS.build(dict(type='PKDLoss'))
    assert loss(s, t).item() == pytest.approx(4 / 3, rel=1e-5)
    # invariant to per-channel affine changes of either side
    assert loss(5 * s + 2, t).item() == pytest.approx(4 / 3, rel=1e-5)
    # tuples of levels are summed
    assert loss((s, s), (t, t)).item() == pytest.approx(8 / 3, rel=1e-5)


def test_pkd_student_resized_by_connector():
    # PKDLoss used to resize the student to the teacher (bilinear) itself;
    # the ResizeConnector does it now, with the same values.
    torch.manual_seed(4)
    t = torch.randn(2, 3, 8, 8)
    s = torch.nn.functional.avg_pool2d(t, 2)
    loss = MODELS.build(dict(type='PKDLoss'))
    resize = MODELS.build(dict(type='ResizeConnector'))
    up = torch.nn.functional.interpolate(s, (8, 8), mode='bilinear')
    torch.testing.assert_close(loss(resize(s, target=t), t), loss(up, t))
    with pytest.raises(ValueError, match='ResizeConnector'):
        loss(s, t)
