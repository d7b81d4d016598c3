"""The pure run scheduler: plan order, jobs, teachers before students."""
import pytest

from visionkd.experiments import MethodSpec
from visionkd.experiments.run_plan import plan_runs
from visionkd.experiments.scheduler import RunScheduler


def _plan(seeds=(0, ), gfl=False, train_teacher=True):
    methods = [MethodSpec('fitnet', 'det', lambda terms, info: {}, None)]
    if gfl:
        methods.append(MethodSpec('ld', 'det', lambda terms, info: {}, None,
                                  arch='gfl'))
    return plan_runs(methods, list(seeds), 'faster_rcnn', 4, 2,
                     train_teacher=train_teacher)


def _names(steps):
    return [(s.run.name, s.skip) for s in steps]


def _start_all(sched, steps):
    for s in steps:
        (sched.mark_skipped if s.skip else sched.mark_started)(s.run)


def test_one_job_runs_in_plan_order_students_after_teacher():
    plan = _plan(seeds=(0, 1))
    sched = RunScheduler(plan, jobs=1)
    order = []
    while sched.active:
        steps = sched.ready()
        assert len(steps) == 1 and not steps[0].skip
        run = steps[0].run
        if run.role == 'distill':
            assert steps[0].teacher_ckpt == 'teacher.pth'
        sched.mark_started(run)
        assert sched.ready() == []  # the one slot is taken
        order.append(run.name)
        sched.mark_finished(run, f'{run.name}.pth')
    assert order == ['teacher', 'baseline_seed0', 'fitnet_seed0',
                     'baseline_seed1', 'fitnet_seed1']
    assert sched.failed == [] and sched.finished == order


def test_jobs_start_baselines_beside_the_teacher():
    plan = _plan(seeds=(0, 1))
    sched = RunScheduler(plan, jobs=3)
    steps = sched.ready()
    # the students wait for the teacher without holding up the baselines
    assert _names(steps) == [('teacher', False), ('baseline_seed0', False),
                             ('baseline_seed1', False)]
    assert sched.ready() == steps  # a query: nothing changed
    _start_all(sched, steps)
    assert sched.ready() == []
    sched.mark_finished(plan[1], 'b0.pth')  # a baseline: frees a slot only
    assert sched.ready() == []
    sched.mark_finished(plan[0], 'teacher.pth')
    steps = sched.ready()
    assert _names(steps) == [('fitnet_seed0', False),
                             ('fitnet_seed1', False)]
    assert {s.teacher_ckpt for s in steps} == {'teacher.pth'}


def test_failed_teacher_skips_its_students_only():
    plan = _plan(seeds=(0, ), gfl=True)
    names = [r.name for r in plan]
    assert names == ['teacher', 'teacher_gfl', 'baseline_seed0',
                     'baseline_gfl_seed0', 'fitnet_seed0', 'ld_seed0']
    sched = RunScheduler(plan, jobs=2)
    _start_all(sched, sched.ready())  # both teachers
    sched.mark_failed(plan[0])
    steps = sched.ready()
    assert _names(steps) == [('baseline_seed0', False)]
    _start_all(sched, steps)
    sched.mark_finished(plan[1], 'gfl.pth')
    steps = sched.ready()
    assert _names(steps) == [('baseline_gfl_seed0', False)]
    _start_all(sched, steps)
    sched.mark_finished(plan[2], 'b.pth')
    steps = sched.ready()
    # fitnet (the failed teacher's) is skipped; ld takes the free slot
    assert _names(steps) == [('fitnet_seed0', True), ('ld_seed0', False)]
    assert steps[1].teacher_ckpt == 'gfl.pth'
    _start_all(sched, steps)
    for run in list(sched.running):
        sched.mark_finished(run, None)
    assert not sched.active
    assert sched.failed == ['teacher', 'fitnet_seed0']


def test_skips_respect_the_free_slots_like_starts():
    # with jobs=1 and a run going, nothing is decided, not even a skip
    plan = _plan(seeds=(0, ))
    sched = RunScheduler(plan, jobs=1)
    _start_all(sched, sched.ready())
    sched.mark_failed(plan[0])
    _start_all(sched, sched.ready())  # baseline
    assert sched.ready() == []
    sched.mark_finished(plan[1], 'b.pth')
    assert _names(sched.ready()) == [('fitnet_seed0', True)]


def test_runs_done_earlier_release_their_students():
    plan = _plan(seeds=(0, ))
    sched = RunScheduler(plan, jobs=2)
    sched.mark_finished(plan[0], 'old/teacher.pth')  # read back, not run
    steps = sched.ready()
    assert _names(steps) == [('baseline_seed0', False),
                             ('fitnet_seed0', False)]
    assert steps[1].teacher_ckpt == 'old/teacher.pth'


def test_students_of_a_teacher_that_never_runs_are_skipped():
    # a plan without the teacher: nothing runs, nothing can start
    plan = [r for r in _plan(seeds=(0, )) if r.role != 'teacher']
    sched = RunScheduler(plan, jobs=1)
    _start_all(sched, sched.ready())
    assert sched.ready() == []
    sched.mark_finished(plan[0], 'b.pth')
    assert _names(sched.ready()) == [('fitnet_seed0', True)]


def test_jobs_must_be_positive():
    with pytest.raises(ValueError, match='jobs'):
        RunScheduler(_plan(), jobs=0)
