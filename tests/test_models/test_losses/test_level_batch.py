"""forward_levels: one call for all FPN levels, the per-level values."""
import pytest
import torch
from mmengine.registry import DefaultScope

from visionkd.models.losses.level_batch import LevelBatch, per_level_values
from visionkd.registry import MODELS
from visionkd.utils import count_aten_calls

#: (loss, constructor arguments): every loss that batches levels, with
#: settings that change its math (temperature, power, reductions).
BATCHED = [
    ('PKDLoss', dict(loss_weight=2.0)),
    ('ChannelWiseDivergence', dict(tau=2.0, loss_weight=3.0)),
    ('ChannelWiseDivergence', dict(tau=0.5)),
    ('ATLoss', dict(loss_weight=5.0)),
    ('ATLoss', dict(p=3)),
    ('FeatureMSELoss', dict()),
    ('FeatureMSELoss', dict(reduction='sum', loss_weight=0.5)),
    ('FeatureMSELoss', dict(normalize=True)),
]
IDS = [f'{n}-{"-".join(f"{k}={v}" for k, v in kw.items())}'
       for n, kw in BATCHED]
SIZES = [(12, 10), (6, 5), (3, 3), (1, 2), (1, 1)]


def build(name, **kwargs):
    with DefaultScope.overwrite_default_scope('visionkd'):
        return MODELS.build(dict(type=name, **kwargs))


def levels(n=2, c=(4, 4), sizes=SIZES, dtype=torch.float64, seed=0):
    """Student leaves and teacher levels; AT may have other channels."""
    gen = torch.Generator().manual_seed(seed)
    s, t = [], []
    for h, w in sizes:
        # offsets per level: the per-level means and maxima differ
        s.append((torch.randn(n, c[0], h, w, generator=gen, dtype=dtype) * 3
                  + len(s)).requires_grad_())
        t.append(torch.randn(n, c[1], h, w, generator=gen, dtype=dtype) * 2
                 - len(t))
    return s, t


def reference(loss, s, t):
    values = torch.stack([loss(a, b) for a, b in zip(s, t)])
    return values, torch.autograd.grad(values.sum() * 1.5, s)


@pytest.mark.parametrize('name,kwargs', BATCHED, ids=IDS)
def test_forward_levels_equals_per_level_calls(name, kwargs):
    loss = build(name, **kwargs)
    assert loss.batches_levels
    channels = (4, 6) if name == 'ATLoss' else (4, 4)
    s, t = levels(c=channels)
    ref, ref_grads = reference(loss, s, t)
    out = loss.forward_levels(s, t)
    grads = torch.autograd.grad(out.sum() * 1.5, s)
    assert out.shape == (len(SIZES), )
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)
    # float32: within float rounding of the per-level calls
    s32 = [x.detach().float().requires_grad_() for x in s]
    t32 = [x.float() for x in t]
    torch.testing.assert_close(loss.forward_levels(s32, t32),
                               reference(loss, s32, t32)[0],
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('name,kwargs', BATCHED[::2], ids=IDS[::2])
def test_one_call_makes_fewer_operator_calls(name, kwargs):
    loss = build(name, **kwargs)
    s, t = levels(dtype=torch.float32)
    per_level = count_aten_calls(
        lambda: sum(loss(a, b) for a, b in zip(s, t)))
    batched = count_aten_calls(lambda: loss.forward_levels(s, t).sum())
    assert batched < per_level, (batched, per_level)


@pytest.mark.parametrize('change', ['batch', 'channels', 'one level'])
def test_levels_that_cannot_be_joined_are_called_per_level(change):
    loss = build('PKDLoss')
    s, t = levels(sizes=SIZES[:3])
    if change == 'batch':  # another batch size on one level
        s[1], t[1] = s[1][:1], t[1][:1]
    elif change == 'channels':
        s[2], t[2] = s[2][:, :2], t[2][:, :2]
    else:
        s, t = s[:1], t[:1]
    assert LevelBatch.of(s, t) is None
    values = loss.forward_levels(s, t)
    assert torch.equal(values, torch.stack(
        [loss(a, b) for a, b in zip(s, t)]))


def test_student_and_teacher_must_match_per_level():
    s, t = levels(sizes=SIZES[:2])
    with pytest.raises(ValueError, match='same shape'):
        build('PKDLoss').forward_levels(s, [t[0], t[1][:, :, :2]])
    with pytest.raises(ValueError, match='2 student levels and 1'):
        per_level_values(build('ATLoss'), s, t[:1])


def test_mse_without_reduction_does_not_batch():
    loss = build('FeatureMSELoss', reduction='none')
    assert not loss.batches_levels
    s, t = levels(sizes=SIZES[:2])
    with pytest.raises(ValueError, match="reduction 'mean' or 'sum'"):
        loss.forward_levels(s, t)


def test_segment_sums_and_spread():
    s, _ = levels(sizes=SIZES[:3])
    batch = LevelBatch.of(s)
    x = batch.join(s)
    assert x.shape == (2, 4, 120 + 30 + 9)
    assert batch.seg.tolist() == [0] * 120 + [1] * 30 + [2] * 9
    sums = batch.sum(x)
    torch.testing.assert_close(
        sums, torch.stack([a.sum((2, 3)) for a in s], dim=2))
    assert torch.equal(batch.amax(x), torch.stack(
        [a.detach().amax((2, 3)) for a in s], dim=2))
    assert torch.equal(batch.spread(sums)[..., 119:121], torch.stack(
        [sums[..., 0], sums[..., 1]], dim=2))


def test_log_softmax_shifts_each_level_by_its_own_maximum():
    # the levels lie 1000 apart: one shift for all levels would underflow
    # exp() of the lower levels to 0 (log 0 = -inf)
    s, _ = levels(sizes=SIZES[:3])
    s = [x.detach() * 10 + 1000 * i for i, x in enumerate(s)]
    batch = LevelBatch.of(s)
    out = batch.log_softmax(batch.join(s))
    assert torch.isfinite(out).all()
    ref = torch.cat([torch.log_softmax(x.flatten(2), dim=2) for x in s], 2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
