"""Orchestration: plan, run (resumably) and report an experiment."""
import dataclasses
import json
import os
import os.path as osp
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .dataset_configs import DataSpec
from .methods import methods_for
from .presets import get_preset
from .progress import Progress
from .results_plot import plot_results
from .results_report import build_results, write_json, write_markdown
from .run_configs import METRIC_KEYS, run_config, write_config
from .run_executor import RunFailed, execute_run, read_result
from .run_plan import Run, plan_runs
from .scalars_log import train_curves

__all__ = ['ExperimentOptions', 'ExperimentFailed', 'run_experiments']


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
    title: Optional[str] = field(default=None)
    jobs: int = 1


class ExperimentFailed(RuntimeError):
    """Some runs failed; the others finished and the reports are written."""


def _write_reports(opts, preset, seeds, methods, plan, results, configs,
                   classes) -> dict:
    _, _, metric = METRIC_KEYS[opts.task]
    sched = preset.schedule
    schedule = dict(
        preset=preset.name, teacher_iters=sched.teacher_iters,
        student_iters=sched.student_iters, batch_size=sched.batch_size,
        lr=sched.lr, policy=sched.policy, input_scale=list(preset.scale),
        crop=list(preset.crop) if preset.crop else None,
        seeds=list(seeds), teacher_ckpt=opts.teacher_ckpt,
        data_root=osp.abspath(opts.data.root), train=opts.data.train,
        val=opts.data.val, classes=list(classes))
    doc = build_results(opts.task, metric, seeds, results, methods,
                        preset.default_arch, configs, schedule)
    root = opts.work_dir
    write_json(doc, osp.join(root, 'results.json'))
    title = opts.title or (f'{opts.task} distillation on '
                           f'{osp.basename(osp.abspath(opts.data.root))} '
                           f'({preset.name})')
    seconds = {r['name']: r['seconds'] for r in results.values()
               if r.get('iters')}
    write_markdown(doc, osp.join(root, 'results.md'), title, opts.command,
                   seconds)
    manifest = []
    for run in plan:
        res = results.get(run.name)
        manifest.append(dict(
            name=run.name, role=run.role, seed=run.seed,
            method=run.method.name if run.method else None,
            config=run.config_path(root), work_dir=run.work_dir(root),
            log=osp.join(run.work_dir(root), 'run.log'),
            checkpoint=res['checkpoint'] if res else None,
            metric=res['metric'] if res else None,
            seconds=res['seconds'] if res else None,
            status='done' if res else 'pending or failed'))
    write_json(dict(runs=manifest), osp.join(root, 'runs.json'))
    first = seeds[0]
    curves = {}
    for run in plan:
        if run.seed == first and run.role != 'teacher' and \
                run.name in results:
            label = run.name.rsplit('_seed', 1)[0]
            curves[label] = train_curves(run.work_dir(root))
    plot_results(doc, curves, osp.join(root, 'results.png'), title)
    return doc


def run_experiments(opts: ExperimentOptions,
                    echo: Callable[[str], None] = print) -> dict:
    """Run (or resume) an experiment and write its reports.

    Returns:
        The ``results.json`` document.

    Raises:
        ExperimentFailed: if any run failed (after running all the others
            and writing the reports of what finished).
    """
    preset = get_preset(opts.task, opts.preset)
    overrides = {k: v for k, v in (('teacher_iters', opts.teacher_iters),
                                   ('student_iters', opts.student_iters))
                 if v is not None}
    if overrides:
        preset = dataclasses.replace(preset, schedule=dataclasses.replace(
            preset.schedule, **overrides))
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

    def config_for(run: Run, teacher_ckpt: Optional[str]) -> str:
        cfg = run_config(preset, opts.data, classes,
                         'distill' if run.role == 'distill' else run.role,
                         run.arch, run.method, teacher_ckpt,
                         opts.cfg_options)
        return write_config(cfg, run.config_path(root))

    if opts.jobs < 1:
        raise ValueError(f'jobs must be >= 1, got {opts.jobs}')
    lock = threading.Lock()

    def say(line: str) -> None:  # runs print from worker threads too
        with lock:
            echo(line)

    threads = None
    if opts.jobs > 1 and 'OMP_NUM_THREADS' not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    say(f'{len(plan)} runs ({opts.task}, preset {preset.name}, seeds '
        f'{seeds}, methods {[m.name for m in methods]}) in {root}' +
        (f', {opts.jobs} at a time' if opts.jobs > 1 else ''))
    progress = Progress(plan, say, jobs=opts.jobs)
    results: Dict[str, dict] = {}
    configs: Dict[str, str] = {}
    teacher_ckpts: Dict[str, str] = {}
    failed_teachers = set()
    failed: List[str] = []
    pending: List[Run] = []
    for run in plan:
        prev = read_result(run.work_dir(root))
        if prev is None:
            pending.append(run)
            continue
        results[run.name] = prev
        if run.role == 'teacher':
            teacher_ckpts[run.arch] = prev['checkpoint']
        if run.method is not None:
            configs[run.method.name] = prev['config']
        progress.finish(run, prev, skipped=True)

    def state(run: Run) -> str:
        """'go', 'wait' (teacher not trained yet) or 'skip'."""
        if run.role != 'distill' or run.arch in teacher_ckpts:
            return 'go'
        return 'skip' if run.arch in failed_teachers else 'wait'

    running: Dict = {}
    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        while pending or running:
            for run in list(pending):  # plan order: teachers first
                if len(running) >= opts.jobs:
                    break
                st = state(run)
                if st == 'wait':
                    continue
                pending.remove(run)
                if st == 'skip':
                    say(f'    {run.name}: skipped, its teacher failed')
                    failed.append(run.name)
                    progress.finish(run, None)
                    continue
                ckpt = teacher_ckpts[run.arch] \
                    if run.role == 'distill' else None
                path = config_for(run, ckpt)
                if run.method is not None:
                    configs[run.method.name] = osp.abspath(path)
                progress.start(run, 'evaluating the given teacher'
                               if run.iters == 0 else 'training')
                fut = pool.submit(
                    execute_run, run, root, opts.task,
                    checkpoint=opts.teacher_ckpt if run.iters == 0 else None,
                    echo=say, threads=threads)
                running[fut] = run
            if not running:  # only runs whose teacher never ran: skip them
                for run in pending:
                    failed_teachers.add(run.arch)
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                run = running.pop(fut)
                try:
                    res = fut.result()
                except RunFailed as e:
                    say(f'    {e}')
                    failed.append(run.name)
                    if run.role == 'teacher':
                        failed_teachers.add(run.arch)
                    progress.finish(run, None)
                    continue
                results[run.name] = res
                if run.role == 'teacher':
                    teacher_ckpts[run.arch] = res['checkpoint']
                progress.finish(run, res)
                _write_reports(opts, preset, seeds, methods, plan, results,
                               configs, classes)
    doc = _write_reports(opts, preset, seeds, methods, plan, results,
                         configs, classes)
    echo(f'results: {osp.join(root, "results.md")}')
    if failed:
        raise ExperimentFailed(f'{len(failed)} run(s) failed: {failed}; '
                               f'run the same command again to resume')
    return doc
