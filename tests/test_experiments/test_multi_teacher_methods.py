"""Runner methods with several teachers or a teacher of another family
(issue #15): ``roi_fgd_two`` / ``fgd_from_gfl`` on BCCD's families,
``cwd_two`` / ``cwd_from_ddrnet`` on CamVid's, from configs/multi_teacher."""
import json
import os.path as osp

import pytest
import torch
from mmengine.registry import DefaultScope

from tests.conftest import SHARED_DATA
from tests.test_experiments.helpers import seg_batch
from visionkd.experiments import METHODS, get_preset, methods_for
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.results_report import build_results, write_markdown
from visionkd.experiments.run_configs import model_cfgs, run_config
from visionkd.experiments.run_plan import plan_runs
from visionkd.experiments.scheduler import RunScheduler

CAMVID = osp.join(SHARED_DATA, 'camvid')
BCCD = osp.join(SHARED_DATA, 'bccd')
SEG = DataSpec(CAMVID, 'train', 'val', classes=('a', 'b', 'c'))
DET = DataSpec(BCCD, 'annotations/train.json', 'annotations/val.json',
               classes=('a', 'b', 'c'))


def test_plan_trains_every_teacher_once_and_no_baseline_for_teachers():
    methods = methods_for('det', ['roi_kd', 'roi_fgd_two', 'fgd_from_gfl'])
    plan = plan_runs(methods, [0, 1], 'faster_rcnn', 4, 2)
    assert [r.name for r in plan if r.seed in (None, 0) or
            r.role == 'teacher'][:3] == ['teacher', 'teacher_gfl',
                                         'baseline_seed0']
    assert not any(r.name.startswith('baseline_gfl') for r in plan)
    runs = {r.name: r for r in plan}
    assert runs['roi_fgd_two_seed1'].teachers == ('teacher', 'teacher_gfl')
    assert runs['roi_fgd_two_seed1'].teacher is None
    assert runs['fgd_from_gfl_seed0'].teacher == 'teacher_gfl'
    assert runs['fgd_from_gfl_seed0'].teachers == ()
    assert runs['roi_kd_seed0'].teacher == 'teacher'
    assert {r.arch for r in plan if r.role == 'distill'} == {'faster_rcnn'}
    with pytest.raises(ValueError, match=r"\['roi_fgd_two', 'fgd_from_gfl'\] "
                       'learn from the '
                       'teachers of other families'):
        plan_runs(methods, [0], 'faster_rcnn', 4, 2, assistant='mid')


def test_scheduler_waits_for_every_teacher_and_skips_if_one_failed():
    methods = methods_for('seg', ['cwd_two'])
    plan = plan_runs(methods, [0], 'pspnet', 4, 2)
    assert [r.name for r in plan] == ['teacher', 'teacher_ddrnet',
                                      'baseline_seed0', 'cwd_two_seed0']
    sched = RunScheduler(plan, jobs=8)
    assert [s.run.name for s in sched.ready()] == [
        'teacher', 'teacher_ddrnet', 'baseline_seed0']
    for s in sched.ready():
        sched.mark_started(s.run)
    sched.mark_finished(plan[1], 'ddrnet.pth')
    assert sched.ready() == []  # the PSPNet teacher is still training
    sched.mark_finished(plan[0], 'pspnet.pth')
    (step, ) = sched.ready()
    assert step.run.name == 'cwd_two_seed0'
    assert step.teacher_ckpt == ('pspnet.pth', 'ddrnet.pth')
    failed = RunScheduler(plan, jobs=8)
    for s in failed.ready():
        failed.mark_started(s.run)
    failed.mark_finished(plan[0], 'pspnet.pth')
    failed.mark_failed(plan[1])
    (step, ) = failed.ready()
    assert step.skip and step.run.name == 'cwd_two_seed0'


def test_seg_configs_name_teachers_by_family():
    preset = get_preset('seg', 'tiny')
    psp, _ = model_cfgs(preset, 'pspnet', 3)
    ddr, _ = model_cfgs(preset, 'ddrnet', 3)
    two = run_config(preset, SEG, SEG.classes, 'distill', 'pspnet',
                     METHODS['seg']['cwd_two'], ('a.pth', 'b.pth'))['model']
    assert 'teacher' not in two and 'teacher_ckpt' not in two
    assert two['teachers'] == {'pspnet': dict(model=psp, ckpt='a.pth'),
                               'ddrnet': dict(model=ddr, ckpt='b.pth')}
    logits = two['distill_terms']['logits']
    assert tuple(logits['from_teacher']) == ('pspnet', 'ddrnet')
    assert logits['fuse'] == 'mean'
    assert logits['loss'] == METHODS['seg']['cwd'].build_terms(None)[
        'logits']['loss']
    alone = run_config(preset, SEG, SEG.classes, 'distill', 'pspnet',
                       METHODS['seg']['cwd_from_ddrnet'], 'b.pth')['model']
    assert alone['teacher'] == ddr and alone['teacher_ckpt'] == 'b.pth'
    assert alone['distill_terms'] == METHODS['seg']['cwd'].build_terms(None)


def test_det_terms_take_roi_from_one_teacher_and_fgd_from_the_other():
    preset = get_preset('det', 'cpu-small')
    frcnn, _ = model_cfgs(preset, 'faster_rcnn', 3)
    gfl, _ = model_cfgs(preset, 'gfl', 3)
    two = run_config(preset, DET, DET.classes, 'distill', 'faster_rcnn',
                     METHODS['det']['roi_fgd_two'], ('a.pth', 'b.pth'))[
                         'model']
    assert two['teachers']['faster_rcnn']['model'] == frcnn
    assert two['teachers']['gfl'] == dict(model=gfl, ckpt='b.pth')
    terms = two['distill_terms']
    assert terms['roi']['from_teacher'] == 'faster_rcnn'
    assert terms['fpn']['from_teacher'] == 'gfl'
    # P3-P6: the student FPN's levels 1-4, the GFL FPN's 0-3
    assert terms['fpn']['levels'] == dict(student=[1, 2, 3, 4],
                                          teacher=[0, 1, 2, 3])
    fgd = run_config(preset, DET, DET.classes, 'distill', 'faster_rcnn',
                     METHODS['det']['fgd'], 'a.pth')['model']
    # the same rescaling as the fgd method (same FPN widths)
    assert terms['fpn']['loss'] == fgd['distill_terms']['fpn']['loss']
    assert terms['roi'] == dict(METHODS['det']['roi_kd'].build_terms(None)[
        'roi'], from_teacher='faster_rcnn')
    alone = run_config(preset, DET, DET.classes, 'distill', 'faster_rcnn',
                       METHODS['det']['fgd_from_gfl'], 'b.pth')['model']
    assert alone['teacher'] == gfl and sorted(alone['distill_terms']) == [
        'fpn']
    assert 'from_teacher' not in alone['distill_terms']['fpn']
    # the terms are adapted to the first teacher: the FPN widths agree
    from visionkd.experiments.presets import PRESETS
    from visionkd.experiments.run_configs import model_info
    for p in PRESETS['det'].values():
        infos = [model_info(p, model_cfgs(p, a, 3)[0],
                            model_cfgs(p, 'faster_rcnn', 3)[1], 3)
                 for a in ('faster_rcnn', 'gfl')]
        assert infos[0].teacher_channels == infos[1].teacher_channels


@pytest.mark.parametrize('task, name', [('seg', 'cwd_two'),
                                        ('det', 'roi_fgd_two')])
def test_tiny_two_teachers_train_the_student_only(task, name, det_batch):
    """One step on the tiny preset: both teachers run, the KD losses are
    finite and positive, only the student gets gradients."""
    from visionkd.registry import MODELS
    preset = get_preset(task, 'tiny')
    data = SEG if task == 'seg' else DET
    spec = METHODS[task][name]
    cfg = run_config(preset, data, data.classes, 'distill',
                     preset.default_arch, spec)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(
            'mmseg' if task == 'seg' else 'mmdet'):
        model = MODELS.build(cfg['model'])
    model.train()
    batch = seg_batch(preset.crop, num_classes=3) if task == 'seg' \
        else det_batch
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd')}
    for term in cfg['model']['distill_terms']:  # FGD: one loss per level
        assert any(k.startswith(f'loss_kd_{term}') for k in kd), sorted(kd)
    assert all(torch.isfinite(v) and v > 0 for v in kd.values()), kd
    sum(kd.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.parameters())
    teachers = model.teachers
    assert sorted(teachers) == sorted(spec.teacher_archs)
    for teacher in teachers.values():
        assert all(p.grad is None for p in teacher.parameters())


def test_report_lists_a_teacher_that_only_teaches(tmp_path):
    methods = methods_for('seg', ['cwd', 'cwd_two'])
    results = {'teacher': dict(metric=32.0),
               'teacher_ddrnet': dict(metric=34.0),
               'baseline_seed0': dict(metric=20.0),
               'cwd_seed0': dict(metric=22.0),
               'cwd_two_seed0': dict(metric=23.0)}
    doc = build_results('seg', 'mIoU', [0], results, methods, 'pspnet', {},
                        {})
    assert doc['teachers_only'] == {'ddrnet': dict(metric=34.0)}
    path = str(tmp_path / 'results.md')
    write_markdown(doc, path, 'x')
    text = open(path).read()
    assert '| teacher (ddrnet, teaches only) | 34.0 | | | | |' in text
    assert '| cwd_two | 23.0 | 23.0 | +3.0 | 25 % | – |' in text


@pytest.mark.skipif(not osp.isdir(CAMVID), reason='../shared/data is absent')
def test_tiny_two_teachers_end_to_end(tmp_path):
    """cwd_two with tools/run_experiments.py (tiny, CamVid): both teachers
    trained, their checkpoints in the student's config, a metric."""
    from mmengine.config import Config

    from tools.run_experiments import main
    work = tmp_path / 'two'
    assert main(['--task', 'seg', '--data-root', CAMVID, '--methods',
                 'cwd_two', '--seeds', '0', '--preset', 'tiny',
                 '--work-dir', str(work)]) == 0
    runs = json.loads((work / 'runs.json').read_text())['runs']
    by_name = {r['name']: r for r in runs}
    assert list(by_name) == ['teacher', 'teacher_ddrnet', 'baseline_seed0',
                             'cwd_two_seed0']
    row = by_name['cwd_two_seed0']
    assert row['teacher'] == ['teacher', 'teacher_ddrnet']
    assert row['teacher_ckpt'] == [by_name['teacher']['checkpoint'],
                                   by_name['teacher_ddrnet']['checkpoint']]
    cfg = Config.fromfile(row['config'])
    assert [cfg.model.teachers[k].ckpt for k in ('pspnet', 'ddrnet')] == \
        row['teacher_ckpt']
    doc = json.loads((work / 'results.json').read_text())
    (value, ) = doc['methods']['cwd_two']['metric']
    assert 0.0 <= value <= 100.0
    assert doc['teachers_only']['ddrnet']['metric'] is not None
