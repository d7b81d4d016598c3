"""DistillLossWeightScheduleHook: warm-up and decay of distill weights."""
import logging
import math
from types import SimpleNamespace

import pytest
import torch

import visionkd  # noqa: F401
from tests.conftest import build_distiller
from visionkd.registry import HOOKS


def fake_runner(it: int, max_iters: int = 100, names=('a', 'b')):
    terms = {n: SimpleNamespace(scale=1.0) for n in names}
    model = SimpleNamespace(distill_terms=terms)
    return SimpleNamespace(model=model, iter=it, max_iters=max_iters,
                           logger=logging.getLogger('test'))


def build(**kwargs):
    return HOOKS.build(dict(type='DistillLossWeightScheduleHook', **kwargs))


def test_linear_warmup_then_cosine_decay():
    hook = build(warmup_iters=4, warmup_start=0.2, decay='cosine',
                 end_factor=0.1, end_iter=12)
    # warm-up: 0.2 + 0.8 * it / 4
    for it, want in [(0, 0.2), (1, 0.4), (2, 0.6), (3, 0.8)]:
        assert hook.factor(it) == pytest.approx(want)
    # cosine over [4, 12): 0.1 + 0.9 * (1 + cos(pi * (it - 4) / 8)) / 2
    assert hook.factor(4) == pytest.approx(1.0)
    assert hook.factor(8) == pytest.approx(0.55)
    assert hook.factor(10) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi * 6 / 8)))
    assert hook.factor(12) == pytest.approx(0.1)
    assert hook.factor(50) == pytest.approx(0.1)


def test_linear_step_and_constant_decay():
    lin = build(decay='linear', end_factor=0.0)
    assert [lin.factor(i, max_iters=10) for i in (0, 5, 9, 10)] == \
        pytest.approx([1.0, 0.5, 0.1, 0.0])
    step = build(warmup_iters=2, decay='step', milestones=[5, 8], gamma=0.5)
    assert [step.factor(i) for i in (0, 1, 2, 4, 5, 7, 8, 99)] == \
        pytest.approx([0.0, 0.5, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    const = build(warmup_iters=10)
    assert const.factor(5) == pytest.approx(0.5)
    assert const.factor(10) == const.factor(10**6) == 1.0


def test_sets_selected_terms_from_the_iteration_only():
    hook = build(warmup_iters=10, terms=['a'])
    runner = fake_runner(3)
    hook.before_train(runner)
    hook.before_train_iter(runner, batch_idx=0)
    assert runner.model.distill_terms['a'].scale == pytest.approx(0.3)
    assert runner.model.distill_terms['b'].scale == 1.0
    # resume: a fresh hook at iteration 7 gives what a hook that ran
    # iterations 0..7 gives; nothing is stored between iterations
    ran = build(warmup_iters=10, terms=['a'])
    runner_ran = fake_runner(0)
    for it in range(8):
        runner_ran.iter = it
        ran.before_train_iter(runner_ran, batch_idx=it)
    fresh, runner_fresh = build(warmup_iters=10, terms=['a']), fake_runner(7)
    fresh.before_train_iter(runner_fresh, batch_idx=0)
    assert runner_fresh.model.distill_terms['a'].scale == \
        runner_ran.model.distill_terms['a'].scale == pytest.approx(0.7)
    assert vars(ran) == vars(fresh)


def test_bad_arguments():
    with pytest.raises(ValueError, match='decay must be one of'):
        build(decay='exp')
    with pytest.raises(ValueError, match='needs milestones'):
        build(decay='step')
    with pytest.raises(ValueError, match='end_iter 2 is before'):
        build(warmup_iters=5, end_iter=2)
    with pytest.raises(KeyError, match=r"unknown term\(s\) \['c'\]"):
        build(terms=['c']).before_train(fake_runner(0))


def test_scale_multiplies_the_distill_loss(seg_batch):
    model = build_distiller('seg', dict(logits=dict(
        student='decode_head.conv_seg', teacher='decode_head.conv_seg',
        loss=dict(type='ChannelWiseDivergence', loss_weight=3.0))))
    model.train()
    data = model.data_preprocessor(seg_batch, True)
    torch.manual_seed(0)  # same dropout masks in both passes
    full = model(**data, mode='loss')
    model.distill_terms['logits'].scale = 0.25
    torch.manual_seed(0)
    part = model(**data, mode='loss')
    torch.testing.assert_close(part['loss_kd_logits'],
                               0.25 * full['loss_kd_logits'])
    torch.testing.assert_close(part['decode.loss_ce'], full['decode.loss_ce'])
