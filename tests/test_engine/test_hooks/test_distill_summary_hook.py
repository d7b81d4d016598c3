"""DistillSummaryHook: the start and end summaries, the step timer, and a
real tools/train.py run with TensorBoard as the visualizer backend."""
import glob
import json
import math
import os.path as osp
import re
from types import SimpleNamespace

import pytest
from mmengine.config import Config

import visionkd  # noqa: F401
from tests.conftest import (
    REPO,
    build_distiller,
    run_repo_script,
    tiny_faster_rcnn,
)
from tests.test_models.test_distillers.test_rtmdet_yolox import train_step
from visionkd.registry import HOOKS

MICRO_KD = osp.join(REPO, 'tests', 'data', 'configs',
                    'faster_rcnn_bccd_mini_micro_kd.py')
TERMS = dict(
    fpn=dict(student='auto', teacher='auto', weight=0.5),
    rpn=dict(student='rpn_head.rpn_cls', teacher='rpn_head.rpn_cls',
             loss=dict(type='FeatureMSELoss', loss_weight=2.0)))


class _Logger:
    def __init__(self) -> None:
        self.lines = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)


def _runner(model, **cfg) -> SimpleNamespace:
    return SimpleNamespace(model=model, iter=0, logger=_Logger(), cfg=cfg)


@pytest.fixture(scope='module')
def model():
    """Tiny Faster R-CNNs, FPN 32 (student) and 64 (teacher) wide."""
    return build_distiller('det', TERMS, student=tiny_faster_rcnn(32),
                           teacher=tiny_faster_rcnn(64))


def test_start_summary_lists_teacher_terms_and_added_parameters(model):
    hook = HOOKS.build(dict(type='DistillSummaryHook'))
    runner = _runner(model)
    hook.before_train(runner)
    text, = runner.logger.lines
    # the resolved auto term, its connector, loss and weight
    assert ('fpn [feature]: student neck -> teacher neck, levels '
            '[0, 1, 2, 3, 4]') in text
    assert "connector=dict(type='ConvConnector')" in text
    assert "loss=dict(type='PKDLoss', loss_weight=6.0)" in text
    assert 'weight 0.5;' in text
    assert "loss=dict(type='FeatureMSELoss', loss_weight=2.0)" in text
    # five 1x1 convs 32 -> 64 with bias: 5 * (32 * 64 + 64)
    assert 'parameters 10,560 (connectors 10,560, losses and other 0)' in (
        text)
    assert 'parameters 0 (connectors 0' in text  # rpn: no parameters
    student_n = sum(p.numel() for p in model.student.parameters())
    assert f'student: FasterRCNN, {student_n:,} parameters' in text
    assert (f'parameters added by connectors/losses: 10,560 '
            f'({100 * 10560 / student_n:.2f}% of the student)') in text
    assert 'teacher_ckpt: None' in text
    assert model.step_timer is hook.timer
    hook.after_train(runner)
    assert model.step_timer is None


def test_timer_splits_the_timed_iterations_only(model, det_batch):
    hook = HOOKS.build(dict(type='DistillSummaryHook', time_interval=2,
                            skip_iters=1, teacher_metric=0.40))
    runner = _runner(model, baseline_metric=0.25)
    hook.before_train(runner)
    timed = []
    for it in range(5):
        runner.iter = it
        hook.before_train_iter(runner, batch_idx=it)
        timed.append(hook.timer.active)
        train_step(model, det_batch)
        hook.after_train_iter(runner, batch_idx=it)
    # iteration 0 is warm-up; then one in two: iterations 1 and 3
    assert timed == [False, True, False, True, False]
    assert hook.timed_iters == 2
    teacher = hook.timer.totals['teacher']
    distill = hook.timer.totals['distill']
    assert teacher > 0 and distill > 0
    assert teacher + distill < hook.step_seconds  # parts of the step
    hook.after_val_epoch(runner, {'coco/bbox_mAP': 0.3125,
                                  'coco/bbox_mAP_50': 0.5})
    assert runner.logger.lines[-1] == (
        'DistillSummaryHook: coco/bbox_mAP: student 0.3125 | teacher '
        '0.4000 | baseline 0.2500')
    hook.after_train(runner)
    end = runner.logger.lines[-1]
    step = hook.step_seconds / 2
    assert f'time per iteration: {step:.4f} s (mean of 2 timed' in end
    shares = [float(x) for x in re.findall(r'([\d.]+)%', end)]
    assert len(shares) == 3 and sum(shares) == pytest.approx(100, abs=0.2)
    assert f'teacher forward {"":<22} {teacher / 2:.4f} s' in end


def test_without_the_hook_the_distiller_times_nothing(model, det_batch):
    assert model.step_timer is None

    class Recorder:
        active = False
        parts = []

        def measure(self, part):
            self.parts.append(part)
            import contextlib
            return contextlib.nullcontext()

    rec = Recorder()
    model.step_timer = rec
    try:
        train_step(model, det_batch)
        model.distill_enabled = False
        train_step(model, det_batch)
    finally:
        model.distill_enabled = True
        model.step_timer = None
    # the teacher and the terms, and nothing while distillation is off
    assert rec.parts == ['teacher', 'distill']


def test_a_plain_model_gets_one_line():
    hook = HOOKS.build(dict(type='DistillSummaryHook'))
    runner = _runner(SimpleNamespace())
    hook.before_train(runner)
    assert runner.logger.lines == [
        'DistillSummaryHook: the model is no distiller; nothing to '
        'summarise']
    hook.before_train_iter(runner, 0)
    hook.after_train(runner)
    assert len(runner.logger.lines) == 1
    with pytest.raises(ValueError, match='time_interval must be'):
        HOOKS.build(dict(type='DistillSummaryHook', time_interval=0))


def test_train_py_adds_the_hook_to_distiller_configs_only():
    from tools.train import add_summary_hook
    kd = Config.fromfile(MICRO_KD)
    n = len(kd.custom_hooks)
    assert add_summary_hook(kd)
    assert kd.custom_hooks[-1] == dict(type='visionkd.DistillSummaryHook')
    assert add_summary_hook(kd) and len(kd.custom_hooks) == n + 1  # once
    plain = Config.fromfile(osp.join(REPO, 'tests', 'data', 'configs',
                                     'faster_rcnn_bccd_tiny.py'))
    assert not add_summary_hook(plain)
    assert not any('Summary' in str(h.get('type'))
                   for h in plain.get('custom_hooks', []))


def test_runner_distill_configs_carry_the_teacher_metric(tmp_path):
    from visionkd.experiments.dataset_configs import DataSpec
    from visionkd.experiments.methods import methods_for
    from visionkd.experiments.presets import get_preset
    from visionkd.experiments.run_configs import run_config
    teacher_dir = tmp_path / 'teacher_seed0'
    teacher_dir.mkdir()
    ckpt = teacher_dir / 'iter_10.pth'
    ckpt.write_bytes(b'')
    (teacher_dir / 'result.json').write_text(json.dumps(dict(metric=41.5)))
    preset = get_preset('det', 'tiny')
    data = DataSpec(osp.join(REPO, 'tools', 'demo', 'data', 'bccd_mini'),
                    'annotations/train.json', 'annotations/val.json')
    method = methods_for('det', ['pkd'])[0]
    args = (preset, data, ['a', 'b', 'c'], 'distill', preset.default_arch,
            method)
    cfg = run_config(*args, teacher_ckpt=str(ckpt))
    assert cfg['teacher_metric'] == pytest.approx(0.415)  # COCO's 0-1
    other = tmp_path / 'elsewhere.pth'
    assert 'teacher_metric' not in run_config(*args,
                                              teacher_ckpt=str(other))


def test_train_py_summary_and_tensorboard_event_file(tmp_path):
    """tools/train.py: 2 iterations of a tiny distiller with TensorBoard as
    the only visualizer backend; the summaries are in the log and the
    distillation losses in the event file."""
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )
    cfg = tmp_path / 'kd_tb.py'
    cfg.write_text(
        f'_base_ = [{MICRO_KD!r}]\n'
        'train_cfg = dict(max_iters=2, val_begin=2, val_interval=2)\n'
        'default_hooks = dict(logger=dict(interval=1),\n'
        '                     checkpoint=dict(interval=2))\n'
        "visualizer = dict(type='DetLocalVisualizer', name='visualizer',\n"
        "                  vis_backends=[dict(type='TensorboardVisBackend')])"
        '\nteacher_metric = 0.5\n')
    work = tmp_path / 'work'
    out = run_repo_script('tools/train.py', str(cfg), '--work-dir',
                          str(work))
    assert 'feat [feature]: student neck.fpn_convs.0 -> teacher ' \
        'neck.fpn_convs.0, 1 level(s)' in out
    assert "loss=dict(type='MGDLoss', alpha_mgd=0.001)" in out
    assert 'distillation run summary' in out
    assert re.search(r'coco/bbox_mAP: student [\d.]+ \| teacher 0\.5000 \| '
                     r'baseline n/a', out)
    assert 'mean of 1 timed iteration(s)' in out
    events = glob.glob(str(work / '**' / 'events.out.tfevents.*'),
                       recursive=True)
    assert len(events) == 1, events
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = acc.Tags()['scalars']
    for key in ('loss_kd_feat', 'loss_kd_mgd', 'loss', 'coco/bbox_mAP'):
        assert key in tags, tags
    for key in ('loss_kd_feat', 'loss_kd_mgd'):
        scalars = acc.Scalars(key)
        assert [s.step for s in scalars] == [1, 2]
        assert all(math.isfinite(s.value) for s in scalars)
    # the weight warm-up (0 at iteration 0) reaches the logged value
    assert acc.Scalars('loss_kd_feat')[0].value == 0.0
    assert acc.Scalars('loss_kd_feat')[1].value > 0.0
