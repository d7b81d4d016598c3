"""Student-teacher frameworks as runner methods (issue #15): a teacher at
1.5x input (``cwd_hires``), deep mutual learning (``dml``), an EMA teacher
(``ema_cwd``) and deep-to-shallow self-distillation (``self_aux``), each
taken from its config under configs/."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import SHARED_DATA
from tests.test_experiments.helpers import seg_batch
from visionkd.experiments import METHODS, get_preset, methods_for
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.presets import REPO_ROOT
from visionkd.experiments.run_configs import model_cfgs, run_config
from visionkd.experiments.run_plan import plan_runs
from visionkd.experiments.scheduler import RunScheduler

CAMVID = osp.join(SHARED_DATA, 'camvid')
DATA = DataSpec(CAMVID, 'train', 'val', classes=('a', 'b', 'c'))
FRAMEWORKS = ['cwd_hires', 'dml', 'ema_cwd', 'self_aux']
#: The same frameworks on the real-time DDRNet family (no self_aux: its
#: auxiliary head runs only in training).
DDRNET_FRAMEWORKS = ['cwd_hires_ddrnet', 'dml_ddrnet', 'ema_cwd_ddrnet']


@pytest.mark.parametrize('name', FRAMEWORKS)
def test_framework_is_its_configs(name):
    """The distiller arguments equal the source config's (resolved with
    its ``_base_``), and the terms are the config's."""
    spec = METHODS['seg'][name]
    model = Config.fromfile(osp.join(REPO_ROOT, spec.source)).model
    fw = spec.framework()
    for key, value in fw.items():
        assert model[key] == value, key
    assert spec.build_terms(None) == model.distill_terms.to_dict()
    assert fw == {
        'cwd_hires': {'teacher_input': {'scale_factor': 1.5}},
        'dml': {'teacher_trainable': True, 'teacher_ckpt': None},
        'ema_cwd': {'teacher': {'kind': 'ema', 'decay': 0.999}},
        'self_aux': {'teacher': 'self'}}[name]
    assert spec.needs_teacher_run == (name == 'cwd_hires')
    # one frozen teacher at the student's input: no framework
    assert METHODS['seg']['cwd'].framework() == {}


@pytest.mark.parametrize('name', DDRNET_FRAMEWORKS)
def test_ddrnet_frameworks_are_the_same_configs(name):
    """The DDRNet methods read the same configs: same framework, same
    terms."""
    spec = METHODS['seg'][name]
    psp = METHODS['seg'][name[:-len('_ddrnet')]]
    assert spec.arch == 'ddrnet' and spec.source == psp.source
    assert spec.framework() == psp.framework()
    assert spec.needs_teacher_run == psp.needs_teacher_run
    assert spec.build_terms(None) == psp.build_terms(None)
    assert 'self_aux_ddrnet' not in METHODS['seg']


def test_run_configs_apply_the_framework():
    preset = get_preset('seg', 'tiny')
    teacher, student = model_cfgs(preset, 'pspnet', 3)
    cfgs = {n: run_config(preset, DATA, DATA.classes, 'distill', 'pspnet',
                          METHODS['seg'][n], 'teacher.pth')['model']
            for n in FRAMEWORKS}
    hires = cfgs['cwd_hires']
    assert hires['teacher'] == teacher and \
        hires['teacher_ckpt'] == 'teacher.pth'
    assert hires['teacher_input'] == dict(scale_factor=1.5)
    # mutual learning: the family's teacher trains from scratch with the
    # student, whatever the teacher run left
    dml = cfgs['dml']
    assert dml['teacher'] == teacher and dml['teacher_ckpt'] is None
    assert dml['teacher_trainable'] is True
    assert dml['distill_terms']['logits_back']['direction'] == \
        'student_to_teacher'
    for name, kind in (('ema_cwd', dict(kind='ema', decay=0.999)),
                       ('self_aux', 'self')):
        cfg = cfgs[name]
        assert cfg['teacher'] == kind and cfg['teacher_ckpt'] is None
        assert cfg['student'] == student
    assert 'teacher_input' not in cfgs['ema_cwd']


def test_plan_and_scheduler_need_no_teacher_run_for_own_teachers():
    methods = methods_for('seg', ['cwd', *FRAMEWORKS])
    plan = plan_runs(methods, [0], 'pspnet', 4, 2)
    teachers = {r.name: r.teacher for r in plan if r.role == 'distill'}
    assert teachers == {'cwd_seed0': 'teacher', 'cwd_hires_seed0': 'teacher',
                        'dml_seed0': None, 'ema_cwd_seed0': None,
                        'self_aux_seed0': None}
    sched = RunScheduler(plan, jobs=8)
    steps = sched.ready()
    started = [s.run.name for s in steps]
    # the teacher is still training: only the runs that need it wait
    assert started == ['teacher', 'baseline_seed0', 'dml_seed0',
                       'ema_cwd_seed0', 'self_aux_seed0']
    assert all(s.teacher_ckpt is None for s in steps)
    for s in steps:
        sched.mark_started(s.run)
    sched.mark_finished(plan[0], 'teacher.pth')
    later = sched.ready()
    assert [(s.run.name, s.teacher_ckpt) for s in later] == [
        ('cwd_seed0', 'teacher.pth'), ('cwd_hires_seed0', 'teacher.pth')]
    # the DDRNet family: its own teacher run, only for cwd_hires_ddrnet
    plan = plan_runs(methods_for('seg', DDRNET_FRAMEWORKS), [0], 'pspnet',
                     4, 2)
    assert {r.name: r.teacher for r in plan} == {
        'teacher_ddrnet': None, 'baseline_ddrnet_seed0': None,
        'cwd_hires_ddrnet_seed0': 'teacher_ddrnet',
        'dml_ddrnet_seed0': None, 'ema_cwd_ddrnet_seed0': None}


def test_assistant_refuses_methods_without_a_teacher_run():
    with pytest.raises(ValueError, match=r"\['ema_cwd'\] learn from no "
                       r'trained teacher'):
        plan_runs(methods_for('seg', ['cwd', 'ema_cwd']), [0], 'pspnet', 4,
                  2, assistant='mid')
    with pytest.raises(ValueError, match=r"\['dml'\]"):
        plan_runs(methods_for('seg', ['cwd']), [0], 'pspnet', 4, 2,
                  assistant='mid',
                  assistant_method=METHODS['seg']['dml'])


@pytest.mark.parametrize('name', FRAMEWORKS + DDRNET_FRAMEWORKS)
def test_tiny_framework_trains_the_right_models(name):
    """One training step on the tiny preset: finite KD losses, the student
    gets gradients; a frozen or EMA teacher never does, the mutual-learning
    teacher does (its task loss and the student-to-teacher term)."""
    from visionkd.registry import MODELS
    preset = get_preset('seg', 'tiny')
    spec = METHODS['seg'][name]
    cfg = run_config(preset, DATA, DATA.classes, 'distill',
                     spec.arch or 'pspnet', spec)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg['model'])
    model.init_weights()
    model.train()
    batch = seg_batch(preset.crop, num_classes=3)
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd')}
    assert len(kd) == len(cfg['model']['distill_terms']), sorted(losses)
    assert all(torch.isfinite(v) and v >= 0 for v in kd.values()), kd
    total, _ = model.parse_losses(losses)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.backbone.parameters())
    if name.startswith('dml'):
        online = model.online_teachers['teacher']
        assert any(k.startswith('teacher.decode.loss_') for k in losses), \
            sorted(losses)
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in online.backbone.parameters())
    else:
        assert len(model.online_teachers) == 0
        assert not any(p.requires_grad and p.grad is not None
                       for n, p in model.named_parameters()
                       if not n.startswith('student.'))


@pytest.mark.skipif(not osp.isdir(CAMVID), reason='../shared/data is absent')
def test_tiny_frameworks_end_to_end(tmp_path):
    """The four framework methods with tools/run_experiments.py on CamVid
    (tiny preset, 2 iterations): every run finishes with a metric, the
    EMA state is in the student's checkpoint and the mutual-learning
    teacher's task loss is logged."""
    from tools.run_experiments import main
    work = tmp_path / 'frameworks'
    rc = main(['--task', 'seg', '--data-root', CAMVID, '--methods',
               *FRAMEWORKS, '--seeds', '0', '--preset', 'tiny',
               '--work-dir', str(work)])
    assert rc == 0
    doc = json.loads((work / 'results.json').read_text())
    for name in FRAMEWORKS:
        (value, ) = doc['methods'][name]['metric']
        assert 0.0 <= value <= 100.0, name
    runs = work / 'runs'
    ckpt = json.loads((runs / 'ema_cwd_seed0' / 'result.json').read_text())[
        'checkpoint']
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert any(k.startswith('ema_teachers.teacher.')
               for k in state['state_dict'])
    assert 'teacher.decode.loss_ce' in (runs / 'dml_seed0' /
                                        'run.log').read_text()


def test_det_ema_cwd_trains_from_an_ema_of_the_student(det_batch):
    """Detection ``ema_cwd`` (configs/self_kd): no teacher run, the EMA
    teacher is the student's own model (same FPN widths, no connector),
    CWD on P2-P5 reaches the student and never the EMA."""
    from visionkd.registry import MODELS
    spec = METHODS['det']['ema_cwd']
    assert spec.framework() == {'teacher': {'kind': 'ema', 'decay': 0.999}}
    assert not spec.needs_teacher_run
    plan = plan_runs([spec], [0], 'faster_rcnn', 4, 2)
    assert {r.name: r.teacher for r in plan} == {
        'teacher': None, 'baseline_seed0': None, 'ema_cwd_seed0': None}
    preset = get_preset('det', 'tiny')
    det = DataSpec(osp.join(SHARED_DATA, 'bccd'), 'annotations/train.json',
                   'annotations/val.json', classes=('a', 'b', 'c'))
    cfg = run_config(preset, det, det.classes, 'distill', 'faster_rcnn',
                     spec, 'teacher.pth')['model']
    _, student = model_cfgs(preset, 'faster_rcnn', 3)
    assert cfg['student'] == student and cfg['teacher_ckpt'] is None
    assert 'connector' not in cfg['distill_terms']['fpn']
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg)
    model.train()
    losses = model(**model.data_preprocessor(det_batch, True), mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd_fpn')}
    assert len(kd) == 4 and all(torch.isfinite(v) for v in kd.values())
    sum(kd.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.neck.parameters())
    (ema, ) = model.teachers.values()
    assert all(p.grad is None for p in ema.parameters())


#: Detection frameworks on the Faster R-CNN family and their frameworks.
DET_FRAMEWORKS = {
    'cwd_hires': {'teacher_input': {'scale_factor': 1.5}},
    'dml': {'teacher_trainable': True, 'teacher_ckpt': None}}


@pytest.mark.parametrize('name', sorted(DET_FRAMEWORKS))
def test_det_framework_trains_the_right_models(name, det_batch):
    """Detection ``cwd_hires`` (teacher at 1.5x, configs/teacher_input) and
    ``dml`` (configs/online): the config's framework and terms plus a
    learner-side connector per term; one tiny step reaches the student,
    and the teacher only in ``dml`` (its task loss and ``fpn_back``)."""
    from visionkd.registry import MODELS
    spec = METHODS['det'][name]
    model_cfg = Config.fromfile(osp.join(REPO_ROOT, spec.source)).model
    assert spec.framework() == DET_FRAMEWORKS[name]
    assert spec.needs_teacher_run == (name == 'cwd_hires')
    terms = spec.build_terms(None)
    assert {n: {k: v for k, v in t.items() if k != 'connector'}
            for n, t in terms.items()} == model_cfg.distill_terms.to_dict()
    assert all(t['connector'] == {'type': 'ConvConnector'}
               for t in terms.values())
    preset = get_preset('det', 'tiny')
    det = DataSpec(osp.join(SHARED_DATA, 'bccd'), 'annotations/train.json',
                   'annotations/val.json', classes=('a', 'b', 'c'))
    cfg = run_config(preset, det, det.classes, 'distill', 'faster_rcnn',
                     spec)['model']
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg)
    model.init_weights()
    model.train()
    losses = model(**model.data_preprocessor(det_batch, True), mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd')}
    assert len(kd) == 4 * len(terms), sorted(losses)
    assert all(torch.isfinite(v) and v >= 0 for v in kd.values()), kd
    total, _ = model.parse_losses(losses)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.neck.parameters())
    if name == 'dml':
        teacher = model.online_teachers['teacher']
        assert any(k.startswith('teacher.loss_') for k in losses)
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in teacher.neck.parameters())
    else:  # the teacher's 1.5x FPN levels resized to the student's
        assert 'ResizeConnector' in repr(model.distill_terms['fpn'])
        assert len(model.online_teachers) == 0
        assert all(p.grad is None for n, p in model.named_parameters()
                   if not n.startswith(('student.', 'distill_terms.')))
