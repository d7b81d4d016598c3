"""Teacher assistants in the experiment runner (``--assistant``): the plan
(teacher -> assistant -> student), the scheduler's dependencies, the
configs, the reports and a tiny end-to-end run on BCCD."""
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
from visionkd.experiments.results_plot import _bar_groups
from visionkd.experiments.results_report import build_results, write_markdown
from visionkd.experiments.run_configs import (
    assistant_cfg,
    model_cfgs,
    run_config,
)
from visionkd.experiments.run_plan import plan_runs
from visionkd.experiments.scheduler import RunScheduler

BCCD = osp.join(SHARED_DATA, 'bccd')
CAMVID = osp.join(SHARED_DATA, 'camvid')
DET = DataSpec(BCCD, 'annotations/train.json', 'annotations/val.json',
               classes=('RBC', 'WBC', 'Platelets'))
needs_data = pytest.mark.skipif(not osp.isdir(SHARED_DATA),
                                reason='../shared/data is absent')


def _table(plan):
    return [(r.name, r.role, r.teacher, r.assistant, r.iters) for r in plan]


def test_plan_one_assistant_per_method():
    plan = plan_runs(methods_for('det', ['fitnet', 'pkd']), [0, 1],
                     'faster_rcnn', 4, 2, assistant='mid')
    assert _table(plan) == [
        ('teacher', 'teacher', None, None, 4),
        # distilled from the teacher, for the teacher's iterations
        ('assistant_mid_fitnet', 'assistant', 'teacher', 'mid', 4),
        ('assistant_mid_pkd', 'assistant', 'teacher', 'mid', 4),
        ('baseline_seed0', 'baseline', None, None, 2),
        ('fitnet_seed0', 'distill', 'teacher', None, 2),
        ('fitnet_via_mid_seed0', 'distill', 'assistant_mid_fitnet', 'mid',
         2),
        ('pkd_seed0', 'distill', 'teacher', None, 2),
        ('pkd_via_mid_seed0', 'distill', 'assistant_mid_pkd', 'mid', 2),
        ('baseline_seed1', 'baseline', None, None, 2),
        ('fitnet_seed1', 'distill', 'teacher', None, 2),
        ('fitnet_via_mid_seed1', 'distill', 'assistant_mid_fitnet', 'mid',
         2),
        ('pkd_seed1', 'distill', 'teacher', None, 2),
        ('pkd_via_mid_seed1', 'distill', 'assistant_mid_pkd', 'mid', 2)]
    # an assistant is trained once (seed 0) with its method; the via runs
    # of both seeds share a config
    assert plan[1].method.name == 'fitnet' and plan[1].seed == 0
    assert plan[5].config_name == plan[10].config_name == 'fitnet_via_mid'


def test_plan_one_assistant_method_for_all():
    plan = plan_runs(methods_for('seg', ['cwd', 'dist']), [0], 'pspnet', 4,
                     2, assistant='mid',
                     assistant_method=METHODS['seg']['af_dcd'])
    assert _table(plan) == [
        ('teacher', 'teacher', None, None, 4),
        ('assistant_mid_af_dcd', 'assistant', 'teacher', 'mid', 4),
        ('baseline_seed0', 'baseline', None, None, 2),
        ('cwd_seed0', 'distill', 'teacher', None, 2),
        ('cwd_via_mid_seed0', 'distill', 'assistant_mid_af_dcd', 'mid', 2),
        ('dist_seed0', 'distill', 'teacher', None, 2),
        ('dist_via_mid_seed0', 'distill', 'assistant_mid_af_dcd', 'mid', 2)]
    # the via students keep their own method; the assistant has af_dcd
    assert plan[4].method.name == 'cwd'
    assert plan[1].method.name == 'af_dcd'


def test_plan_assistant_of_another_family_and_given_teacher():
    plan = plan_runs(methods_for('seg', ['cwd_ddrnet']), [0], 'pspnet', 4,
                     2, assistant='mid')
    assert _table(plan)[:2] == [
        ('teacher_ddrnet', 'teacher', None, None, 4),
        ('assistant_mid_cwd_ddrnet', 'assistant', 'teacher_ddrnet', 'mid',
         4)]
    # a given teacher (evaluation only) still teaches the assistant
    given = plan_runs(methods_for('det', ['fitnet']), [0], 'faster_rcnn', 4,
                      2, train_teacher=False, assistant='mid')
    assert (given[0].iters, given[1].teacher) == (0, 'teacher')


def test_plan_assistant_errors():
    with pytest.raises(ValueError, match='--assistant needs --methods'):
        plan_runs([], [0], 'faster_rcnn', 4, 2, assistant='mid')
    with pytest.raises(ValueError, match='--assistant-method needs '
                                         '--assistant'):
        plan_runs(methods_for('det', ['fitnet']), [0], 'faster_rcnn', 4, 2,
                  assistant_method=METHODS['det']['pkd'])
    with pytest.raises(ValueError, match=r"distil another family"):
        plan_runs(methods_for('det', ['fitnet', 'ld']), [0], 'faster_rcnn',
                  4, 2, assistant='mid',
                  assistant_method=METHODS['det']['pkd'])


def _drain(sched, fail=()):
    """Run the scheduler to the end, one job; (started, skipped) names and
    the teacher checkpoint each started run got."""
    started, skipped, ckpts = [], [], {}
    while sched.active:
        for step in sched.ready():
            if step.skip:
                sched.mark_skipped(step.run)
                skipped.append(step.run.name)
                continue
            sched.mark_started(step.run)
            started.append(step.run.name)
            ckpts[step.run.name] = step.teacher_ckpt
            if step.run.name in fail:
                sched.mark_failed(step.run)
            else:
                sched.mark_finished(step.run, f'{step.run.name}.pth')
    return started, skipped, ckpts


def test_scheduler_via_students_learn_from_their_assistant():
    plan = plan_runs(methods_for('det', ['fitnet', 'pkd']), [0],
                     'faster_rcnn', 4, 2, assistant='mid')
    started, skipped, ckpts = _drain(RunScheduler(plan, jobs=1))
    assert skipped == [] and len(started) == len(plan)
    assert ckpts['assistant_mid_fitnet'] == 'teacher.pth'
    assert ckpts['fitnet_seed0'] == 'teacher.pth'
    assert ckpts['fitnet_via_mid_seed0'] == 'assistant_mid_fitnet.pth'
    assert ckpts['pkd_via_mid_seed0'] == 'assistant_mid_pkd.pth'
    assert ckpts['baseline_seed0'] is None


def test_scheduler_failed_assistant_skips_only_its_students():
    plan = plan_runs(methods_for('det', ['fitnet', 'pkd']), [0, 1],
                     'faster_rcnn', 4, 2, assistant='mid')
    sched = RunScheduler(plan, jobs=2)
    started, skipped, _ = _drain(sched, fail={'assistant_mid_fitnet'})
    assert skipped == ['fitnet_via_mid_seed0', 'fitnet_via_mid_seed1']
    assert 'pkd_via_mid_seed1' in started and 'fitnet_seed1' in started
    # a failed teacher: its assistants are skipped, then their students
    sched = RunScheduler(plan, jobs=1)
    started, skipped, _ = _drain(sched, fail={'teacher'})
    assert started == ['teacher', 'baseline_seed0', 'baseline_seed1']
    assert set(skipped) == {r.name for r in plan} - set(started)


def test_assistant_models_lie_between_teacher_and_student():
    for task, arch, key in (('det', 'faster_rcnn', ('neck', 'out_channels')),
                            ('seg', 'pspnet', ('decode_head', 'channels')),
                            ('seg', 'ddrnet', ('decode_head', 'channels'))):
        for name in ('tiny', 'cpu-small', 'gpu'):
            preset = get_preset(task, name)
            teacher, student = model_cfgs(preset, arch, 3)
            mid = assistant_cfg(preset, arch, 3, 'mid')
            models = (teacher, mid, student)
            if name == 'gpu' and arch != 'ddrnet':  # R101 / R50 / R18
                sizes = [m['backbone']['depth'] for m in models]
            else:
                sizes = [m[key[0]][key[1]] for m in models]
            assert sizes[0] > sizes[1] > sizes[2], (arch, name, sizes)
            assert mid['type'] == teacher['type']
    small = assistant_cfg(get_preset('seg', 'cpu-small'), 'pspnet', 3, 'mid')
    assert small['backbone']['base_channels'] == 24
    assert small['decode_head']['num_classes'] == 3


def test_unknown_assistant_names_the_families_that_have_one():
    preset = get_preset('det', 'tiny')
    with pytest.raises(ValueError, match=r"defines \['mid'\]"):
        assistant_cfg(preset, 'faster_rcnn', 3, 'big')
    with pytest.raises(ValueError, match="'rtmdet' family .* defines no "
                                         'assistant'):
        assistant_cfg(preset, 'rtmdet', 3, 'mid')


def test_assistant_and_via_configs():
    """The assistant run distils the assistant from the teacher for the
    teacher's iterations; the via run distils the student from the
    assistant's checkpoint; the terms follow the models' channels."""
    preset = get_preset('det', 'cpu-small')
    spec = METHODS['det']['fgd']
    teacher, student = model_cfgs(preset, 'faster_rcnn', 3)
    mid = assistant_cfg(preset, 'faster_rcnn', 3, 'mid')
    ta = run_config(preset, DET, DET.classes, 'assistant', 'faster_rcnn',
                    spec, 'teacher.pth', assistant='mid')
    assert ta['model']['student'] == mid and ta['model']['teacher'] == teacher
    assert ta['model']['teacher_ckpt'] == 'teacher.pth'
    assert ta['train_cfg']['max_iters'] == 400  # the teacher's
    via = run_config(preset, DET, DET.classes, 'distill', 'faster_rcnn',
                     spec, 'ta.pth', assistant='mid')
    assert via['model']['student'] == student
    assert via['model']['teacher'] == mid
    assert via['train_cfg']['max_iters'] == 300
    # FGD's weights scale with the teacher's FPN width: 64, then 48
    alpha = [c['model']['distill_terms']['fpn']['loss']['alpha_fgd']
             for c in (ta, via)]
    assert alpha[1] / alpha[0] == pytest.approx(64 / 48)
    with pytest.raises(ValueError, match='needs the assistant name'):
        run_config(preset, DET, DET.classes, 'assistant', 'faster_rcnn',
                   spec)


@pytest.mark.parametrize('method', ['af_dcd', 'dist'])
def test_tiny_seg_assistant_terms_build_on_both_sides(method):
    """The pspnet family's assistant as the student of the teacher and as
    the teacher of the student: the terms build and the KD losses reach
    the student only."""
    from visionkd.registry import MODELS
    preset = get_preset('seg', 'tiny')
    data = DataSpec(CAMVID, 'train', 'val', classes=('a', 'b', 'c'))
    batch = seg_batch(preset.crop, num_classes=3)
    for role in ('assistant', 'distill'):
        cfg = run_config(preset, data, data.classes, role, 'pspnet',
                         METHODS['seg'][method], assistant='mid')
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope('mmseg'):
            model = MODELS.build(cfg['model'])
        model.train()
        losses = model(**model.data_preprocessor(batch, True), mode='loss')
        kd = [v for k, v in losses.items() if k.startswith('loss_kd')]
        assert kd and all(torch.isfinite(v) and v > 0 for v in kd)
        sum(kd).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in model.student.backbone.parameters())
        assert all(p.grad is None for p in model.teacher.parameters())


def _doc():
    methods = methods_for('det', ['fitnet', 'ld'])
    results = {'teacher': dict(metric=50.0),
               'assistant_mid_fitnet': dict(metric=46.0),
               'baseline_seed0': dict(metric=40.0),
               'baseline_seed1': dict(metric=42.0),
               'fitnet_seed0': dict(metric=42.0),
               'fitnet_seed1': dict(metric=44.0),
               'fitnet_via_mid_seed0': dict(metric=45.0),
               'fitnet_via_mid_seed1': dict(metric=47.0),
               'teacher_gfl': dict(metric=30.0),
               'assistant_mid_ld': dict(metric=28.0),
               'baseline_gfl_seed0': dict(metric=20.0),
               'ld_seed0': dict(metric=22.0),
               'ld_via_mid_seed0': dict(metric=21.0)}
    configs = {'fitnet_via_mid': 'v.py', 'assistant_mid_fitnet': 'a.py'}
    return build_results(
        'det', 'bbox_mAP', [0, 1], results, methods, 'faster_rcnn',
        configs, dict(preset='x', assistant='mid'), assistant='mid',
        assistants={'fitnet': 'assistant_mid_fitnet',
                    'ld': 'assistant_mid_ld'})


def test_results_json_has_assistants_and_via_rows():
    doc = _doc()
    assert doc['assistants'] == {
        'assistant_mid_fitnet': dict(model='mid', method='fitnet', arch=None,
                                     metric=46.0, config='a.py'),
        'assistant_mid_ld': dict(model='mid', method='ld', arch='gfl',
                                 metric=28.0, config=None)}
    assert doc['methods']['fitnet']['via_assistant'] == dict(
        assistant='assistant_mid_fitnet', metric=[45.0, 47.0],
        config='v.py')
    assert doc['methods']['fitnet']['metric'] == [42.0, 44.0]  # direct
    assert doc['methods']['ld']['via_assistant']['metric'] == [21.0, None]
    # without an assistant: the document of before
    plain = build_results('det', 'bbox_mAP', [0], {}, methods_for(
        'det', ['fitnet']), 'faster_rcnn', {}, {})
    assert 'assistants' not in plain
    assert 'via_assistant' not in plain['methods']['fitnet']


def test_results_md_rows_teacher_assistant_baseline_direct_via(tmp_path):
    path = str(tmp_path / 'r.md')
    write_markdown(_doc(), path, 'T')
    rows = [r for r in open(path).read().splitlines() if r.startswith('| ')]
    assert [r.split(' | ')[0][2:] for r in rows[1:]] == [
        'teacher', 'assistant mid (fitnet)', 'baseline student', 'fitnet',
        'fitnet via mid', 'teacher (gfl)', 'assistant mid (ld)',
        'baseline student (gfl)', 'ld', 'ld via mid']
    # baseline 41.0, teacher 50.0: direct 43.0 (+2.0, 22 %), via 46.0
    # (+5.0, 56 %; both seeds above the best baseline seed 42.0)
    assert rows[2] == '| assistant mid (fitnet) | 46.0 | | | | |'
    assert rows[4] == ('| fitnet | 43.0 ± 1.4 | 42.0 / 44.0 | +2.0 | 22 % '
                       '| no |')
    assert rows[5] == ('| fitnet via mid | 46.0 ± 1.4 | 45.0 / 47.0 | +5.0 '
                       '| 56 % | yes |')
    # the GFL block reads against its own teacher (30) and baseline (20)
    assert rows[10] == '| ld via mid | 21.0 | 21.0 / – | +1.0 | 10 % | – |'
    names, series, greys, spans = _bar_groups(_doc())
    assert names == ['baseline', 'fitnet', 'fitnet via mid',
                     'baseline (gfl)', 'ld', 'ld via mid']
    assert series[2] == [45.0, 47.0] and greys == [0, 3]


@needs_data
def test_tiny_det_teacher_assistant_student_end_to_end(tmp_path):
    """teacher -> assistant -> student on BCCD, 2 iterations each: the
    assistant is exported to a plain checkpoint of the assistant model,
    and the via student's teacher is that checkpoint."""
    from tools.run_experiments import main
    from visionkd.registry import MODELS
    work = tmp_path / 'ta'
    rc = main(['--task', 'det', '--data-root', BCCD, '--train-ann',
               'annotations/train.json', '--val-ann', 'annotations/val.json',
               '--methods', 'fitnet', '--seeds', '0', '--preset', 'tiny',
               '--assistant', 'mid', '--work-dir', str(work)])
    assert rc == 0
    runs = {r['name']: r for r in json.loads(
        (work / 'runs.json').read_text())['runs']}
    assert list(runs) == ['teacher', 'assistant_mid_fitnet',
                          'baseline_seed0', 'fitnet_seed0',
                          'fitnet_via_mid_seed0']
    assert all(r['status'] == 'done' for r in runs.values())
    ta = runs['assistant_mid_fitnet']
    exported = str(work / 'runs' / 'assistant_mid_fitnet' / 'assistant.pth')
    assert ta['exported'] == exported and osp.isfile(exported)
    assert ta['teacher_ckpt'] == runs['teacher']['checkpoint']
    via = runs['fitnet_via_mid_seed0']
    assert via['teacher_ckpt'] == exported
    cfg = Config.fromfile(via['config'])
    assert cfg.model.teacher_ckpt == exported
    assert cfg.model.teacher.neck.out_channels == 24  # the assistant
    assert cfg.model.student.neck.out_channels == 16
    direct = Config.fromfile(runs['fitnet_seed0']['config'])
    assert direct.model.teacher_ckpt == runs['teacher']['checkpoint']
    # the export is a plain detector checkpoint: it loads strictly into
    # the plain assistant config written beside it
    plain = Config.fromfile(str(work / 'runs' / 'assistant_mid_fitnet' /
                                'assistant.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(plain.model)
    state = torch.load(exported, map_location='cpu')['state_dict']
    assert not any(k.startswith(('student.', 'teacher.')) for k in state)
    model.load_state_dict(state, strict=True)
    doc = json.loads((work / 'results.json').read_text())
    entry = doc['methods']['fitnet']['via_assistant']
    assert entry['assistant'] == 'assistant_mid_fitnet'
    values = [doc['assistants']['assistant_mid_fitnet']['metric'],
              *entry['metric'], *doc['methods']['fitnet']['metric']]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert doc['schedule']['assistant'] == 'mid'
    text = (work / 'results.md').read_text()
    for row in ('| teacher |', '| assistant mid (fitnet) |',
                '| baseline student |', '| fitnet |', '| fitnet via mid |'):
        assert row in text, row
    # resuming reads every run back (the assistant's export included)
    assert main(['--task', 'det', '--data-root', BCCD, '--methods',
                 'fitnet', '--seeds', '0', '--preset', 'tiny',
                 '--assistant', 'mid', '--work-dir', str(work)]) == 0


@needs_data
def test_tiny_seg_assistant_method_end_to_end(tmp_path):
    """The pspnet family with one assistant for all methods
    (``--assistant-method af_dcd``) on CamVid, 2 iterations each."""
    from tools.run_experiments import main
    work = tmp_path / 'seg'
    rc = main(['--task', 'seg', '--data-root', CAMVID, '--methods', 'cwd',
               '--seeds', '0', '--preset', 'tiny', '--assistant', 'mid',
               '--assistant-method', 'af_dcd', '--work-dir', str(work)])
    assert rc == 0
    runs = {r['name']: r for r in json.loads(
        (work / 'runs.json').read_text())['runs']}
    assert list(runs) == ['teacher', 'assistant_mid_af_dcd',
                          'baseline_seed0', 'cwd_seed0', 'cwd_via_mid_seed0']
    assert runs['cwd_via_mid_seed0']['teacher_ckpt'] == \
        runs['assistant_mid_af_dcd']['exported']
    assert 'loss_kd_af_dcd' in (work / 'runs' / 'assistant_mid_af_dcd' /
                                'run.log').read_text()
    text = (work / 'results.md').read_text()
    assert '| assistant mid (af_dcd) |' in text
    assert '| cwd via mid |' in text
