"""tools/run_experiments.py: plan, method table, reports, resume, crash."""
import json
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import SHARED_DATA
from visionkd.experiments import (
    ExperimentOptions,
    MethodSpec,
    get_preset,
    methods_for,
    run_experiments,
)
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.experiment import ExperimentFailed
from visionkd.experiments.results_report import build_results, write_markdown
from visionkd.experiments.run_configs import run_config
from visionkd.experiments.run_plan import plan_runs

BCCD = osp.join(SHARED_DATA, 'bccd')
CAMVID = osp.join(SHARED_DATA, 'camvid')
needs_data = pytest.mark.skipif(not osp.isdir(SHARED_DATA),
                                reason='../shared/data is not present')


def test_plan_orders_and_names_runs():
    methods = methods_for('det', ['pkd', 'fgd'])
    gfl = MethodSpec('ld', 'det', lambda terms, info: {}, None,
                    arch='gfl')
    runs = plan_runs(methods + [gfl], [0, 1], 'faster_rcnn', 4, 2)
    names = [r.name for r in runs]
    assert names == [
        'teacher', 'teacher_gfl',
        'baseline_seed0', 'baseline_gfl_seed0', 'pkd_seed0', 'fgd_seed0',
        'ld_seed0',
        'baseline_seed1', 'baseline_gfl_seed1', 'pkd_seed1', 'fgd_seed1',
        'ld_seed1']
    assert runs[0].iters == 4 and runs[2].iters == 2
    assert runs[6].arch == 'gfl' and runs[6].config_name == 'ld'
    given = plan_runs(methods, [0], 'faster_rcnn', 4, 2,
                      train_teacher=False)
    assert given[0].iters == 0 and given[0].seed is None


def test_unknown_method_and_preset_fail_clearly():
    with pytest.raises(ValueError, match='available'):
        methods_for('seg', ['fgd'])
    with pytest.raises(ValueError, match='unknown preset'):
        get_preset('det', 'huge')


def test_results_table_math(tmp_path):
    methods = methods_for('det', ['pkd', 'fgd'])
    results = {
        'teacher': dict(metric=50.0),
        'baseline_seed0': dict(metric=40.0),
        'baseline_seed1': dict(metric=42.0),
        'pkd_seed0': dict(metric=45.0), 'pkd_seed1': dict(metric=46.0),
        'fgd_seed0': dict(metric=41.0)}  # fgd seed 1 not finished
    doc = build_results('det', 'bbox_mAP', [0, 1], results, methods,
                        'faster_rcnn', {'pkd': 'p.py'}, dict(preset='x'))
    assert doc['teacher'] == {'metric': 50.0}
    assert doc['baseline'] == {'metric': [40.0, 42.0]}
    assert doc['methods']['pkd'] == {'metric': [45.0, 46.0],
                                     'config': 'p.py'}
    assert doc['methods']['fgd']['metric'] == [41.0, None]
    path = str(tmp_path / 'r.md')
    write_markdown(doc, path, 'T', command='cmd')
    text = open(path).read()
    # baseline 41.0 ± 1.4; pkd 45.5: gain +4.5 = 50 % of the 9-point gap
    assert '| baseline student | 41.0 ± 1.4 | 40.0 / 42.0 |' in text
    assert '| pkd | 45.5 ± 0.7 | 45.0 / 46.0 | +4.5 | 50 % | yes |' in text
    assert '| fgd | 41.0 | 41.0 / – | +0.0 | 0 % | – |' in text


def test_results_table_other_family_reads_against_its_own_rows(tmp_path):
    # LD trains a GFL student: its gain and gap use the GFL teacher and
    # baseline, which the table shows right above it.
    methods = methods_for('det', ['pkd', 'ld'])
    results = {
        'teacher': dict(metric=50.0), 'teacher_gfl': dict(metric=40.0),
        'baseline_seed0': dict(metric=40.0),
        'baseline_seed1': dict(metric=42.0),
        'baseline_gfl_seed0': dict(metric=30.0),
        'baseline_gfl_seed1': dict(metric=32.0),
        'pkd_seed0': dict(metric=45.0), 'pkd_seed1': dict(metric=46.0),
        'ld_seed0': dict(metric=35.0), 'ld_seed1': dict(metric=36.0)}
    doc = build_results('det', 'bbox_mAP', [0, 1], results, methods,
                        'faster_rcnn', {}, dict(preset='x'))
    assert doc['methods']['ld']['arch'] == 'gfl'
    assert doc['methods']['ld']['teacher'] == {'metric': 40.0}
    assert 'arch' not in doc['methods']['pkd']
    path = str(tmp_path / 'r.md')
    write_markdown(doc, path, 'T')
    rows = [r for r in open(path).read().splitlines() if r.startswith('| ')]
    names = [r.split(' | ')[0][2:] for r in rows[1:]]
    assert names == ['teacher', 'baseline student', 'pkd', 'teacher (gfl)',
                     'baseline student (gfl)', 'ld']
    # ld 35.5 vs GFL baseline 31.0: +4.5 = 50 % of the 9-point GFL gap
    assert rows[-1] == '| ld | 35.5 ± 0.7 | 35.0 / 36.0 | +4.5 | 50 % | yes |'


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_every_method_builds_on_the_preset_models(task):
    """Each method's terms build a distiller with the preset's models."""
    from visionkd.registry import MODELS
    if task == 'det':
        data = DataSpec(BCCD, 'annotations/train.json',
                        'annotations/val.json', classes=('a', 'b', 'c'))
    else:
        data = DataSpec(CAMVID, 'train', 'val')
    preset = get_preset(task, 'tiny')
    classes = data.class_names(task)
    for method in methods_for(task):
        cfg = run_config(preset, data, classes, 'distill',
                         method.arch or preset.default_arch, method)
        scope = 'mmdet' if task == 'det' else 'mmseg'
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(cfg['model'])
        assert set(model.distill_terms) == set(
            cfg['model']['distill_terms']), method.name
        del model


def test_method_scoped_cfg_options_reach_only_that_method():
    """``af_dcd:<key>`` sets the af_dcd term's weight, leaves the baseline
    (no terms) and the other methods alone; a typo fails before training.
    """
    data = DataSpec(CAMVID, 'train', 'val')
    preset = get_preset('seg', 'tiny')
    classes = data.class_names('seg')
    af_dcd, cwd = methods_for('seg', ['af_dcd', 'cwd'])
    opts = {'af_dcd:model.distill_terms.af_dcd.loss.loss_weight': 0.2,
            'train_cfg.val_interval': 7}
    cfgs = {role_method: run_config(preset, data, classes, role,
                                    preset.default_arch, method,
                                    cfg_options=opts)
            for role_method, role, method in [
                ('baseline', 'baseline', None),
                ('af_dcd', 'distill', af_dcd), ('cwd', 'distill', cwd)]}
    terms = cfgs['af_dcd']['model']['distill_terms']
    assert terms['af_dcd']['loss']['loss_weight'] == 0.2
    assert 'distill_terms' not in cfgs['baseline']['model']
    assert 'af_dcd' not in cfgs['cwd']['model']['distill_terms']
    assert all(c['train_cfg']['val_interval'] == 7 for c in cfgs.values())
    with pytest.raises(ValueError, match="'af_dc' is not one of the "
                       'methods of this experiment'):
        run_experiments(ExperimentOptions(
            task='seg', data=data, work_dir='/nonexistent/never',
            preset='tiny', methods=['af_dcd'], seeds=[0], command='t',
            cfg_options={'af_dc:model.x': 1}), print)


def _det_opts(work_dir, **kwargs):
    data = DataSpec(BCCD, 'annotations/train.json', 'annotations/val.json')
    return ExperimentOptions(task='det', data=data, work_dir=str(work_dir),
                             preset='tiny', methods=[], seeds=[0],
                             command='test', **kwargs)


@needs_data
def test_det_crashed_run_resumes_and_finished_runs_are_skipped(tmp_path):
    # Teacher + baseline only (the seg test below runs a method): the
    # teacher is killed after its iteration-1 checkpoint.
    marker = str(tmp_path / 'crashed')
    crash = dict(
        custom_imports=dict(imports=['tests.test_tools.crash_once_hook'],
                            allow_failed_imports=False),
        custom_hooks=[dict(type='CrashOnceHook', marker=marker, at_iter=1,
                           name_contains='teacher')])
    work = tmp_path / 'exp'
    lines = []
    with pytest.raises(ExperimentFailed, match='teacher'):
        run_experiments(_det_opts(work, cfg_options=crash), lines.append)
    assert osp.exists(marker)
    run_dir = work / 'runs' / 'teacher'
    assert (run_dir / 'iter_1.pth').exists()
    assert not (run_dir / 'result.json').exists()
    partial = json.loads((work / 'results.json').read_text())
    assert partial['teacher']['metric'] is None
    assert partial['baseline']['metric'][0] is not None

    log = work / 'runs' / 'baseline_seed0' / 'run.log'
    mtime = log.stat().st_mtime
    lines = []
    doc = run_experiments(_det_opts(work, cfg_options=crash), lines.append)
    out = '\n'.join(lines)
    assert 'teacher: resuming from' in out
    assert '[2/2] baseline_seed0: already done' in out
    assert log.stat().st_mtime == mtime  # no process started for it
    result = json.loads((run_dir / 'result.json').read_text())
    assert result['resumed_from'] == 1 and result['iters'] == 2
    assert '--resume' in (run_dir / 'run.log').read_text()

    # the schema, every value 0-100
    assert set(doc) == {'task', 'metric', 'teacher', 'baseline', 'methods',
                        'schedule'}
    assert doc['task'] == 'det' and doc['metric'] == 'bbox_mAP'
    assert set(doc['teacher']) == {'metric'}
    assert doc['methods'] == {}
    assert doc['schedule']['classes'] == ['RBC', 'WBC', 'Platelets']
    values = [doc['teacher']['metric'], *doc['baseline']['metric']]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert doc == json.loads((work / 'results.json').read_text())
    assert (work / 'results.png').stat().st_size > 10000
    assert '| baseline student |' in (work / 'results.md').read_text()
    runs = json.loads((work / 'runs.json').read_text())['runs']
    assert [r['status'] for r in runs] == ['done'] * 2
    assert all(osp.isfile(r['checkpoint']) and osp.isfile(r['log'])
               and osp.isfile(r['config']) for r in runs)

    lines = []  # a third call trains nothing and gives the same results
    assert run_experiments(_det_opts(work), lines.append) == doc
    assert sum('already done' in line for line in lines) == 2


@needs_data
def test_term_weights_lists_every_number_of_the_terms_losses():
    from visionkd.experiments.run_configs import term_weights
    cfg = dict(model=dict(distill_terms=dict(
        roi=dict(loss=dict(type='RoIKDLoss', tau=2.0, loss_weight_fg=1.0,
                           reduce=True), student='roi_head'),
        fpn=dict(weight=0.5, loss=[dict(type='A', loss_weight=2),
                                   dict(type='B', alpha_fgd=1e-4)]))))
    assert term_weights(cfg) == dict(
        roi={'loss.loss_weight_fg': 1.0, 'loss.tau': 2.0},
        fpn={'weight': 0.5, 'loss.0.loss_weight': 2,
             'loss.1.alpha_fgd': 1e-4})
    assert term_weights(dict(model=dict(type='FasterRCNN'))) == {}


def test_seg_command_line(tmp_path, capsys):
    from tools.run_experiments import main
    work = tmp_path / 'seg'
    rc = main(['--task', 'seg', '--data-root', CAMVID, '--methods', 'cwd',
               '--seeds', '0', '--preset', 'tiny', '--work-dir', str(work)])
    assert rc == 0
    doc = json.loads((work / 'results.json').read_text())
    assert doc['task'] == 'seg' and doc['metric'] == 'mIoU'
    assert set(doc['methods']['cwd']) == {'metric', 'config'}
    assert osp.isfile(doc['methods']['cwd']['config'])
    values = [doc['teacher']['metric'], *doc['baseline']['metric'],
              *doc['methods']['cwd']['metric']]
    assert len(values) == 3 and all(0.0 <= v <= 100.0 for v in values)
    assert doc['schedule']['classes'][0] == 'road'
    assert (work / 'results.png').exists()
    text = (work / 'results.md').read_text()
    assert 'python tools/run_experiments.py --task seg' in text
    out = capsys.readouterr().out
    assert '[3/3] cwd_seed0: done' in out and 'ETA' in out
    # the runner logs the weights the method's rule gave the run
    (line, ) = [x for x in out.splitlines() if 'cwd_seed0: weights' in x]
    cfg = Config.fromfile(doc['methods']['cwd']['config'])
    (term, ) = cfg.model.distill_terms
    tau = cfg.model.distill_terms[term].loss.tau
    assert "(the method's preset weights)" in line
    assert f'{term}: ' in line and f'loss.tau={tau:g}' in line
    assert 'loss_kd_logits' in (work / 'runs' / 'cwd_seed0' /
                                'run.log').read_text()
    assert '| cwd |' in text


def _fake_executor(events, lock, fail=(), together=1):
    """Stand-in for execute_run: records start/end and returns a result (or
    fails for the run names in ``fail``). The teacher finishes only once
    ``together`` runs have started (or after 30 s), so what may run beside
    it does not depend on timing."""
    import threading
    import time

    from visionkd.experiments.run_executor import RunFailed, RunResult
    gate = threading.Event()

    def execute(run, root, task, checkpoint=None, echo=print, threads=None):
        with lock:
            events.append(('start', run.name, threading.get_ident(),
                           threads))
            if sum(e[0] == 'start' for e in events) >= together:
                gate.set()
        if run.role == 'teacher':
            gate.wait(30)
        time.sleep(0.05)
        with lock:
            events.append(('end', run.name))
        if run.name in fail:
            raise RunFailed(f'{run.name}: boom')
        return RunResult(name=run.name, metric=40.0,
                         checkpoint=f'{run.name}.pth',
                         config=run.config_path(root), seconds=0.05,
                         iters=run.iters, resumed_from=0)
    return execute


@needs_data
@pytest.mark.parametrize('jobs', [1, 3])
def test_jobs_schedule_students_after_their_teacher(tmp_path, monkeypatch,
                                                    jobs):
    import threading

    import visionkd.experiments.experiment as experiment
    events, lock = [], threading.Lock()
    monkeypatch.setattr(experiment, 'execute_run',
                        _fake_executor(events, lock, together=jobs))
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(experiment.os, 'cpu_count', lambda: 6)
    opts = _det_opts(tmp_path, jobs=jobs)
    opts.methods, opts.seeds = ['fitnet'], [0, 1]
    doc = experiment.run_experiments(opts, echo=lambda line: None)
    assert doc['methods']['fitnet']['metric'] == [40.0, 40.0]
    starts = [e[1] for e in events if e[0] == 'start']
    order = [e[:2] for e in events]
    teacher_end = order.index(('end', 'teacher'))
    for name in ('fitnet_seed0', 'fitnet_seed1'):
        assert order.index(('start', name)) > teacher_end
    if jobs == 1:
        # one at a time, in plan order, threads inherited
        assert starts == ['teacher', 'baseline_seed0', 'fitnet_seed0',
                          'baseline_seed1', 'fitnet_seed1']
        assert all(e[0] == 'start' and e[3] is None or e[0] == 'end'
                   for e in events)
        assert all(order[i][0] != order[i + 1][0] or order[i][0] == 'end'
                   for i in range(len(order) - 1))
    else:
        # baselines train beside the teacher; 6 cores / 3 jobs = 2 threads
        assert order.index(('start', 'baseline_seed0')) < teacher_end
        assert order.index(('start', 'baseline_seed1')) < teacher_end
        assert {e[3] for e in events if e[0] == 'start'} == {2}
        running = peak = 0
        for e in events:
            running += 1 if e[0] == 'start' else -1
            peak = max(peak, running)
        assert peak <= 3  # never more than jobs at a time


@needs_data
def test_jobs_failed_teacher_skips_its_students(tmp_path, monkeypatch):
    import threading

    import visionkd.experiments.experiment as experiment
    events, lock = [], threading.Lock()
    monkeypatch.setattr(experiment, 'execute_run',
                        _fake_executor(events, lock, fail={'teacher'},
                                       together=2))
    opts = _det_opts(tmp_path, jobs=2)
    opts.methods, opts.seeds = ['fitnet'], [0]
    with pytest.raises(ExperimentFailed, match='fitnet_seed0'):
        experiment.run_experiments(opts, echo=lambda line: None)
    started = {e[1] for e in events if e[0] == 'start'}
    assert started == {'teacher', 'baseline_seed0'}
    with pytest.raises(ValueError, match='jobs'):
        experiment.run_experiments(_det_opts(tmp_path, jobs=0),
                                   echo=lambda line: None)


def test_subprocess_env_threads(monkeypatch):
    from visionkd.experiments.run_executor import _subprocess_env
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    monkeypatch.setenv('OMP_NUM_THREADS', '8')
    assert _subprocess_env()['OMP_NUM_THREADS'] == '8'
    env = _subprocess_env(threads=2)
    assert env['OMP_NUM_THREADS'] == '2'
    assert env['OMP_WAIT_POLICY'] == 'PASSIVE'


def _budget_executor(started):
    """Stand-in for execute_run recording each run's iterations."""
    from visionkd.experiments.run_executor import RunResult

    def execute(run, root, task, checkpoint=None, echo=print, threads=None):
        started.append((run.name, run.iters))
        return RunResult(name=run.name, metric=40.0,
                         checkpoint=f'{run.name}.pth',
                         config=run.config_path(root),
                         seconds=2.0 * max(run.iters, 1), iters=run.iters,
                         role=run.role, seed=run.seed)
    return execute


def _time_opts(work_dir, budget='time'):
    opts = _det_opts(work_dir, budget=budget, student_iters=6)
    opts.methods = ['fitnet']
    return opts


@needs_data
def test_time_budget_gives_a_costlier_method_fewer_iterations(
        tmp_path, monkeypatch):
    from mmengine.config import Config

    import visionkd.experiments.experiment as experiment
    started, probed = [], []
    monkeypatch.setattr(experiment, 'execute_run', _budget_executor(started))

    def probe(name, cfg, root, warmup, iters, echo=print, threads=None):
        probed.append((name, cfg['train_cfg']['max_iters'], warmup, iters))
        return {'baseline': 1.0, 'fitnet': 1.5}[name]  # measured, injected
    monkeypatch.setattr(experiment, 'run_probe', probe)
    doc = experiment.run_experiments(_time_opts(tmp_path),
                                     echo=lambda line: None)
    # the method probed between two probes of the baseline, each at its
    # run's schedule (6 iterations)
    assert probed == [('baseline', 6, 2, 10), ('fitnet', 6, 2, 10),
                      ('baseline', 6, 2, 10)]
    # 6 x 1.0 / 1.5 = 4 iterations for the distilled run, 6 for the baseline
    assert started == [('teacher', 2), ('baseline_seed0', 6),
                       ('fitnet_seed0', 4)]
    cfg = Config.fromfile(str(tmp_path / 'configs' / 'fitnet.py'))
    assert cfg.train_cfg.max_iters == 4 and cfg.train_cfg.val_interval == 4
    base = Config.fromfile(str(tmp_path / 'configs' / 'baseline.py'))
    assert base.train_cfg.max_iters == 6
    sched = doc['schedule']
    assert sched['budget'] == 'time' and sched['student_iters'] == 6
    assert sched['time_budget']['configs']['fitnet'] == dict(
        iters=4, seconds_per_iter=1.5, baseline='baseline',
        baseline_seconds_per_iter=1.0)
    text = (tmp_path / 'results.md').read_text()
    assert 'budget: time' in text and 'Budget: time --' in text
    assert '| fitnet | 4 | 1.500 | baseline (1.000 s/iteration) |' in text
    assert 'fitnet_seed0 8 (4 it, 2.00 s/it)' in text
    runs = {r['name']: r for r in json.loads(
        (tmp_path / 'runs.json').read_text())['runs']}
    assert runs['fitnet_seed0']['iters'] == 4
    assert runs['fitnet_seed0']['probe_seconds_per_iter'] == 1.5
    assert runs['fitnet_seed0']['seconds_per_iter'] == 2.0
    assert runs['baseline_seed0']['iters'] == 6

    # resuming: the persisted count, not a new probe (which would give 3)
    started.clear()
    monkeypatch.setattr(experiment, 'run_probe', lambda *a, **k: 1 / 0)
    experiment.run_experiments(_time_opts(tmp_path), echo=lambda line: None)
    assert ('fitnet_seed0', 4) in started
    with pytest.raises(ValueError, match='--budget time'):
        experiment.run_experiments(_time_opts(tmp_path, budget='iters'),
                                   echo=lambda line: None)


@needs_data
def test_a_run_finished_with_another_count_is_not_reused(tmp_path,
                                                         monkeypatch):
    import visionkd.experiments.experiment as experiment
    from visionkd.experiments.run_executor import RunResult
    run_dir = tmp_path / 'runs' / 'baseline_seed0'
    run_dir.mkdir(parents=True)
    (run_dir / 'result.json').write_text(json.dumps(RunResult(
        name='baseline_seed0', metric=1.0, checkpoint='b.pth',
        config='b.py', seconds=1.0, iters=2).to_dict()))
    monkeypatch.setattr(experiment, 'execute_run', _budget_executor([]))
    with pytest.raises(ValueError, match='baseline_seed0 finished with 2'):
        experiment.run_experiments(_det_opts(tmp_path, student_iters=3),
                                   echo=lambda line: None)


@needs_data
def test_time_probe_trains_a_few_iterations_and_times_them(tmp_path):
    from visionkd.experiments.time_budget import run_probe
    data = DataSpec(BCCD, 'annotations/train.json', 'annotations/val.json')
    preset = get_preset('det', 'tiny')
    cfg = run_config(preset, data, data.class_names('det'), 'baseline',
                     'faster_rcnn')
    seconds = run_probe('baseline', cfg, str(tmp_path), warmup=1, iters=2,
                        echo=lambda line: None)
    assert 0.0 < seconds < 600.0
    work = tmp_path / 'probes' / 'baseline'
    steps = [json.loads(line)['step'] for line in
             next(work.glob('*/vis_data/scalars.json')).read_text()
             .splitlines() if '"time"' in line]
    assert steps == [1, 2, 3]  # every iteration logged, no validation
    assert not list(work.glob('*.pth'))  # and no checkpoint


def test_results_png_has_one_bar_group_per_family():
    from visionkd.experiments.results_plot import _bar_groups
    doc = dict(metric='bbox_mAP', teacher=dict(metric=50.0),
               baseline=dict(metric=[40.0]),
               methods=dict(pkd=dict(metric=[41.0]),
                            ld=dict(metric=[35.0], arch='gfl',
                                    teacher=dict(metric=40.0),
                                    baseline=dict(metric=[30.0])),
                            fgd=dict(metric=[42.0])))
    names, series, greys, spans = _bar_groups(doc)
    assert names == ['baseline', 'pkd', 'fgd', 'baseline (gfl)', 'ld']
    assert greys == [0, 3]
    assert spans == [(None, 0, 2, 50.0), ('gfl', 3, 4, 40.0)]
