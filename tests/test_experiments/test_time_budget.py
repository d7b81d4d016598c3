"""--budget time: iteration matching, stretched schedules, probes."""
import json

import pytest

from visionkd.experiments import MethodSpec, get_preset
from visionkd.experiments.run_plan import plan_runs
from visionkd.experiments.time_budget import (
    BudgetBook,
    apply_budget,
    matched_iters,
    probe_cfg,
    seconds_per_iter,
    stretched_schedule,
)


def test_matched_iters_rounds_and_caps():
    # 300 x 1.0 / 1.5 = 200; 300 x 1.2 / 1.7 = 211.76 -> 212
    assert matched_iters(300, 1.0, 1.5) == 200
    assert matched_iters(300, 1.2, 1.7) == 212
    # a method measured cheaper than its baseline is noise: it keeps N
    assert matched_iters(300, 1.0, 0.9) == 300
    assert matched_iters(10, 1.0, 1000.0) == 1
    with pytest.raises(ValueError, match='> 0'):
        matched_iters(300, 0.0, 1.0)


def test_stretched_schedule_keeps_the_warmup_share():
    sched = get_preset('det', 'cpu-small').schedule  # 300 it, warm-up 50
    short = stretched_schedule(sched, 200)
    assert (short.student_iters, short.warmup_iters) == (200, 33)
    assert short.teacher_iters == sched.teacher_iters
    assert short.lr == sched.lr and short.policy == sched.policy
    assert stretched_schedule(sched, 300) is sched


def test_seconds_per_iter_is_the_median_after_the_warmup():
    records = [dict(step=1, time=9.0), dict(step=2, time=8.0),
               dict(step=3, time=1.0), dict(step=4, time=5.0),
               dict(step=5, time=1.2), dict(step=5, loss=1.0)]
    assert seconds_per_iter(records, warmup=2) == 1.2
    assert seconds_per_iter(records, warmup=0) == 5.0
    assert seconds_per_iter(records, warmup=5) is None


def test_probe_cfg_logs_every_iteration_without_val_or_checkpoint():
    cfg = dict(train_cfg=dict(type='IterBasedTrainLoop', max_iters=300,
                              val_interval=300),
               val_dataloader=dict(batch_size=4), val_cfg=dict(type='V'),
               val_evaluator=dict(type='E'),
               default_hooks=dict(logger=dict(type='LoggerHook',
                                              interval=20),
                                  checkpoint=dict(type='CheckpointHook')))
    out = probe_cfg(cfg, warmup=2, iters=10)
    assert out['train_cfg'] == dict(type='IterBasedTrainLoop', max_iters=12,
                                    val_interval=13)
    assert out['val_dataloader'] is None and out['val_cfg'] is None
    assert out['default_hooks']['checkpoint'] is None
    assert out['default_hooks']['logger'] == dict(type='LoggerHook',
                                                  interval=1)
    assert cfg['train_cfg']['max_iters'] == 300  # the input is unchanged


def _plan():
    fitnet = MethodSpec('fitnet', 'det', lambda terms, info: {}, None)
    heavy = MethodSpec('heavy', 'det', lambda terms, info: {}, None)
    ld = MethodSpec('ld', 'det', lambda terms, info: {}, None, arch='gfl')
    return plan_runs([fitnet, heavy, ld], [0, 1], 'faster_rcnn', 400, 300)


def test_apply_budget_time_matches_each_method_to_its_family(tmp_path):
    seconds = {'baseline': 1.0, 'baseline_gfl': 2.0, 'fitnet': 1.25,
               'heavy': 3.0, 'ld': 2.5}
    probed = []

    def probe(run):
        probed.append(run.config_name)
        return seconds[run.config_name]

    path = str(tmp_path / 'budget.json')
    book = BudgetBook.open(path, 'time', 300, dict(warmup=2, iters=10))
    plan = apply_budget(_plan(), book, path, probe, echo=lambda line: None)
    # each config once (not per seed), between two probes of the baselines
    assert probed == ['baseline', 'baseline_gfl', 'fitnet', 'heavy', 'ld',
                      'baseline', 'baseline_gfl']
    iters = {r.name: r.iters for r in plan}
    assert iters['teacher'] == 400 and iters['teacher_gfl'] == 400
    assert iters['baseline_seed1'] == 300 == iters['baseline_gfl_seed0']
    assert iters['fitnet_seed0'] == iters['fitnet_seed1'] == 240
    assert iters['heavy_seed1'] == 100
    assert iters['ld_seed0'] == 240  # 300 x 2.0 / 2.5, its GFL baseline
    saved = json.loads(open(path).read())
    assert saved['mode'] == 'time' and saved['student_iters'] == 300
    assert saved['entries']['ld'] == dict(
        iters=240, seconds_per_iter=2.5, baseline='baseline_gfl',
        baseline_seconds_per_iter=2.0)
    assert saved['entries']['baseline'] == dict(
        iters=300, seconds_per_iter=1.0, probes=[1.0, 1.0])

    # a second session reads the counts back and probes nothing
    book = BudgetBook.open(path, 'time', 300, dict(warmup=2, iters=10))
    again = apply_budget(_plan(), book, path, lambda run: 1 / 0,
                         echo=lambda line: None)
    assert {r.name: r.iters for r in again} == iters


def test_apply_budget_iters_changes_nothing_and_modes_do_not_mix(tmp_path):
    path = str(tmp_path / 'budget.json')
    book = BudgetBook.open(path, 'iters', 300, {})
    plan = _plan()
    assert apply_budget(plan, book, path, lambda run: 1 / 0) == plan
    assert json.loads(open(path).read())['mode'] == 'iters'
    with pytest.raises(ValueError, match='--budget iters'):
        BudgetBook.open(path, 'time', 300, {})
    with pytest.raises(ValueError, match='--student-iters'):
        BudgetBook.open(path, 'iters', 200, {})
    with pytest.raises(ValueError, match='one of'):
        BudgetBook.open(str(tmp_path / 'new.json'), 'seconds', 300, {})


def test_a_drifting_load_is_interpolated_between_the_baseline_probes(
        tmp_path):
    # the machine slows down over the session: the baseline takes 1.0 s
    # before the methods and 1.6 s after; fitnet (2nd of 4 probes) is
    # matched to 1.2 s, heavy (3rd) to 1.4 s
    fitnet = MethodSpec('fitnet', 'det', lambda terms, info: {}, None)
    heavy = MethodSpec('heavy', 'det', lambda terms, info: {}, None)
    plan = plan_runs([fitnet, heavy], [0], 'faster_rcnn', 400, 300)
    times = iter([1.0, 1.8, 2.8, 1.6])
    path = str(tmp_path / 'budget.json')
    book = BudgetBook.open(path, 'time', 300, {})
    plan = apply_budget(plan, book, path, lambda run: next(times),
                        echo=lambda line: None)
    iters = {r.name: r.iters for r in plan}
    # 300 x 1.2 / 1.8 = 200 and 300 x 1.4 / 2.8 = 150; without the second
    # baseline probe they would get 167 and 107
    assert iters['fitnet_seed0'] == 200 and iters['heavy_seed0'] == 150
    assert book.entries['heavy']['baseline_seconds_per_iter'] == 1.4
    assert book.entries['baseline'] == dict(
        iters=300, seconds_per_iter=1.3, probes=[1.0, 1.6])
