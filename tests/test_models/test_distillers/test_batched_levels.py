"""A feature term over FPN levels: one loss call for all levels."""
import pytest
import torch
from mmengine.registry import DefaultScope

from tests.test_models.test_distillers.helpers import StubRecords, build_term
from visionkd.models.losses import PKDLoss
from visionkd.utils import count_aten_calls

SIZES = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # a 5-level FPN
LOSSES = [dict(type='PKDLoss', loss_weight=2.0),
          dict(type='ChannelWiseDivergence', tau=2.0),
          dict(type='ATLoss'),
          dict(type='FeatureMSELoss', normalize=True)]
IDS = [cfg['type'] for cfg in LOSSES]


def fpn(c_s=3, c_t=4, n=2, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = [torch.randn(n, c_s, h, w, generator=gen, dtype=dtype)
         .requires_grad_() for h, w in SIZES]
    t = [torch.randn(n, c_t, h, w, generator=gen, dtype=dtype) * 2 + 1
         for h, w in SIZES]
    return s, t


def make_term(loss, batch_levels, s, t, **cfg):
    """A term with per-level ConvConnectors, seeded (same weights for
    every ``batch_levels``)."""
    torch.manual_seed(0)
    cfg = dict(student='neck', teacher='neck', loss=loss,
               connector=dict(type='ConvConnector'), **cfg)
    dry_s, dry_t = ([x.detach().float() for x in xs] for xs in (s, t))
    with DefaultScope.overwrite_default_scope('visionkd'):
        term = build_term('fpn', cfg, dry_s, dry_t).to(s[0].dtype)
    term.batch_levels = batch_levels
    return term


def run(term, s, t):
    """Values per key and gradients of the student levels and connectors."""
    out = term(StubRecords(s, t))
    leaves = list(s) + list(term.parameters())
    grads = torch.autograd.grad(sum(v * (i + 1) for i, v in enumerate(
        out.values())), leaves, allow_unused=True)  # unused: levels left out
    return out, grads


@pytest.mark.parametrize('loss', LOSSES, ids=IDS)
def test_one_call_equals_the_per_level_calls(loss):
    s, t = fpn()
    batched, per_level = (make_term(loss, mode, s, t)
                          for mode in (True, False))
    assert batched.one_call_for_all_levels(s[0].device)
    assert not per_level.one_call_for_all_levels(s[0].device)
    out, grads = run(batched, s, t)
    ref, ref_grads = run(per_level, s, t)
    assert list(out) == list(ref) == [f'loss_kd_fpn_l{i}' for i in range(5)]
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], rtol=1e-12,
                                   atol=1e-14)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)


def test_level_subset_and_weights_in_one_call():
    s, t = fpn()
    cfg = dict(levels=[3, 0, 1], level_weights=[0.5, 2.0, 3.0])
    loss = dict(type='ChannelWiseDivergence')
    out, grads = run(make_term(loss, True, s, t, **cfg), s, t)
    ref, ref_grads = run(make_term(loss, False, s, t, **cfg), s, t)
    assert list(out) == ['loss_kd_fpn_l3', 'loss_kd_fpn_l0',
                         'loss_kd_fpn_l1']
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], rtol=1e-12,
                                   atol=1e-14)
    assert [g is None for g in grads[:5]] == [False, False, True, False,
                                              True]
    for g, r in zip(grads, ref_grads):
        if r is not None:
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize('loss', LOSSES, ids=IDS)
def test_one_call_makes_fewer_operator_calls(loss):
    s, t = fpn(dtype=torch.float32)
    counts = {}
    for mode in (True, False):
        term, records = make_term(loss, mode, s, t), StubRecords(s, t)
        counts[mode] = count_aten_calls(
            lambda term=term, records=records: sum(term(records).values()))
    # measured (5 levels): PKD 364 vs 885, CWD 306 vs 403, AT 328 vs 738
    assert counts[True] < counts[False], counts


def test_auto_runs_per_level_on_the_cpu(monkeypatch):
    s, t = fpn()
    term = make_term(dict(type='PKDLoss'), 'auto', s, t)
    assert type(term).batch_levels == 'auto'
    assert not term.one_call_for_all_levels(torch.device('cpu'))
    assert term.one_call_for_all_levels(torch.device('cuda'))

    def no_call(*args):
        raise AssertionError('forward_levels called on the CPU')

    monkeypatch.setattr(PKDLoss, 'forward_levels', no_call)
    term(StubRecords(s, t))
    term.batch_levels = True
    with pytest.raises(AssertionError, match='on the CPU'):
        term(StubRecords(s, t))


def test_per_level_calls_where_one_call_would_differ():
    s, t = fpn()
    term = make_term(dict(type='PKDLoss'), True, s, t)
    dev = s[0].device
    assert term.one_call_for_all_levels(dev)
    # a level's loss with other settings: each level its own loss
    term.losses[2].loss_weight = 3.0
    assert not term.one_call_for_all_levels(dev)
    ref = make_term(dict(type='PKDLoss'), False, s, t)
    out, base = term(StubRecords(s, t)), ref(StubRecords(s, t))
    torch.testing.assert_close(out['loss_kd_fpn_l2'],
                               3 * base['loss_kd_fpn_l2'])
    term.losses[2].loss_weight = 1.0
    # forward hooks see every level's call
    seen = []
    handle = term.losses[4].register_forward_hook(
        lambda mod, args, value: seen.append(value))
    assert not term.one_call_for_all_levels(dev)
    term(StubRecords(s, t))
    assert len(seen) == 1
    handle.remove()
    # a forward replaced on the instance (as compile_losses does)
    term.losses[0].forward = term.losses[0].forward
    assert not term.one_call_for_all_levels(dev)
    # losses that read data samples or a single level never batch
    one = make_term(dict(type='PKDLoss'), True, s, t, levels=[1])
    assert not one.one_call_for_all_levels(dev)


def test_bad_batch_levels_names_the_attribute():
    s, t = fpn()
    term = make_term(dict(type='PKDLoss'), 'yes', s, t)
    with pytest.raises(ValueError, match="batch_levels must be 'auto', "
                                         "True or False, got 'yes'"):
        term(StubRecords(s, t))


def test_one_call_under_autocast_is_float32():
    s, t = fpn(dtype=torch.float32)
    values = {}
    for mode in (True, False):
        term = make_term(dict(type='PKDLoss'), mode, s, t)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            values[mode] = term(StubRecords(s, t))
    for key, ref in values[False].items():
        assert values[True][key].dtype == ref.dtype == torch.float32
        torch.testing.assert_close(values[True][key], ref, rtol=1e-5,
                                   atol=1e-6)
