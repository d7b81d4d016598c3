"""Math of the segmentation distillation losses (SKD, IFVD, CIRKD, DIST)."""
import inspect
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from visionkd.models.losses import cirkd_memory_loss, cirkd_minibatch_loss
from visionkd.models.losses.cirkd_memory_loss import CIRKDMemoryLoss
from visionkd.models.losses.cirkd_minibatch_loss import CIRKDMiniBatchLoss
from visionkd.models.losses.dist_loss import DISTLoss
from visionkd.models.losses.ifvd_loss import IFVDLoss
from visionkd.models.losses.pair_wise_affinity_loss import PairWiseAffinityLoss
from visionkd.models.losses.pixel_wise_kd_loss import PixelWiseKDLoss
from visionkd.registry import MODELS

NUM_CLASSES = 3

# Constructor arguments and input shapes for the generic checks.
CASES = {
    'PixelWiseKDLoss': (dict(tau=2.0), (2, 4, 5, 6)),
    'PairWiseAffinityLoss': (dict(), (2, 4, 5, 6)),
    'IFVDLoss': (dict(num_classes=NUM_CLASSES), (2, 4, 5, 6)),
    'CIRKDMiniBatchLoss': (dict(), (2, 4, 5, 6)),
    'CIRKDMemoryLoss': (dict(
        num_classes=NUM_CLASSES, teacher_channels=4, pixel_memory_size=50,
        region_memory_size=10, pixel_contrast_size=12,
        region_contrast_size=6), (2, 4, 5, 6)),
    'DISTLoss': (dict(tau=2.0), (2, 4, 5, 6)),
}
NAMES = sorted(CASES)


def as_samples(labels):
    """Duck-typed SegDataSamples from an (N, H, W) label tensor."""
    return [
        SimpleNamespace(gt_sem_seg=SimpleNamespace(data=lbl[None].long()))
        for lbl in labels
    ]


def random_samples(n, h=10, w=12, num_classes=NUM_CLASSES):
    """Deterministic label maps (input resolution) with ignored pixels."""
    g = torch.Generator().manual_seed(123)
    labels = torch.randint(0, num_classes, (n, h, w), generator=g)
    labels[:, 0, :3] = 255
    return as_samples(labels)


def build(name, **kwargs):
    cfg = dict(CASES[name][0])
    cfg.update(kwargs)
    return MODELS.build(dict(type=name, **cfg))


def call(loss, s, t):
    if 'data_samples' in inspect.signature(loss.forward).parameters:
        return loss(s, t, random_samples(s.shape[0]))
    return loss(s, t)


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


# --------------------------------------------------------------- generic
@pytest.mark.parametrize('name', NAMES)
def test_registered_with_flags(name):
    cls = MODELS.get(name)
    assert cls is not None and cls.__name__ == name
    # spatial sizes are aligned by a ResizeConnector, not by the loss
    assert getattr(cls, 'allow_spatial_mismatch', False) is False
    channels_ok = name in ('PairWiseAffinityLoss', 'IFVDLoss',
                           'CIRKDMiniBatchLoss')
    assert getattr(cls, 'allow_channel_mismatch', False) is channels_ok


@pytest.mark.parametrize('name', NAMES)
def test_zero_for_identical_inputs(name):
    torch.manual_seed(0)
    x = torch.randn(CASES[name][1])
    assert call(build(name), x, x.clone()).item() == pytest.approx(
        0.0, abs=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_non_negative_and_positive_when_different(name):
    torch.manual_seed(1)
    shape = CASES[name][1]
    value = call(build(name), torch.randn(shape), torch.randn(shape))
    assert value.dim() == 0
    assert torch.isfinite(value) and value.item() > 0


@pytest.mark.parametrize('name', NAMES)
def test_gradient_reaches_student(name):
    torch.manual_seed(2)
    shape = CASES[name][1]
    s = torch.randn(shape, requires_grad=True)
    t = torch.randn(shape)  # detached by the distillation term
    call(build(name), s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize('name', NAMES)
def test_loss_weight_scales(name):
    shape = CASES[name][1]
    torch.manual_seed(3)
    s, t = torch.randn(shape), torch.randn(shape)
    torch.manual_seed(4)  # CIRKDMemoryLoss draws its memory and samples
    one = call(build(name), s, t)
    torch.manual_seed(4)
    three = call(build(name, loss_weight=3.0), s, t)
    torch.testing.assert_close(three, 3 * one)


@pytest.mark.parametrize('name', NAMES)
def test_spatial_sizes_are_aligned_by_connector(name):
    torch.manual_seed(5)
    shape = CASES[name][1]
    t = torch.randn(shape)
    s = torch.randn(shape[:2] + (3, 4), requires_grad=True)
    # The loss does not resize: a clear error names the connector.
    with pytest.raises(ValueError, match='ResizeConnector'):
        call(build(name), s, t)
    resize = MODELS.build(dict(type='ResizeConnector'))
    torch.manual_seed(6)
    value = call(build(name), resize(s, target=t), t)
    value.backward()
    assert torch.isfinite(value) and s.grad is not None
    # Same as resizing the student beforehand (bilinear), which is what
    # the losses used to do inside.
    s_up = F.interpolate(s.detach(), shape[2:], mode='bilinear',
                         align_corners=False)
    torch.manual_seed(6)
    torch.testing.assert_close(call(build(name), s_up, t), value.detach())


# ------------------------------------------------------------ pixel-wise
def test_pixel_wise_one_pixel_hand_value():
    s = torch.zeros(1, 2, 1, 1)  # uniform (0.5, 0.5)
    t = torch.log(torch.tensor([0.8, 0.2])).reshape(1, 2, 1, 1)
    expected = kl([0.8, 0.2], [0.5, 0.5])
    assert PixelWiseKDLoss()(s, t).item() == pytest.approx(expected)
    # tau=2: softmax(log p / 2) = (2/3, 1/3); times tau^2 = 4
    expected = 4 * kl([2 / 3, 1 / 3], [0.5, 0.5])
    assert PixelWiseKDLoss(tau=2.0)(s, t).item() == pytest.approx(expected)


def test_pixel_wise_is_mean_over_all_pixels():
    s = torch.zeros(2, 2, 2, 2)
    t = torch.log(torch.tensor([0.8, 0.2])).reshape(1, 2, 1, 1).expand(
        2, 2, 2, 2)
    expected = kl([0.8, 0.2], [0.5, 0.5])
    assert PixelWiseKDLoss()(s, t).item() == pytest.approx(expected)


# ------------------------------------------------------------- pair-wise
def test_pair_wise_hand_value_4x4():
    # One channel: normalised node features are the signs of the block
    # maxima. Teacher: all blocks positive -> affinities all 1.
    t = torch.ones(1, 1, 4, 4)
    s = torch.tensor([[0.5, -3., 1., 1.],
                      [-3., -3., 1., 1.],
                      [2., 2., -1., -1.],
                      [2., 2., -1., -1.]]).reshape(1, 1, 4, 4)
    # Max pooling, kernel 2: node signs (+, +, +, -) -> 6 affinities of -1
    # (error 2^2 = 4 each); mean over the 4 x 4 node pairs: 24 / 16.
    # (Average pooling would make the first block negative: 32 / 16.)
    loss = PairWiseAffinityLoss(pool_scale=0.5)(s, t)
    assert loss.item() == pytest.approx(1.5, rel=1e-6)


def test_pair_wise_pooling_kernel_and_ceil_mode():
    loss = PairWiseAffinityLoss(pool_scale=0.5)
    assert loss.kernel_size(4, 4) == (2, 2)
    assert loss.kernel_size(5, 7) == (2, 3)
    assert loss.kernel_size(1, 1) == (1, 1)
    pooled = loss.pool(torch.randn(1, 3, 5, 7), loss.kernel_size(5, 7))
    assert pooled.shape == (1, 3, 3, 3)  # ceil_mode keeps the border


def _official_pair_wise(feat_S, feat_T, scale):
    """irfanICMLL/structure_knowledge_distillation sim_dis_compute."""

    def similarity(feat):
        norm = (feat**2).sum(dim=1, keepdim=True)**0.5 + 1e-8
        feat = (feat / norm.detach()).reshape(feat.shape[0],
                                              feat.shape[1], -1)
        return torch.einsum('icm,icn->imn', [feat, feat])

    h, w = feat_T.shape[2], feat_T.shape[3]
    k = (int(h * scale), int(w * scale))
    pool = torch.nn.MaxPool2d(k, stride=k, padding=0, ceil_mode=True)
    f_S, f_T = pool(feat_S), pool(feat_T)
    err = (similarity(f_T) - similarity(f_S))**2
    return (err / (f_T.shape[-1] * f_T.shape[-2])**2 / f_T.shape[0]).sum()


def test_pair_wise_matches_official_formula_and_gradient():
    torch.manual_seed(7)
    s = torch.randn(2, 3, 9, 11, requires_grad=True)
    t = torch.randn(2, 5, 9, 11)  # channels may differ
    ref_s = s.detach().clone().requires_grad_(True)
    value = PairWiseAffinityLoss(pool_scale=0.25)(s, t)
    ref = _official_pair_wise(ref_s, t, 0.25)
    torch.testing.assert_close(value, ref)
    value.backward()
    ref.backward()
    torch.testing.assert_close(s.grad, ref_s.grad)


# ------------------------------------------------------------------ IFVD
def _ifvd_hand_inputs():
    labels = torch.tensor([[[0, 0], [1, 255]]])
    # pixels a, b (class 0), c (class 1), d (ignored); C = 2
    t = torch.tensor([[1., 0.], [0., 1.], [1., 1.], [5., -5.]])
    s = torch.tensor([[1., 0.], [1., 0.], [0., 2.], [-7., 3.]])
    t = t.t().reshape(1, 2, 2, 2)
    s = s.t().reshape(1, 2, 2, 2)
    return s, t, labels


def test_ifvd_hand_value_with_ignored_pixel():
    s, t, labels = _ifvd_hand_inputs()
    # Teacher: class-0 prototype (0.5, 0.5) -> cos 1/sqrt(2) at a and b;
    # class 1 -> cos 1 at c. Student: all three cosines are 1. The ignored
    # pixel adds 0 but counts in the N*H*W = 4 denominator.
    expected = 2 * (1 - 1 / math.sqrt(2))**2 / 4
    loss = IFVDLoss(num_classes=2)(s, t, as_samples(labels))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ifvd_labels_resized_nearest():
    s, t, labels = _ifvd_hand_inputs()
    big = labels.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    loss = IFVDLoss(num_classes=2)
    torch.testing.assert_close(
        loss(s, t, as_samples(big)), loss(s, t, as_samples(labels)))


def test_ifvd_ignore_index_respected():
    s, t, labels = _ifvd_hand_inputs()
    loss = IFVDLoss(num_classes=2)
    ref = loss(s, t, as_samples(labels))
    s2, t2 = s.clone(), t.clone()
    s2[..., 1, 1] = torch.tensor([100., -40.])
    t2[..., 1, 1] = torch.tensor([-3., 0.5])
    torch.testing.assert_close(loss(s2, t2, as_samples(labels)), ref)
    # another ignore_index: 7 is ignored, 255 is then out of range
    labels7 = labels.clone()
    labels7[labels7 == 255] = 7
    loss7 = IFVDLoss(num_classes=2, ignore_index=7)
    torch.testing.assert_close(loss7(s2, t2, as_samples(labels7)), ref)


def test_ifvd_all_ignored_is_zero_not_nan():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4)
    labels = torch.full((2, 8, 8), 255)
    value = IFVDLoss(num_classes=4)(s, t, as_samples(labels))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(s.grad).all()


def _official_ifvd(feat_S, feat_T, target, num_classes):
    """YukangWang/IFVD CriterionIFV (target already at feature size)."""
    tar = target.unsqueeze(1).float()
    tar_S = F.interpolate(tar, feat_S.shape[2:], mode='nearest').expand(
        feat_S.size())
    tar_T = F.interpolate(tar, feat_S.shape[2:], mode='nearest').expand(
        feat_T.size())
    center_S, center_T = feat_S.clone(), feat_T.clone()
    for i in range(num_classes):
        m_S = (tar_S == i).float()
        m_T = (tar_T == i).float()
        center_S = (1 - m_S) * center_S + m_S * (
            (m_S * feat_S).sum(-1).sum(-1) /
            (m_S.sum(-1).sum(-1) + 1e-6)).unsqueeze(-1).unsqueeze(-1)
        center_T = (1 - m_T) * center_T + m_T * (
            (m_T * feat_T).sum(-1).sum(-1) /
            (m_T.sum(-1).sum(-1) + 1e-6)).unsqueeze(-1).unsqueeze(-1)
    sim_S = F.cosine_similarity(feat_S, center_S, dim=1)
    sim_T = F.cosine_similarity(feat_T, center_T, dim=1)
    return F.mse_loss(sim_S, sim_T)


def test_ifvd_matches_official_formula_and_gradient():
    torch.manual_seed(8)
    s = torch.randn(2, 3, 6, 7, requires_grad=True)
    t = torch.randn(2, 5, 6, 7)
    labels = torch.randint(0, 4, (2, 6, 7))
    labels[0, :2] = 255
    ref_s = s.detach().clone().requires_grad_(True)
    value = IFVDLoss(num_classes=4)(s, t, as_samples(labels))
    ref = _official_ifvd(ref_s, t, labels, 4)
    torch.testing.assert_close(value, ref)
    value.backward()
    ref.backward()
    torch.testing.assert_close(s.grad, ref_s.grad)


def test_ifvd_checks_data_samples():
    s = torch.randn(2, 3, 4, 4)
    loss = IFVDLoss(num_classes=2)
    with pytest.raises(ValueError, match='data_samples'):
        loss(s, s, None)
    with pytest.raises(ValueError, match='batch'):
        loss(s, s, as_samples(torch.zeros(1, 4, 4, dtype=torch.long)))


# ------------------------------------------------------- CIRKD mini-batch
def test_cirkd_minibatch_cross_image_hand_value():
    # two images of two pixels (H=1, W=2), unit features
    s = torch.tensor([[[1., 0.], [0., 1.]], [[1., 0.], [1., 0.]]])
    t = torch.tensor([[[1., 0.], [1., 0.]], [[0., 1.], [1., 0.]]])
    s = s.transpose(1, 2).reshape(2, 2, 1, 2)  # (B, C, H, W)
    t = t.transpose(1, 2).reshape(2, 2, 1, 2)
    # Similarity rows are softmax(1, 0) = a, softmax(0, 1) (a mirrored) or
    # uniform u. Per pair (i, j), summed over the 2 rows, /2 (batchmean):
    # (0,0): KL(u||a); (0,1): KL(a||u); (1,0): KL(u||a); (1,1): KL(a||u).
    # Averaged over the 4 pairs.
    e = math.e
    a, u = [e / (e + 1), 1 / (e + 1)], [0.5, 0.5]
    expected = (kl(u, a) + kl(a, u)) / 2
    loss = CIRKDMiniBatchLoss(temperature=1.0)(s, t)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_cirkd_minibatch_only_cross_image_pairs_differ():
    # Student image 1 is teacher image 1 rotated by 90 degrees: the
    # same-image similarities agree, only the pairs (0, 1), (1, 0) differ.
    t = torch.eye(2).reshape(1, 2, 1, 2).repeat(2, 1, 1, 1)
    s = t.clone()
    s[1] = torch.tensor([[0., -1.], [1., 0.]]).reshape(2, 1, 2)
    single = [CIRKDMiniBatchLoss(temperature=1.0)(s[i:i + 1], t[i:i + 1])
              for i in range(2)]
    assert [v.item() for v in single] == [0.0, 0.0]
    # (0,1): rows (0,-1)->a vs a, (1,0)->a vs b: KL(b||a) / 2 rows;
    # (1,0): rows (0,1)->b vs a, (-1,0)->b vs b: KL(a||b) / 2 rows;
    # averaged over 4 pairs; KL(a||b) = KL(b||a) here.
    e = math.e
    a, b = [e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)]
    expected = (kl(b, a) / 2 + kl(a, b) / 2) / 4
    assert CIRKDMiniBatchLoss(temperature=1.0)(s, t).item() == \
        pytest.approx(expected, rel=1e-5)


def _official_minibatch(feat_S, feat_T, temperature):
    """winycg/CIRKD CriterionMiniBatchCrossImagePair (CPU)."""
    B, C = feat_S.shape[:2]
    feat_S = F.normalize(feat_S, p=2, dim=1)
    feat_T = F.normalize(feat_T, p=2, dim=1)
    sim_dis = torch.tensor(0.)
    for i in range(B):
        for j in range(B):
            s_sim = feat_S[i].reshape(C, -1).t() @ feat_S[j].reshape(C, -1)
            t_sim = feat_T[i].reshape(feat_T.shape[1], -1).t() @ \
                feat_T[j].reshape(feat_T.shape[1], -1)
            p_s = F.log_softmax(s_sim / temperature, dim=1)
            p_t = F.softmax(t_sim / temperature, dim=1)
            sim_dis = sim_dis + F.kl_div(p_s, p_t, reduction='batchmean')
    return sim_dis / (B * B)


def test_cirkd_minibatch_matches_official_formula():
    torch.manual_seed(9)
    s = torch.randn(3, 4, 3, 5, requires_grad=True)
    t = torch.randn(3, 6, 3, 5)
    ref_s = s.detach().clone().requires_grad_(True)
    value = CIRKDMiniBatchLoss(temperature=0.1)(s, t)
    ref = _official_minibatch(ref_s, t, 0.1)
    torch.testing.assert_close(value, ref)
    value.backward()
    ref.backward()
    torch.testing.assert_close(s.grad, ref_s.grad)


def test_cirkd_minibatch_gathers_under_ddp(monkeypatch):
    """Simulate rank 0 of 2: global batch, gradient to the local part."""
    torch.manual_seed(10)
    s_full = torch.randn(4, 3, 2, 3)
    t_full = torch.randn(4, 3, 2, 3)
    remote = [F.normalize(x[2:], dim=1).flatten(2)
              for x in (s_full, t_full)]
    calls = []

    def fake_all_gather(x):
        calls.append(x)
        return [x, remote[len(calls) - 1]]

    monkeypatch.setattr(cirkd_minibatch_loss, 'get_dist_info',
                        lambda: (0, 2))
    monkeypatch.setattr(cirkd_minibatch_loss, 'all_gather', fake_all_gather)
    local_s = s_full[:2].clone().requires_grad_(True)
    value = CIRKDMiniBatchLoss()(local_s, t_full[:2])
    value.backward()
    assert len(calls) == 2 and not calls[0].requires_grad

    monkeypatch.setattr(cirkd_minibatch_loss, 'get_dist_info',
                        lambda: (0, 1))
    full_s = s_full.clone().requires_grad_(True)
    ref = CIRKDMiniBatchLoss()(full_s, t_full)
    ref.backward()
    torch.testing.assert_close(value, ref)
    # x world_size: DDP averages the 2 processes' gradients (see
    # tests/test_reliability/test_distributed.py for the real 2-process run)
    torch.testing.assert_close(local_s.grad, 2 * full_s.grad[:2])
    # gather=False keeps the local batch only
    monkeypatch.setattr(cirkd_minibatch_loss, 'get_dist_info',
                        lambda: (0, 2))
    local = CIRKDMiniBatchLoss(gather=False)(s_full[:2], t_full[:2])
    assert len(calls) == 2
    monkeypatch.setattr(cirkd_minibatch_loss, 'get_dist_info',
                        lambda: (0, 1))
    torch.testing.assert_close(
        local, CIRKDMiniBatchLoss()(s_full[:2], t_full[:2]))


# --------------------------------------------------------- CIRKD memory
def _memory(**kwargs):
    cfg = dict(num_classes=2, teacher_channels=2, pixel_memory_size=5,
               region_memory_size=3, pixel_contrast_size=4,
               region_contrast_size=2)
    cfg.update(kwargs)
    return CIRKDMemoryLoss(**cfg)


def test_cirkd_memory_buffers_in_state_dict():
    loss = CIRKDMemoryLoss(num_classes=3, teacher_channels=4,
                           pixel_memory_size=7, region_memory_size=5)
    state = loss.state_dict()
    assert state['pixel_queue'].shape == (3, 7, 4)
    assert state['region_queue'].shape == (3, 5, 4)
    assert state['pixel_queue_ptr'].tolist() == [0, 0, 0]
    assert state['region_queue_ptr'].tolist() == [0, 0, 0]
    torch.testing.assert_close(state['pixel_queue'].norm(dim=2),
                               torch.ones(3, 7))
    assert loss.pixel_contrast_per_class == 4096 // 3 + 1
    assert loss.region_contrast_per_class == 1024 // 3 + 1
    assert (loss.temperature, loss.kd_temperature) == (0.1, 1.0)


def test_cirkd_memory_hand_value():
    loss = _memory(pixel_memory_size=2, region_memory_size=1,
                   pixel_contrast_size=2, region_contrast_size=0,
                   temperature=1.0, kd_temperature=1.0).eval()
    e1, e2 = torch.tensor([1., 0.]), torch.tensor([0., 1.])
    loss.pixel_queue.copy_(torch.stack([torch.stack([e1, e1]),
                                        torch.stack([e2, e2])]))
    loss.region_queue.copy_(torch.stack([e1[None], e2[None]]))
    t = e1.reshape(1, 2, 1, 1)
    s = torch.tensor([1., 1.]).reshape(1, 2, 1, 1)  # normalised inside
    labels = torch.zeros(1, 1, 1, dtype=torch.long)
    # student logits are all 1/sqrt(2): uniform distributions
    e = math.e
    pixel = kl([e / (2 * e + 2)] * 2 + [1 / (2 * e + 2)] * 2, [0.25] * 4)
    region = kl([e / (e + 1), 1 / (e + 1)], [0.5, 0.5])
    value = loss(s, t, as_samples(labels))
    assert value.item() == pytest.approx(pixel + region, rel=1e-5)
    weighted = _memory(pixel_memory_size=2, region_memory_size=1,
                       pixel_contrast_size=2, region_contrast_size=0,
                       temperature=1.0, pixel_weight=0.5, region_weight=2.0)
    weighted.load_state_dict(loss.state_dict())
    assert weighted.eval()(s, t, as_samples(labels)).item() == \
        pytest.approx(0.5 * pixel + 2 * region, rel=1e-5)
    # eval mode does not touch the memory
    assert loss.pixel_queue_ptr.tolist() == [0, 0]


def test_cirkd_memory_enqueue_follows_paper():
    torch.manual_seed(11)
    loss = _memory()
    labels = torch.tensor([[[0, 0], [1, 255]]])
    # pixels a, b (class 0), c (class 1), d (ignored)
    t = torch.tensor([[1., 0.], [0., 1.], [3., 4.], [-1., 0.]])
    t = t.t().reshape(1, 2, 2, 2)
    s = torch.randn(1, 2, 2, 2)
    loss(s, t, as_samples(labels))
    r2 = 1 / math.sqrt(2)
    torch.testing.assert_close(loss.region_queue[0, 0],
                               torch.tensor([r2, r2]))
    torch.testing.assert_close(loss.region_queue[1, 0],
                               torch.tensor([0.6, 0.8]))
    assert loss.region_queue_ptr.tolist() == [1, 1]
    assert loss.pixel_queue_ptr.tolist() == [2, 1]
    got = sorted(loss.pixel_queue[0, :2].tolist())
    assert got == [[0.0, 1.0], [1.0, 0.0]]
    # class 1's pixel is c (the official code would store pixel a)
    torch.testing.assert_close(loss.pixel_queue[1, 0],
                               torch.tensor([0.6, 0.8]))
    # class 0: 2 + 2 < 5, then 4 + 2 >= 5 -> last 2 slots, pointer 0
    loss(s, t, as_samples(labels))
    assert loss.pixel_queue_ptr.tolist() == [4, 2]
    assert loss.region_queue_ptr.tolist() == [2, 2]
    loss.pixel_queue[0, 3:].zero_()
    loss(s, t, as_samples(labels))
    assert loss.pixel_queue_ptr.tolist() == [0, 3]
    assert loss.region_queue_ptr.tolist() == [0, 0]  # wraps at 3
    assert sorted(loss.pixel_queue[0, 3:].tolist()) == got


def test_cirkd_memory_reproducible_with_manual_seed():
    shape = (2, 2, 4, 4)
    results = []
    for _ in range(2):
        torch.manual_seed(12)
        loss = _memory()
        s, t = torch.randn(shape), torch.randn(shape)
        labels = torch.randint(0, 2, (2, 4, 4))
        values = [loss(s, t, as_samples(labels)) for _ in range(3)]
        results.append((values, loss.pixel_queue.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_cirkd_memory_all_ignored_is_zero_not_nan():
    loss = _memory()
    s = torch.randn(2, 2, 3, 3, requires_grad=True)
    t = torch.randn(2, 2, 3, 3)
    value = loss(s, t, as_samples(torch.full((2, 3, 3), 255)))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(s.grad).all()
    assert loss.pixel_queue_ptr.tolist() == [0, 0]


def test_cirkd_memory_needs_teacher_channels():
    loss = _memory(teacher_channels=4)
    s, t = torch.randn(1, 3, 2, 2), torch.randn(1, 4, 2, 2)
    labels = as_samples(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='connector'):
        loss(s, t, labels)


def test_cirkd_memory_gathers_queue_updates_under_ddp(monkeypatch):
    loss = _memory()
    remote_t = F.normalize(torch.randn(1, 2, 2, 2), dim=1)
    remote_l = torch.ones(1, 2, 2, dtype=torch.long)

    def fake_all_gather(x):  # keys (N, C, H, W), then labels (N, H, W)
        return [x, remote_t if x.dim() == 4 else remote_l]

    monkeypatch.setattr(cirkd_memory_loss, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(cirkd_memory_loss, 'all_gather', fake_all_gather)
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    loss(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2),
         as_samples(labels))
    # local image fills class 0, the remote one class 1
    assert loss.region_queue_ptr.tolist() == [1, 1]
    torch.testing.assert_close(
        loss.region_queue[1, 0], F.normalize(remote_t.mean((2, 3)),
                                             dim=1)[0])


# ------------------------------------------------------------------ DIST
def test_dist_two_pixel_three_class_hand_value():
    p_s = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.4, 0.4]])
    p_t = torch.tensor([[0.6, 0.3, 0.1], [0.3, 0.2, 0.5]])
    # (N=1, C=3, H=1, W=2) logits whose softmax are the rows above
    s = p_s.log().t().reshape(1, 3, 1, 2)
    t = p_t.log().t().reshape(1, 3, 1, 2)
    # inter (rows, x30 and centred): (5,-1,-4).(8,-1,-7) = 69,
    # (-4,2,2).(-1,-4,5) = 6
    r1 = 69 / math.sqrt(42 * 114)
    r2 = 6 / math.sqrt(24 * 42)
    inter = 1 - (r1 + r2) / 2
    # intra (columns over 2 pixels): signs of the changes (+, -, +)
    intra = 1 - (1 - 1 + 1) / 3
    loss = DISTLoss()
    assert loss(s, t).item() == pytest.approx(inter + intra, abs=1e-5)
    assert DISTLoss(beta=2.0, gamma=0.5)(s, t).item() == pytest.approx(
        2 * inter + 0.5 * intra, abs=1e-5)
    # (N, C) logits are the same rows
    assert loss(p_s.log(), p_t.log()).item() == pytest.approx(
        inter + intra, abs=1e-5)


def test_dist_temperature():
    torch.manual_seed(13)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    expected = 4 * DISTLoss()(s / 2, t / 2)
    torch.testing.assert_close(DISTLoss(tau=2.0)(s, t), expected)


# ---------------------------------------------------- real mmseg samples
def test_ifvd_and_memory_with_real_seg_data_samples():
    structures = pytest.importorskip('mmseg.structures')
    from mmengine.structures import PixelData
    s, t, labels = _ifvd_hand_inputs()
    samples = []
    for lbl in labels:
        sample = structures.SegDataSample()
        sample.gt_sem_seg = PixelData(data=lbl[None])
        samples.append(sample)
    loss = IFVDLoss(num_classes=2)
    torch.testing.assert_close(loss(s, t, samples),
                               loss(s, t, as_samples(labels)))
    torch.manual_seed(14)
    value = _memory()(s, t, samples)
    assert torch.isfinite(value) and value.item() > 0

