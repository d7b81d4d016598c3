"""DistillStopHook turns the distillation terms off on schedule."""
import logging
from types import SimpleNamespace

import pytest

import visionkd  # noqa: F401
from visionkd.registry import HOOKS


def fake_runner(it: int, epoch: int = 0):
    model = SimpleNamespace(distill_enabled=True)
    return SimpleNamespace(model=model, iter=it, epoch=epoch,
                           logger=logging.getLogger('test'))


@pytest.mark.parametrize('it, expected', [(0, True), (9, True), (10, False),
                                          (11, False)])
def test_stop_by_iteration(it, expected):
    hook = HOOKS.build(dict(type='DistillStopHook', stop_iter=10))
    runner = fake_runner(it)
    hook.before_train_iter(runner, batch_idx=0)
    assert runner.model.distill_enabled is expected


def test_stop_by_epoch_and_after_resume():
    hook = HOOKS.build(dict(type='DistillStopHook', stop_epoch=2))
    runner = fake_runner(500, epoch=1)
    hook.before_train_iter(runner, batch_idx=0)
    assert runner.model.distill_enabled
    # a resumed run starts with distillation flagged on: the hook decides
    # from the counters alone
    runner = fake_runner(900, epoch=2)
    hook.before_train_iter(runner, batch_idx=0)
    assert not runner.model.distill_enabled


def test_needs_exactly_one_criterion():
    with pytest.raises(ValueError):
        HOOKS.build(dict(type='DistillStopHook'))
    with pytest.raises(ValueError):
        HOOKS.build(dict(type='DistillStopHook', stop_iter=1, stop_epoch=1))
