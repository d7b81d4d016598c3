"""AutoWeightHook and the calibration under it: weights that reach the
target gradient share, a measurement that leaves no trace, weights kept
across --resume."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import visionkd  # noqa: F401
from tests.conftest import build_distiller
from tests.test_tools import synthetic_seg as S
from tests.test_tools.synthetic_seg import restore_mmengine_globals  # noqa: F401,E501
from visionkd.engine.hooks import AutoWeightHook, auto_weight_hook
from visionkd.engine.hooks.auto_weight_hook import (
    CKPT_KEY,
    Measurement,
    TermMeasurement,
    calibrated_weights,
    measure_terms,
    pasteable,
)
from visionkd.registry import HOOKS

TERMS = dict(fpn=dict(student='neck', teacher='neck',
                      loss=dict(type='PKDLoss', loss_weight=6.0)),
             head=dict(student='rpn_head.rpn_conv',
                       teacher='rpn_head.rpn_conv',
                       loss=dict(type='FeatureMSELoss', loss_weight=1.0)))


def det_batches(seeds):
    from mmdet.testing import demo_mm_inputs
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(demo_mm_inputs(batch_size=2, image_shapes=(3, 96, 128),
                                  num_items=[3, 2], num_classes=3))
    return out


def test_calibrated_weights_reach_the_target_on_other_batches():
    target = 0.5
    torch.manual_seed(0)
    model = build_distiller('det', TERMS)
    before = measure_terms(model, det_batches(range(3)), 3)
    weights = calibrated_weights(before, target)
    assert set(weights) == {'fpn', 'head'}
    for name, w in weights.items():
        # the shares at the configured weights are far from the target
        share = before.terms[name].share
        assert not 0.5 < share / target < 2, (name, share)
        assert w == pytest.approx(target / share)  # weight was 1
        model.distill_terms[name].weight = w
    after = measure_terms(model, det_batches(range(3, 7)), 4)
    for name in weights:
        assert after.terms[name].share == pytest.approx(target, rel=0.2)
        assert after.terms[name].weight == weights[name]
    assert pasteable(dict(fpn=0.012345, head=2.0)) == \
        'model=dict(distill_terms=dict(fpn=dict(weight=0.01235), ' \
        'head=dict(weight=2)))'


def test_max_factor_caps_the_factor():
    meas = Measurement(terms=dict(
        strong=TermMeasurement(2.0, shares=[4.0, 6.0, 5.0]),  # median 5
        weak=TermMeasurement(3.0, shares=[0.1]),
        dead=TermMeasurement(1.0, shares=[0.0])))
    assert calibrated_weights(meas, 1.0) == pytest.approx(
        dict(strong=0.4, weak=30.0))
    # 1: only lowered; the weak term keeps its weight
    assert calibrated_weights(meas, 1.0, max_factor=1.0) == pytest.approx(
        dict(strong=0.4, weak=3.0))
    assert calibrated_weights(meas, 1.0, max_factor=2.0) == pytest.approx(
        dict(strong=0.4, weak=6.0))
    # target 10: the strong term's factor is 2, capped at 1.5
    assert calibrated_weights(meas, 10.0, ['strong'],
                              max_factor=1.5) == pytest.approx(
        dict(strong=3.0))


def test_measurement_leaves_no_trace():
    torch.manual_seed(0)
    model = build_distiller('det', TERMS)
    model.eval()
    model.distill_terms['fpn'].scale = 0.5
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    batches = det_batches([0, 1])
    rng = torch.get_rng_state()
    meas = measure_terms(model, batches, 5)
    assert meas.iters == 2  # the batches ran out first
    assert len(meas.terms['fpn'].shares) == 2
    # measured at scale 1 (the schedule's factor is not calibrated)
    assert meas.terms['fpn'].weight == 1.0
    assert model.distill_terms['fpn'].scale == 0.5
    assert not model.training and model.distill_enabled
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert all(p.grad is None for p in model.parameters())
    # in train mode the forward did update BatchNorm statistics
    assert any('running_mean' in k for k in buffers)


def test_bad_arguments():
    with pytest.raises(ValueError, match='target must be a number > 0'):
        HOOKS.build(dict(type='AutoWeightHook', target=0))
    with pytest.raises(ValueError, match='iters must be an int >= 1'):
        HOOKS.build(dict(type='AutoWeightHook', iters=0))
    for bad in (0, -1.0, True, '1'):
        with pytest.raises(ValueError, match='max_factor must be None or '
                           r'a number > 0 \(1.0: only lower weights\)'):
            HOOKS.build(dict(type='AutoWeightHook', max_factor=bad))


def _run(tmp_path, data, name, hook=True, weight=None, resume=None,
         max_iters=4, max_factor=None):
    cap = '' if max_factor is None else f', max_factor={max_factor!r}'
    hooks = ("custom_hooks = [dict(type='visionkd.AutoWeightHook', "
             f"target=0.5, iters=2, terms=['logits']{cap})]\n"
             if hook else '')
    terms = ("dict(logits=dict(student='decode_head.conv_seg', "
             "teacher='decode_head.conv_seg', loss=dict("
             "type='ChannelWiseDivergence', tau=1.0, loss_weight=3.0)"
             f"{'' if weight is None else f', weight={weight!r}'}))")
    path = S.write_kd_config(
        str(tmp_path / f'{name}.py'), data, None, terms=terms,
        extra=hooks + f'train_cfg = dict(max_iters={max_iters})\n')
    cfg = Config.fromfile(path)
    cfg.work_dir = str(tmp_path / name)
    if resume:
        cfg.resume, cfg.load_from = True, resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _log(runner) -> str:
    (path, ) = glob.glob(osp.join(runner.log_dir, '*.log'))
    with open(path) as f:
        return f.read()


def test_hook_calibrates_logs_and_leaves_training_unchanged(tmp_path):
    data = S.make_dataset(str(tmp_path / 'data'), n_train=8, n_val=2)
    runner = _run(tmp_path, data, 'auto', max_iters=2)
    (hook, ) = [h for h in runner.hooks if isinstance(h, AutoWeightHook)]
    w = hook.weights['logits']
    assert runner.model.distill_terms['logits'].weight == w != 1.0
    log = _log(runner)
    assert ('paste: model=dict(distill_terms=dict(logits=dict(weight='
            f'{w:.4g})))') in log
    assert 'calibrated to gradient share 0.5 (median over 2 batches)' in log
    ckpt = torch.load(osp.join(runner.work_dir, 'iter_2.pth'),
                      weights_only=False)
    assert ckpt[CKPT_KEY] == dict(target=0.5, weights=dict(logits=w))
    # the same run with that weight fixed and no hook trains the same
    # student: the calibration used no data, randomness or BN statistics
    # of the run
    fixed = _run(tmp_path, data, 'fixed', hook=False, weight=w, max_iters=2)
    theirs = fixed.model.state_dict()
    for k, v in runner.model.state_dict().items():
        torch.testing.assert_close(v, theirs[k], msg=k)
    # a cap below the factor (the configured weight is 1) sets the weight
    # to the cap; the same measurement otherwise
    capped = _run(tmp_path, data, 'capped', max_iters=1,
                  max_factor=w / 2)
    assert capped.model.distill_terms['logits'].weight == pytest.approx(
        w / 2)
    assert (f'(median over 2 batches, factor capped at {w / 2:g})'
            in _log(capped))


def test_resume_restores_the_weights_without_calibrating(tmp_path,
                                                         monkeypatch):
    data = S.make_dataset(str(tmp_path / 'data'), n_train=8, n_val=2)
    first = _run(tmp_path, data, 'run')
    w = first.model.distill_terms['logits'].weight

    def no_calibration(*args, **kwargs):
        raise AssertionError('calibrated again on resume')

    monkeypatch.setattr(auto_weight_hook, 'measure_terms', no_calibration)
    resumed = _run(tmp_path, data, 'run', resume=osp.join(
        first.work_dir, 'iter_2.pth'))
    assert resumed.iter == 4
    assert resumed.model.distill_terms['logits'].weight == w
    assert 'restored from the resumed checkpoint' in _log(resumed)
    # a fresh run calibrates (and so reaches the patched function)
    with pytest.raises(AssertionError, match='calibrated again'):
        _run(tmp_path, data, 'fresh')


def test_unknown_term_is_named(tmp_path):
    data = S.make_dataset(str(tmp_path / 'data'), n_train=4, n_val=2)
    path = S.write_kd_config(
        str(tmp_path / 'kd.py'), data, None,
        extra="custom_hooks = [dict(type='visionkd.AutoWeightHook', "
        "terms=['nope'])]\n")
    cfg = Config.fromfile(path)
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(KeyError, match=r"unknown term\(s\) \['nope'\]"):
        Runner.from_cfg(cfg).train()


def test_measurement_leaves_an_ema_teacher_as_it_was():
    """loss mode updates an EMA teacher: the measurement undoes it (weights
    and update count), after the student moved away from the teacher."""
    torch.manual_seed(0)
    terms = dict(fpn=dict(TERMS['fpn']))
    model = build_distiller('det', terms, teacher=dict(kind='ema',
                                                       decay=0.5))
    ema = model.teachers['teacher']
    with torch.no_grad():
        for p in model.student.neck.parameters():
            p.add_(1.0)
    state = {k: v.clone() for k, v in ema.state_dict().items()}
    steps = model.ema_snapshot()['ema_teachers.teacher._steps']
    measure_terms(model, det_batches([0, 1]), 2)
    assert model.ema_snapshot()['ema_teachers.teacher._steps'] == steps
    for k, v in ema.state_dict().items():
        assert torch.equal(v, state[k]), k
    # without the restore, the same loss calls do move it
    model.train()
    model(**model.data_preprocessor(det_batches([0])[0], True), mode='loss')
    assert any(not torch.equal(v, state[k])
               for k, v in ema.state_dict().items())
