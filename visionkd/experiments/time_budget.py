"""``--budget time``: every distilled student gets the baseline's time.

With the default ``--budget iters`` every student trains the preset's
``student_iters``; a distilled step also runs the teacher and the KD
losses, so a method is compared with a baseline that had less compute.
``--budget time`` gives a distilled run ``n = round(N * t_b / t_m)``
iterations instead, ``N`` the baseline's iterations, ``t_b`` and ``t_m``
the seconds per training iteration of the baseline and of the method, and
stretches its schedule (warm-up, cosine/poly) to ``n``.

Why a probe and not a stopwatch: stopping a method when the baseline's
measured seconds are used up makes the result depend on what else ran on
the machine at the time (the published CPU baselines of one experiment
took 399 s and 194 s for the same 300 iterations). Instead, before any
training, the runner trains every student config for ``warmup + iters``
iterations, one after the other with the same threads -- the baseline of
each model family, then each method, then the baselines again -- and
takes the median of mmengine's per-iteration ``time`` (data loading
included) after the warm-up. The median ignores load spikes; a method is
matched to its baseline's time interpolated between the two baseline
probes at the method's place in the order, which cancels a steady drift
of the load (two probes of the demo's baseline 4 minutes apart on the
shared 2-core machine gave 1.50 and 1.14 s); the probes of one session are
minutes apart, so their *ratio* holds when the absolute speed does not. A
method measured cheaper than its baseline (its step is the baseline's plus
the teacher's forward and the losses, so that is noise) keeps ``N``.

The counts are persisted in ``<work_dir>/budget.json`` when the probes
are done, before any training: a resumed experiment reads them back and
never re-derives a different count. A method added in a later session is
probed between fresh probes of its baseline, and its entry keeps the
baseline time it was matched against.
"""
import json
import os
import os.path as osp
import shutil
import statistics
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence

from .presets import REPO_ROOT, Schedule
from .run_configs import write_config
from .run_executor import RunFailed, stream_command
from .run_plan import Run
from .scalars_log import read_scalars

__all__ = ['BUDGETS', 'matched_iters', 'stretched_schedule', 'probe_cfg',
           'seconds_per_iter', 'run_probe', 'BudgetBook', 'apply_budget']

#: The values of ``--budget``.
BUDGETS = ('iters', 'time')
_TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')


def matched_iters(base_iters: int, base_seconds: float,
                  method_seconds: float) -> int:
    """Iterations that take a method the baseline's training time.

    Args:
        base_iters: The baseline's iterations ``N``.
        base_seconds: Seconds per iteration of the baseline ``t_b``.
        method_seconds: Seconds per iteration of the method ``t_m``.

    Returns:
        ``round(N * t_b / t_m)``, at least 1 and at most ``N``.
    """
    if base_seconds <= 0 or method_seconds <= 0:
        raise ValueError(f'seconds per iteration must be > 0, got baseline '
                         f'{base_seconds} and method {method_seconds}')
    return max(1, min(base_iters,
                      round(base_iters * base_seconds / method_seconds)))


def stretched_schedule(schedule: Schedule, iters: int) -> Schedule:
    """``schedule`` with the students' run shrunk or stretched to ``iters``.

    The warm-up keeps its share of the run (50 of 300 iterations stay one
    sixth), so a time-matched student follows the baseline's learning-rate
    curve on a shorter time axis.
    """
    if iters == schedule.student_iters:
        return schedule
    warm = round(schedule.warmup_iters * iters / schedule.student_iters)
    return replace(schedule, student_iters=iters, warmup_iters=warm)


def probe_cfg(cfg: dict, warmup: int, iters: int) -> dict:
    """A run config cut to a timing probe of ``warmup + iters`` iterations.

    The probe logs every iteration, saves no checkpoint and does not
    validate; model, data, optimiser and threads are the run's.
    """
    cfg = dict(cfg)
    total = warmup + iters
    cfg['train_cfg'] = dict(cfg['train_cfg'], max_iters=total,
                            val_interval=total + 1)
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator'):
        cfg[key] = None
    hooks = dict(cfg.get('default_hooks') or {})
    hooks['checkpoint'] = None
    hooks['logger'] = dict(hooks.get('logger') or dict(type='LoggerHook'),
                           interval=1)
    cfg['default_hooks'] = hooks
    return cfg


def seconds_per_iter(records: List[dict], warmup: int) -> Optional[float]:
    """Median per-iteration ``time`` of the logged steps after ``warmup``.

    Args:
        records: mmengine ``scalars.json`` records (``step``, ``time``).
        warmup: Steps to leave out (allocation, first data loading).

    Returns:
        Seconds per iteration, or None if no step after the warm-up has a
        ``time``.
    """
    times = [float(r['time']) for r in records
             if 'time' in r and int(r.get('step', 0)) > warmup]
    return statistics.median(times) if times else None


def run_probe(name: str, cfg: dict, root: str, warmup: int, iters: int,
              echo: Callable[[str], None] = print,
              threads: Optional[int] = None) -> float:
    """Train ``cfg`` as a timing probe; its seconds per iteration.

    The probe's config and work dir are ``<root>/probes/<name>.py`` and
    ``<root>/probes/<name>/`` (emptied first).

    Raises:
        RunFailed: if the probe fails or logs no iteration time.
    """
    work_dir = osp.join(root, 'probes', name)
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    config = write_config(probe_cfg(cfg, warmup, iters), work_dir + '.py')
    log = osp.join(work_dir, 'probe.log')
    stream_command([sys.executable, _TRAIN, config, '--work-dir', work_dir,
                    '--cfg-options', 'randomness.seed=0'],
                   log, lambda line: None, f'probe {name}', threads)
    seconds = seconds_per_iter(read_scalars(work_dir), warmup)
    if seconds is None:
        raise RunFailed(f'probe {name}: no iteration time after the '
                        f'{warmup} warm-up iterations in {work_dir}')
    return seconds


@dataclass
class BudgetBook:
    """``budget.json``: the budget mode and each student config's count.

    Attributes:
        mode: ``'iters'`` or ``'time'``.
        student_iters: The baseline's iterations ``N``.
        probe: ``{'warmup': w, 'iters': n}`` of the timing probes.
        entries: Config name -> ``{'iters': n, 'seconds_per_iter': t}``
            (a method's entry also has ``baseline`` and
            ``baseline_seconds_per_iter``, the probe it was matched to).
    """

    mode: str
    student_iters: int
    probe: Dict[str, int] = field(default_factory=dict)
    entries: Dict[str, dict] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str, mode: str, student_iters: int,
             probe: Dict[str, int]) -> 'BudgetBook':
        """The work dir's book, or a new one; a different mode fails.

        Raises:
            ValueError: if ``path`` was written with another budget or
                another baseline length (its finished runs would not be
                comparable with the new ones).
        """
        if mode not in BUDGETS:
            raise ValueError(f'budget must be one of {BUDGETS}, got '
                             f'{mode!r}')
        if not osp.isfile(path):
            return cls(mode, student_iters, dict(probe))
        with open(path) as f:
            doc = json.load(f)
        book = cls(doc['mode'], doc['student_iters'], doc.get('probe', {}),
                   doc.get('entries', {}))
        if (book.mode, book.student_iters) != (mode, student_iters):
            raise ValueError(
                f'{path} was written with --budget {book.mode} and '
                f'{book.student_iters} student iterations, this command '
                f'asks for --budget {mode} and {student_iters}: pass the '
                f'same --budget / --student-iters to resume, or use a new '
                f'--work-dir')
        return book

    def iters(self, config_name: str) -> Optional[int]:
        """The persisted iteration count of a config (None: not yet)."""
        entry = self.entries.get(config_name)
        return None if entry is None else entry['iters']

    def save(self, path: str) -> None:
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(dict(mode=self.mode, student_iters=self.student_iters,
                           probe=self.probe, entries=self.entries), f,
                      indent=2)
        os.replace(tmp, path)


def _baselines(plan: Sequence[Run], archs: Sequence[str]) -> List[Run]:
    """The first baseline run of each of ``archs`` (in plan order)."""
    out: Dict[str, Run] = {}
    for run in plan:
        if run.role == 'baseline' and run.arch in archs:
            out.setdefault(run.arch, run)
    missing = set(archs) - set(out)
    if missing:
        raise ValueError(f'no baseline run for the model families '
                         f'{sorted(missing)} to match the time of')
    return list(out.values())


def _pending(plan: Sequence[Run], book: BudgetBook) -> List[Run]:
    """One distilled run per config that has no count in the book yet."""
    todo, seen = [], set()
    for run in plan:
        if (run.role == 'distill' and run.config_name not in seen
                and run.config_name not in book.entries):
            todo.append(run)
            seen.add(run.config_name)
    return todo


def _probe_session(plan: Sequence[Run], todo: List[Run], book: BudgetBook,
                   probe: Callable[[Run], float],
                   echo: Callable[[str], None]) -> None:
    """Probe the baselines, ``todo``, the baselines again; fill the book.

    A method's reference is its baseline's time interpolated linearly
    between the two baseline probes at the method's place in the order,
    which cancels a steady drift of the machine's load over the session.
    """
    bases = _baselines(plan, list(dict.fromkeys(r.arch for r in todo)))
    order = bases + todo + bases
    times = []
    for i, run in enumerate(order):
        times.append(probe(run))
        echo(f'    probe {i + 1}/{len(order)} {run.config_name}: '
             f'{times[-1]:.3f} s/iteration')
    first = {r.arch: i for i, r in enumerate(bases)}
    last = {r.arch: len(order) - len(bases) + i for i, r in enumerate(bases)}
    for run in bases:
        pair = [times[first[run.arch]], times[last[run.arch]]]
        book.entries.setdefault(run.config_name, dict(
            iters=book.student_iters,
            seconds_per_iter=round(sum(pair) / 2, 4),
            probes=[round(t, 4) for t in pair]))
    for k, run in enumerate(todo, start=len(bases)):
        i, j = first[run.arch], last[run.arch]
        ref = times[i] + (times[j] - times[i]) * (k - i) / (j - i)
        book.entries[run.config_name] = dict(
            iters=matched_iters(book.student_iters, ref, times[k]),
            seconds_per_iter=round(times[k], 4),
            baseline=bases[i].config_name,
            baseline_seconds_per_iter=round(ref, 4))


def apply_budget(plan: Sequence[Run], book: BudgetBook, path: str,
                 probe: Callable[[Run], float],
                 echo: Callable[[str], None] = print) -> List[Run]:
    """The plan with each distilled run's iterations under ``book``.

    ``--budget iters`` leaves the plan as it is. ``--budget time`` probes
    (``probe(run)`` -> seconds per iteration) the methods not in the book
    yet, between two probes of their families' baselines, writes the
    counts to ``path`` and gives each distilled run its config's count.
    """
    if book.mode == 'time':
        todo = _pending(plan, book)
        if todo:
            _probe_session(plan, todo, book, probe, echo)
    book.save(path)
    return [replace(run, iters=book.iters(run.config_name))
            if run.role == 'distill' and book.iters(run.config_name)
            else run for run in plan]
