"""Orchestration: plan, run (resumably) and report an experiment.

:func:`run_experiments` is a few steps: :func:`_prepare` (preset, methods,
plan, ``experiment.json``), :func:`_restore` (runs finished in an earlier
session), :func:`_execute` (the thread pool, driven by the pure
:class:`~.scheduler.RunScheduler`) and :meth:`ExperimentState.write_reports`
(``results.json``, ``results.md``, ``runs.json``, ``results.png``).
"""
import dataclasses
import json
import os
import os.path as osp
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .dataset_configs import DataSpec
from .methods import MethodSpec, methods_for
from .presets import Preset, get_preset
from .progress import Progress
from .results_plot import plot_results
from .results_report import build_results, write_json, write_markdown
from .run_configs import METRIC_KEYS, run_config, write_config
from .run_executor import RunFailed, RunResult, execute_run, read_result
from .run_plan import Run, plan_runs
from .scalars_log import train_curves
from .scheduler import RunScheduler, Step

__all__ = ['ExperimentOptions', 'ExperimentFailed', 'ExperimentState',
           'run_experiments']


@dataclass
class ExperimentOptions:
    """Everything an experiment needs (the command line's arguments).

    Attributes:
        task: ``'det'`` or ``'seg'``.
        data: The dataset.
        work_dir: Output folder (created; reused to resume).
        preset: Preset name (``'tiny'``, ``'cpu-small'``, ``'gpu'``).
        methods: Method names; None = all of the task's methods.
        seeds: Student seeds.
        teacher_ckpt: A trained teacher of the preset's default family;
            skips teacher training.
        cfg_options: Overrides merged into every run's config.
        teacher_iters: Overrides the preset's teacher iterations.
        student_iters: Overrides the preset's student iterations.
        command: The command line, quoted in ``results.md``.
        title: Title of ``results.md`` and ``results.png`` (default: task,
            dataset folder and preset).
        jobs: Runs trained at the same time (each a subprocess). A
            distilled student waits for its teacher; teachers and baselines
            start at once. Unless ``OMP_NUM_THREADS`` is set, each run gets
            ``cpu_count // jobs`` threads.
    """

    task: str
    data: DataSpec
    work_dir: str
    preset: str = 'cpu-small'
    methods: Optional[List[str]] = None
    seeds: Sequence[int] = (0, )
    teacher_ckpt: Optional[str] = None
    cfg_options: Optional[dict] = None
    teacher_iters: Optional[int] = None
    student_iters: Optional[int] = None
    command: Optional[str] = None
    title: Optional[str] = None
    jobs: int = 1


class ExperimentFailed(RuntimeError):
    """Some runs failed; the others finished and the reports are written."""


@dataclass
class ExperimentState:
    """An experiment's plan and what has finished: what the reports show.

    Attributes:
        opts: The options.
        preset: The preset (with the iteration overrides).
        methods: The methods.
        seeds: The seeds.
        classes: Class names.
        plan: All runs, in plan order.
        results: Run name -> result of the finished runs.
        configs: Method name -> its config file.
    """

    opts: ExperimentOptions
    preset: Preset
    methods: List[MethodSpec]
    seeds: List[int]
    classes: List[str]
    plan: List[Run]
    results: Dict[str, RunResult] = field(default_factory=dict)
    configs: Dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.opts.work_dir

    def title(self) -> str:
        return self.opts.title or (
            f'{self.opts.task} distillation on '
            f'{osp.basename(osp.abspath(self.opts.data.root))} '
            f'({self.preset.name})')

    def write_config(self, run: Run, teacher_ckpt: Optional[str]) -> str:
        """Write ``run``'s config (remembered for its method); its path."""
        cfg = run_config(self.preset, self.opts.data, self.classes,
                         run.role, run.arch, run.method, teacher_ckpt,
                         self.opts.cfg_options)
        path = write_config(cfg, run.config_path(self.root))
        if run.method is not None:
            self.configs[run.method.name] = osp.abspath(path)
        return path

    def schedule(self) -> dict:
        """The ``schedule`` entry of ``results.json``."""
        opts, preset, sched = self.opts, self.preset, self.preset.schedule
        return dict(
            preset=preset.name, teacher_iters=sched.teacher_iters,
            student_iters=sched.student_iters, batch_size=sched.batch_size,
            lr=sched.lr, policy=sched.policy, input_scale=list(preset.scale),
            crop=list(preset.crop) if preset.crop else None,
            seeds=list(self.seeds), teacher_ckpt=opts.teacher_ckpt,
            data_root=osp.abspath(opts.data.root), train=opts.data.train,
            val=opts.data.val, classes=list(self.classes))

    def write_reports(self) -> dict:
        """Write every report of what has finished; the results document."""
        _, _, metric = METRIC_KEYS[self.opts.task]
        records = {name: r.to_dict() for name, r in self.results.items()}
        doc = build_results(self.opts.task, metric, self.seeds, records,
                            self.methods, self.preset.default_arch,
                            self.configs, self.schedule())
        write_json(doc, osp.join(self.root, 'results.json'))
        seconds = {r.name: r.seconds for r in self.results.values()
                   if r.iters}
        write_markdown(doc, osp.join(self.root, 'results.md'), self.title(),
                       self.opts.command, seconds)
        write_json(dict(runs=self.manifest()),
                   osp.join(self.root, 'runs.json'))
        plot_results(doc, self.curves(), osp.join(self.root, 'results.png'),
                     self.title())
        return doc

    def manifest(self) -> List[dict]:
        """``runs.json``: every run's config, log, checkpoint and status."""
        rows = []
        for run in self.plan:
            res = self.results.get(run.name)
            work_dir = run.work_dir(self.root)
            rows.append(dict(
                name=run.name, role=run.role, seed=run.seed,
                method=run.method.name if run.method else None,
                config=run.config_path(self.root), work_dir=work_dir,
                log=osp.join(work_dir, 'run.log'),
                checkpoint=res.checkpoint if res else None,
                metric=res.metric if res else None,
                seconds=res.seconds if res else None,
                status='done' if res else 'pending or failed'))
        return rows

    def curves(self) -> Dict[str, dict]:
        """Training curves of the finished students of the first seed."""
        first = self.seeds[0]
        return {run.name.rsplit('_seed', 1)[0]:
                train_curves(run.work_dir(self.root))
                for run in self.plan
                if run.seed == first and run.role != 'teacher'
                and run.name in self.results}


def _preset(opts: ExperimentOptions) -> Preset:
    """The preset with the command line's iteration overrides."""
    preset = get_preset(opts.task, opts.preset)
    overrides = {k: v for k, v in (('teacher_iters', opts.teacher_iters),
                                   ('student_iters', opts.student_iters))
                 if v is not None}
    if overrides:
        preset = dataclasses.replace(preset, schedule=dataclasses.replace(
            preset.schedule, **overrides))
    return preset


def _prepare(opts: ExperimentOptions) -> ExperimentState:
    """Check the options, plan the runs, write ``experiment.json``."""
    if opts.jobs < 1:
        raise ValueError(f'jobs must be >= 1, got {opts.jobs}')
    preset = _preset(opts)
    methods = methods_for(opts.task, opts.methods)
    seeds = list(opts.seeds)
    classes = opts.data.class_names(opts.task)
    root = opts.work_dir
    os.makedirs(root, exist_ok=True)
    if opts.teacher_ckpt is not None and not osp.isfile(opts.teacher_ckpt):
        raise FileNotFoundError(f'--teacher-ckpt {opts.teacher_ckpt!r} does '
                                f'not exist')
    sched = preset.schedule
    plan = plan_runs(methods, seeds, preset.default_arch,
                     sched.teacher_iters, sched.student_iters,
                     train_teacher=opts.teacher_ckpt is None)
    with open(osp.join(root, 'experiment.json'), 'w') as f:
        json.dump(dict(command=opts.command, task=opts.task,
                       preset=preset.name, seeds=seeds,
                       methods=[m.name for m in methods],
                       runs=[r.name for r in plan]), f, indent=2)
    return ExperimentState(opts, preset, methods, seeds, classes, plan)


def _restore(state: ExperimentState, scheduler: RunScheduler,
             progress: Progress) -> None:
    """Read back the runs that finished in an earlier session."""
    for run in state.plan:
        prev = read_result(run.work_dir(state.root))
        if prev is None:
            continue
        state.results[run.name] = prev
        if run.method is not None:
            state.configs[run.method.name] = prev.config
        scheduler.mark_finished(run, prev.checkpoint)
        progress.finish(run, prev, skipped=True)


@dataclass
class _Dispatcher:
    """Starts the released runs on the pool and collects their results."""

    state: ExperimentState
    scheduler: RunScheduler
    progress: Progress
    say: Callable[[str], None]
    threads: Optional[int]
    running: Dict[Future, Run] = field(default_factory=dict)

    def launch(self, pool: ThreadPoolExecutor, step: Step) -> None:
        run, opts = step.run, self.state.opts
        if step.skip:
            self.scheduler.mark_skipped(run)
            self.say(f'    {run.name}: skipped, its teacher failed')
            self.progress.finish(run, None)
            return
        self.state.write_config(run, step.teacher_ckpt)
        self.progress.start(run, 'evaluating the given teacher'
                            if run.iters == 0 else 'training')
        self.scheduler.mark_started(run)
        fut = pool.submit(
            execute_run, run, self.state.root, opts.task,
            checkpoint=opts.teacher_ckpt if run.iters == 0 else None,
            echo=self.say, threads=self.threads)
        self.running[fut] = run

    def collect(self, fut: Future) -> None:
        run = self.running.pop(fut)
        try:
            res = fut.result()
        except RunFailed as e:
            self.say(f'    {e}')
            self.scheduler.mark_failed(run)
            self.progress.finish(run, None)
            return
        self.state.results[run.name] = res
        self.scheduler.mark_finished(run, res.checkpoint)
        self.progress.finish(run, res)
        self.state.write_reports()


def _execute(state: ExperimentState, scheduler: RunScheduler,
             progress: Progress, say: Callable[[str], None],
             threads: Optional[int]) -> None:
    """Run what the scheduler releases, ``jobs`` at a time."""
    side = _Dispatcher(state, scheduler, progress, say, threads)
    with ThreadPoolExecutor(max_workers=scheduler.jobs) as pool:
        while scheduler.active:
            for step in scheduler.ready():
                side.launch(pool, step)
            if not side.running:
                continue
            done, _ = wait_futures(list(side.running),
                                   return_when=FIRST_COMPLETED)
            for fut in done:
                side.collect(fut)


def _threads_per_run(jobs: int) -> Optional[int]:
    """``OMP_NUM_THREADS`` of each run (None: inherit)."""
    if jobs > 1 and 'OMP_NUM_THREADS' not in os.environ:
        return max(1, (os.cpu_count() or 1) // jobs)
    return None


def _serialized(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` behind a lock (runs print from worker threads too)."""
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)
    return say


def run_experiments(opts: ExperimentOptions,
                    echo: Callable[[str], None] = print) -> dict:
    """Run (or resume) an experiment and write its reports.

    Returns:
        The ``results.json`` document.

    Raises:
        ExperimentFailed: if any run failed (after running all the others
            and writing the reports of what finished).
    """
    state = _prepare(opts)
    say = _serialized(echo)
    say(f'{len(state.plan)} runs ({opts.task}, preset {state.preset.name}, '
        f'seeds {state.seeds}, methods {[m.name for m in state.methods]}) '
        f'in {state.root}' +
        (f', {opts.jobs} at a time' if opts.jobs > 1 else ''))
    progress = Progress(state.plan, say, jobs=opts.jobs)
    scheduler = RunScheduler(state.plan, jobs=opts.jobs)
    _restore(state, scheduler, progress)
    _execute(state, scheduler, progress, say, _threads_per_run(opts.jobs))
    doc = state.write_reports()
    echo(f'results: {osp.join(state.root, "results.md")}')
    if scheduler.failed:
        raise ExperimentFailed(f'{len(scheduler.failed)} run(s) failed: '
                               f'{scheduler.failed}; run the same command '
                               f'again to resume')
    return doc
