"""Orchestration: plan, run (resumably) and report an experiment.

:func:`run_experiments` is a few steps: :func:`_prepare` (preset, methods,
plan, ``experiment.json``, ``budget.json``), :func:`_budget` (``--budget
time``: timing probes and each distilled run's iterations), :func:`_restore`
(runs finished in an earlier session), :func:`_execute` (the thread pool,
driven by the pure :class:`~.scheduler.RunScheduler`) and
:meth:`ExperimentState.write_reports` (``results.json``, ``results.md``,
``runs.json``, ``results.png``).
"""
import dataclasses
import json
import os
import os.path as osp
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .cluster import ClusterOptions, make_executor, run_as_job
from .dataset_configs import DataSpec
from .methods import MethodSpec, methods_for
from .presets import Preset, get_preset
from .progress import Progress
from .results_plot import plot_results
from .results_report import build_results, write_json, write_markdown
from .run_configs import (
    METRIC_KEYS,
    assistant_cfg,
    check_overrides,
    family_optimizer,
    run_config,
    term_weights,
    write_config,
)
from .run_executor import (
    RunFailed,
    RunResult,
    execute_run,
    read_result,
    stopping_runs_on_signal,
)
from .run_plan import Run, plan_runs
from .scalars_log import train_curves
from .scheduler import RunScheduler, Step
from .time_budget import (
    BudgetBook,
    apply_budget,
    run_probe,
    stretched_schedule,
)

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
        cfg_options: Overrides merged into every run's config; a key
            ``'<method>:<key>'`` only into that method's runs.
        teacher_iters: Overrides the preset's teacher iterations.
        student_iters: Overrides the preset's student iterations.
        command: The command line, quoted in ``results.md``.
        title: Title of ``results.md`` and ``results.png`` (default: task,
            dataset folder and preset).
        jobs: Runs trained at the same time (each a subprocess). A
            distilled student waits for its teacher; teachers and baselines
            start at once. Unless ``OMP_NUM_THREADS`` is set, each run gets
            ``cpu_count // jobs`` threads.
        budget: ``'iters'``: every student trains ``student_iters``;
            ``'time'``: a distilled student gets the iterations that take
            it the baseline's time (see :mod:`.time_budget`).
        probe_iters: ``'time'``: timed iterations of each probe.
        probe_warmup: ``'time'``: probe iterations left out first.
        assistant: A teacher assistant of the families
            (``ModelPair.assistants``, e.g. ``'mid'``): trained distilled
            from the teacher, then the teacher of one more student per
            method and seed (``<method>_via_<assistant>``).
        assistant_method: Train one assistant with this method for all
            methods (of its family) instead of one per method.
        weight_rule: How the distilled runs' term weights are set
            (``run_configs.WEIGHT_RULES``): the methods' own (``'preset'``)
            or one gradient-share rule for all (``'grad_share'``;
            ``'grad_share_cap'``: weights only lowered).
        weight_target: The gradient share of the ``'grad_share*'`` rules.
        cluster: Where the runs train (:mod:`.cluster`): local
            subprocesses (default) or one Slurm job per run; with jobs,
            ``jobs`` caps the jobs in the queue and each run gets
            ``cluster.cpus`` threads.
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
    budget: str = 'iters'
    probe_iters: int = 10
    probe_warmup: int = 2
    assistant: Optional[str] = None
    assistant_method: Optional[str] = None
    weight_rule: str = 'preset'
    weight_target: float = 1.0
    cluster: ClusterOptions = field(default_factory=ClusterOptions)


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
        configs: Config name (a method's, ``<method>_via_<assistant>``,
            ``assistant_<assistant>_<method>``) -> its config file.
        budget: The budget mode and the students' iteration counts
            (``budget.json``).
    """

    opts: ExperimentOptions
    preset: Preset
    methods: List[MethodSpec]
    seeds: List[int]
    classes: List[str]
    plan: List[Run]
    budget: BudgetBook
    results: Dict[str, RunResult] = field(default_factory=dict)
    configs: Dict[str, str] = field(default_factory=dict)
    #: Distilled run name -> its terms' numeric settings (term_weights).
    weights: Dict[str, Dict[str, Dict[str, float]]] = field(
        default_factory=dict)

    @property
    def root(self) -> str:
        return self.opts.work_dir

    def title(self) -> str:
        return self.opts.title or (
            f'{self.opts.task} distillation on '
            f'{osp.basename(osp.abspath(self.opts.data.root))} '
            f'({self.preset.name})')

    def run_preset(self, run: Run) -> Preset:
        """The preset with a student's schedule stretched to its run."""
        if run.role in ('teacher', 'assistant'):
            return self.preset
        return dataclasses.replace(self.preset, schedule=stretched_schedule(
            self.preset.schedule, run.iters))

    def run_cfg(self, run: Run, teacher_ckpt: Optional[str]) -> dict:
        """The config dict of ``run``."""
        return run_config(self.run_preset(run), self.opts.data,
                          self.classes, run.role, run.arch, run.method,
                          teacher_ckpt, self.opts.cfg_options,
                          assistant=run.assistant,
                          weight_rule=self.opts.weight_rule,
                          weight_target=self.opts.weight_target)

    def write_config(self, run: Run, teacher_ckpt: Optional[str]) -> str:
        """Write ``run``'s config (remembered for the report); its path."""
        cfg = self.run_cfg(run, teacher_ckpt)
        path = write_config(cfg, run.config_path(self.root))
        if run.method is not None:
            self.configs[run.config_name] = osp.abspath(path)
            self.weights[run.name] = term_weights(cfg)
        return path

    def weights_line(self, run: Run) -> Optional[str]:
        """What the log says about a distilled run's term weights."""
        if run.name not in self.weights:
            return None
        rule = self.opts.weight_rule
        how = ('the method\'s preset weights' if rule == 'preset' else
               f'{rule} target {self.opts.weight_target:g} rescales them '
               f'at the start (see its run.log)')
        terms = '; '.join(
            f'{term}: ' + ', '.join(f'{k}={v:g}' for k, v in vals.items())
            for term, vals in self.weights[run.name].items())
        return f'{run.name}: weights ({how}) {terms}'

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
            val=opts.data.val, classes=list(self.classes),
            optimizer=self._optimizers(), budget=self.budget.mode,
            **self._assistant(), **self._weight_rule(),
            **self._time_budget())

    def _weight_rule(self) -> dict:
        """``weights`` of the schedule (absent for the methods' own)."""
        if self.opts.weight_rule == 'preset':
            return {}
        return dict(weights=f'{self.opts.weight_rule} (target '
                    f'{self.opts.weight_target:g})')

    def _assistant(self) -> dict:
        """``assistant`` (and ``assistant_method``) of the schedule."""
        if self.opts.assistant is None:
            return {}
        return dict(assistant=self.opts.assistant,
                    assistant_method=self.opts.assistant_method or
                    'each method')

    def _optimizers(self) -> str:
        """The optimizer of every model family the runs use, e.g.
        ``'faster_rcnn: SGD lr 0.02; rtmdet: AdamW lr 0.004'``."""
        archs = sorted({m.arch or self.preset.default_arch
                        for m in self.methods} or {self.preset.default_arch})
        parts = []
        for arch in archs:
            opt = family_optimizer(self.preset, arch, len(self.classes))
            parts.append(f'{arch}: {opt["type"]} lr {opt["lr"]}')
        return '; '.join(parts)

    def _time_budget(self) -> dict:
        """``time_budget`` of the schedule: probe and per-config counts."""
        if self.budget.mode != 'time':
            return {}
        return dict(time_budget=dict(probe=self.budget.probe,
                                     configs=self.budget.entries))

    def write_reports(self) -> dict:
        """Write every report of what has finished; the results document."""
        _, _, metric = METRIC_KEYS[self.opts.task]
        records = {name: r.to_dict() for name, r in self.results.items()}
        doc = build_results(self.opts.task, metric, self.seeds, records,
                            self.methods, self.preset.default_arch,
                            self.configs, self.schedule(),
                            assistant=self.opts.assistant,
                            assistants=self.assistant_runs())
        write_json(doc, osp.join(self.root, 'results.json'))
        trained = {r.name: r.iters - r.resumed_from
                   for r in self.results.values() if r.iters}
        seconds = {name: self.results[name].seconds for name in trained}
        write_markdown(doc, osp.join(self.root, 'results.md'), self.title(),
                       self.opts.command, seconds, trained)
        write_json(dict(runs=self.manifest()),
                   osp.join(self.root, 'runs.json'))
        plot_results(doc, self.curves(), osp.join(self.root, 'results.png'),
                     self.title())
        return doc

    def assistant_runs(self) -> Dict[str, str]:
        """Method name -> the assistant run its via-assistant students
        learn from (empty without ``--assistant``)."""
        return {run.method.name: run.teacher for run in self.plan
                if run.role == 'distill' and run.assistant is not None}

    def manifest(self) -> List[dict]:
        """``runs.json``: every run's config, log, checkpoint and status."""
        rows = []
        for run in self.plan:
            res = self.results.get(run.name)
            work_dir = run.work_dir(self.root)
            rows.append(dict(
                name=run.name, role=run.role, seed=run.seed,
                method=run.method.name if run.method else None,
                teacher=run.teacher or (list(run.teachers) or None),
                assistant=run.assistant,
                teacher_ckpt=self._teacher_ckpt(run),
                exported=res.exported if res else None,
                config=run.config_path(self.root), work_dir=work_dir,
                log=osp.join(work_dir, 'run.log'),
                checkpoint=res.checkpoint if res else None,
                metric=res.metric if res else None,
                seconds=res.seconds if res else None,
                iters=run.iters,
                seconds_per_iter=_per_iter(res),
                probe_seconds_per_iter=self.budget.entries.get(
                    run.config_name, {}).get('seconds_per_iter'),
                status='done' if res else 'pending or failed'))
        return rows

    def _teacher_ckpt(self, run: Run):
        """The checkpoint ``run`` learns from, once its teacher run (or
        assistant) has finished; a list for several teachers."""
        if run.teachers:
            done = [self.results.get(t) for t in run.teachers]
            return [d.as_teacher if d else None for d in done]
        done = self.results.get(run.teacher) if run.teacher else None
        return done.as_teacher if done else None

    def curves(self) -> Dict[str, dict]:
        """Training curves of the finished students of the first seed."""
        first = self.seeds[0]
        return {run.name.rsplit('_seed', 1)[0]:
                train_curves(run.work_dir(self.root))
                for run in self.plan
                if run.seed == first and run.role in ('baseline', 'distill')
                and run.name in self.results}


def _per_iter(res: Optional[RunResult]) -> Optional[float]:
    """A run's wall seconds per iteration trained in its last session
    (its evaluation included); None if it has not finished or trained."""
    if res is None or res.iters <= res.resumed_from:
        return None
    return round(res.seconds / (res.iters - res.resumed_from), 3)


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


def _assistant_method(opts: ExperimentOptions) -> Optional[MethodSpec]:
    """The spec of ``--assistant-method`` (None: each method's own)."""
    if opts.assistant_method is None:
        return None
    return methods_for(opts.task, [opts.assistant_method])[0]


def _check_assistants(preset: Preset, plan: List[Run],
                      num_classes: int) -> None:
    """Fail before any training if a family lacks the assistant."""
    for run in plan:
        if run.role == 'assistant':
            assistant_cfg(preset, run.arch, num_classes, run.assistant)


def _prepare(opts: ExperimentOptions) -> ExperimentState:
    """Check the options, plan the runs, write ``experiment.json``."""
    if opts.jobs < 1:
        raise ValueError(f'jobs must be >= 1, got {opts.jobs}')
    if opts.probe_iters < 1 or opts.probe_warmup < 0:
        raise ValueError(f'probe_iters must be >= 1 and probe_warmup >= 0, '
                         f'got {opts.probe_iters} and {opts.probe_warmup}')
    if opts.budget == 'time' and opts.cluster.executor == 'slurm':
        raise ValueError(
            "--budget time times each config with probes on this machine, "
            "but --executor slurm trains on the cluster's nodes: the "
            "probes would not measure their step times; run the time "
            "budget with --executor local (or submitit-local) on the "
            "machine type the runs use")
    preset = _preset(opts)
    methods = methods_for(opts.task, opts.methods)
    check_overrides(opts.cfg_options, [m.name for m in methods])
    seeds = list(opts.seeds)
    classes = opts.data.class_names(opts.task)
    root = opts.work_dir
    os.makedirs(root, exist_ok=True)
    if opts.teacher_ckpt is not None and not osp.isfile(opts.teacher_ckpt):
        raise FileNotFoundError(f'--teacher-ckpt {opts.teacher_ckpt!r} does '
                                f'not exist')
    sched = preset.schedule
    book = BudgetBook.open(osp.join(root, 'budget.json'), opts.budget,
                           sched.student_iters,
                           dict(warmup=opts.probe_warmup,
                                iters=opts.probe_iters))
    plan = plan_runs(methods, seeds, preset.default_arch,
                     sched.teacher_iters, sched.student_iters,
                     train_teacher=opts.teacher_ckpt is None,
                     assistant=opts.assistant,
                     assistant_method=_assistant_method(opts))
    _check_assistants(preset, plan, len(classes))
    with open(osp.join(root, 'experiment.json'), 'w') as f:
        json.dump(dict(command=opts.command, task=opts.task,
                       preset=preset.name, seeds=seeds,
                       methods=[m.name for m in methods], budget=book.mode,
                       assistant=opts.assistant,
                       assistant_method=opts.assistant_method,
                       runs=[r.name for r in plan]), f, indent=2)
    return ExperimentState(opts, preset, methods, seeds, classes, plan,
                           book)


def _probe_teacher(state: ExperimentState, run: Run):
    """The checkpoint of ``run``'s teacher (or assistant) for its probe,
    if it is trained (a probe only times the step: an untrained teacher of
    the same size costs the same); a tuple for several teachers."""
    if run.teachers:
        return tuple(_trained_ckpt(state, name) for name in run.teachers)
    return _trained_ckpt(state, run.teacher)


def _trained_ckpt(state: ExperimentState,
                  name: Optional[str]) -> Optional[str]:
    """The checkpoint of the teacher run ``name``, if it is trained."""
    for other in state.plan:
        if other.name == name:
            if other.iters == 0:
                return state.opts.teacher_ckpt
            done = read_result(other.work_dir(state.root))
            return done.as_teacher if done else None
    return None


def _budget(state: ExperimentState, say: Callable[[str], None],
            threads: Optional[int]) -> None:
    """Give the distilled runs their iterations (probing if needed)."""
    opts = state.opts

    def probe(run: Run) -> float:
        cfg = state.run_cfg(run, _probe_teacher(state, run))
        return run_probe(run.config_name, cfg, state.root,
                         opts.probe_warmup, opts.probe_iters, say, threads)

    state.plan = apply_budget(state.plan, state.budget,
                              osp.join(state.root, 'budget.json'), probe,
                              say)


def _restore(state: ExperimentState, scheduler: RunScheduler,
             progress: Progress) -> None:
    """Read back the runs that finished in an earlier session."""
    for run in state.plan:
        prev = read_result(run.work_dir(state.root))
        if prev is None:
            continue
        if run.iters and prev.iters != run.iters:
            raise ValueError(
                f'{run.name} finished with {prev.iters} iterations in '
                f'{state.root}, the plan gives it {run.iters} (budget '
                f'{state.budget.mode}): resume with the command that '
                f'started it, or use a new --work-dir')
        state.results[run.name] = prev
        if run.method is not None:
            state.configs[run.config_name] = prev.config
        scheduler.mark_finished(run, prev.as_teacher)
        progress.finish(run, prev, skipped=True)


@dataclass
class _Dispatcher:
    """Starts the released runs on the pool and collects their results."""

    state: ExperimentState
    scheduler: RunScheduler
    progress: Progress
    say: Callable[[str], None]
    threads: Optional[int]
    #: A submitit executor (None: local subprocesses).
    executor: Any = None
    running: Dict[Future, Run] = field(default_factory=dict)

    def launch(self, pool: ThreadPoolExecutor, step: Step) -> None:
        run, opts = step.run, self.state.opts
        if step.skip:
            self.scheduler.mark_skipped(run)
            self.say(f'    {run.name}: skipped, its teacher failed')
            self.progress.finish(run, None)
            return
        self.state.write_config(run, step.teacher_ckpt)
        line = self.state.weights_line(run)
        if line:
            self.say(f'    {line}')
        self.progress.start(run, 'evaluating the given teacher'
                            if run.iters == 0 else 'training')
        self.scheduler.mark_started(run)
        ckpt = opts.teacher_ckpt if run.iters == 0 else None
        if self.executor is None:
            fut = pool.submit(execute_run, run, self.state.root, opts.task,
                              checkpoint=ckpt, echo=self.say,
                              threads=self.threads)
        else:
            fut = pool.submit(run_as_job, self.executor, self.say, run,
                              self.state.root, opts.task, ckpt,
                              self.threads)
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
        self.scheduler.mark_finished(run, res.as_teacher)
        self.progress.finish(run, res)
        self.state.write_reports()


def _execute(state: ExperimentState, scheduler: RunScheduler,
             progress: Progress, say: Callable[[str], None],
             threads: Optional[int], executor: Any = None) -> None:
    """Run what the scheduler releases, ``jobs`` at a time (as local
    subprocesses, or as jobs of ``executor``)."""
    side = _Dispatcher(state, scheduler, progress, say, threads, executor)
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


def _threads_per_run(jobs: int, cluster: ClusterOptions
                     ) -> Optional[int]:
    """``OMP_NUM_THREADS`` of each run (None: inherit)."""
    if cluster.on_cluster:
        return cluster.cpus
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
        f'seeds {state.seeds}, methods {[m.name for m in state.methods]}, '
        f'budget {state.budget.mode}' +
        (f', assistant {opts.assistant}' if opts.assistant else '') +
        f') in {state.root}' +
        (f', {opts.jobs} at a time' if opts.jobs > 1 else '') +
        (f', as {opts.cluster.executor} jobs' if opts.cluster.on_cluster
         else ''))
    threads = _threads_per_run(opts.jobs, opts.cluster)
    # a kill of the runner stops its trainings and probes too
    with stopping_runs_on_signal():
        _budget(state, say, threads)
        progress = Progress(state.plan, say, jobs=opts.jobs)
        scheduler = RunScheduler(state.plan, jobs=opts.jobs)
        _restore(state, scheduler, progress)
        _execute(state, scheduler, progress, say, threads,
                 make_executor(opts.cluster, state.root))
    doc = state.write_reports()
    echo(f'results: {osp.join(state.root, "results.md")}')
    if scheduler.failed:
        raise ExperimentFailed(f'{len(scheduler.failed)} run(s) failed: '
                               f'{scheduler.failed}; run the same command '
                               f'again to resume')
    return doc
