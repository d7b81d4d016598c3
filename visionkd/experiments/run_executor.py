"""Execute one run as ``tools/train.py`` / ``tools/test.py`` subprocesses.

Each run lives in its own folder. A finished run has ``result.json`` and is
never redone (its metric is read back); a run with checkpoints but no
result was interrupted and is resumed from its last checkpoint
(``tools/train.py --resume``). A teacher assistant's distiller checkpoint
is exported (``tools/export_student.py``) to a plain mmdet/mmseg
checkpoint and config, ``assistant.pth`` / ``assistant.py`` in its folder,
which the students via the assistant load as their teacher. Subprocesses
inherit the environment, so a crash (or a kill) of one run leaves the
runner and the other runs alone. The other way round, a runner stopped by
SIGTERM or SIGINT (:func:`stopping_runs_on_signal`) stops its live runs
first: a run left training on its own would go on writing (and pruning)
the checkpoints its resumed copy reads.
"""
import contextlib
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Set

from .presets import REPO_ROOT
from .run_configs import METRIC_KEYS
from .run_plan import Run
from .scalars_log import last_value

__all__ = ['RunFailed', 'RunResult', 'read_result', 'last_checkpoint',
           'checkpoint_iter', 'stream_command', 'execute_run',
           'stop_live_runs', 'stopping_runs_on_signal', 'EXPORTED_CKPT',
           'EXPORTED_CONFIG']

_TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
_TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
_EXPORT = osp.join(REPO_ROOT, 'tools', 'export_student.py')
#: An assistant's exported plain checkpoint and config, in its folder.
EXPORTED_CKPT = 'assistant.pth'
EXPORTED_CONFIG = 'assistant.py'


class RunFailed(RuntimeError):
    """A run's subprocess failed; the message ends with its log's tail."""


#: Keys of ``result.json``, in file order.
_RESULT_KEYS = ('name', 'role', 'method', 'seed', 'metric', 'checkpoint',
                'config', 'log', 'work_dir', 'iters', 'resumed_from',
                'seconds', 'exported')


@dataclass
class RunResult:
    """What a finished run produced (its ``result.json``).

    Attributes:
        name: The run's name.
        metric: Its val metric, 0-100.
        checkpoint: The evaluated checkpoint.
        config: Its config file.
        seconds: Wall time of this session's training and evaluation.
        role: ``'teacher'``, ``'baseline'`` or ``'distill'``.
        method: The method of a distilled run.
        seed: Random seed (None for a given teacher's evaluation).
        log: Its ``run.log``.
        work_dir: Its folder.
        iters: Training iterations (0: evaluation only).
        resumed_from: Iteration it resumed from (0: trained from scratch).
        exported: A teacher assistant's plain model checkpoint (its
            distiller checkpoint's student, ``tools/export_student.py``):
            the teacher of the students via the assistant.
    """

    name: str
    metric: float
    checkpoint: str
    config: str
    seconds: float
    role: Optional[str] = None
    method: Optional[str] = None
    seed: Optional[int] = None
    log: Optional[str] = None
    work_dir: Optional[str] = None
    iters: int = 0
    resumed_from: int = 0
    exported: Optional[str] = None

    @property
    def as_teacher(self) -> str:
        """The checkpoint a student of this run loads as its teacher."""
        return self.exported or self.checkpoint

    def to_dict(self) -> dict:
        """The ``result.json`` record."""
        return {k: getattr(self, k) for k in _RESULT_KEYS}

    @classmethod
    def from_dict(cls, record: dict) -> 'RunResult':
        return cls(**{k: record[k] for k in _RESULT_KEYS if k in record})


def read_result(run_dir: str) -> Optional[RunResult]:
    """The saved result of a finished run, or None."""
    path = osp.join(run_dir, 'result.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return RunResult.from_dict(json.load(f))


def last_checkpoint(run_dir: str) -> Optional[str]:
    """The checkpoint mmengine recorded as the last one, if it exists."""
    marker = osp.join(run_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def checkpoint_iter(path: Optional[str]) -> int:
    """Iteration of an ``iter_<N>.pth`` checkpoint (0 if unknown)."""
    m = re.search(r'iter_(\d+)\.pth$', path or '')
    return int(m.group(1)) if m else 0


def _subprocess_env(threads: Optional[int] = None) -> dict:
    """The runner's environment, with passive OpenMP waiting by default.

    OpenMP threads that spin while waiting make torch several times slower
    when the cores are shared (a training step measured at about 15 s with
    spinning vs 4 s with ``OMP_WAIT_POLICY=PASSIVE`` on 2 cores under a
    load of 9); a value set by the user is kept.
    """
    env = os.environ.copy()
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    if threads is not None:
        env['OMP_NUM_THREADS'] = str(threads)
    return env


#: The run subprocesses alive now (every thread's), and whether the runner
#: is stopping (then no new one starts).
_LIVE: Set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def stop_live_runs(timeout: float = 10.0) -> int:
    """Stop every run subprocess alive now; start no new one after.

    Each gets SIGTERM, then SIGKILL if it has not exited ``timeout``
    seconds later. Their :func:`stream_command` calls raise
    :class:`RunFailed`; a later call raises it at once.

    Returns:
        How many subprocesses were stopped.
    """
    _STOPPING.set()
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return len(procs)


@contextlib.contextmanager
def stopping_runs_on_signal() -> Iterator[None]:
    """Within the block, SIGTERM or SIGINT to this process first stops
    its run subprocesses (:func:`stop_live_runs`), then exits as the signal
    would (``SystemExit(143)`` for SIGTERM, ``KeyboardInterrupt`` for
    SIGINT). Without it a ``kill`` of the runner leaves its runs training
    as orphans, which keep writing and pruning the checkpoints that the
    next ``run_experiments`` resumes from. A no-op outside the main thread
    (signal handlers live there); the previous handlers come back after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        stop_live_runs()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, handler)
           for sig in (signal.SIGTERM, signal.SIGINT)}
    _STOPPING.clear()
    try:
        yield
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev)
        _STOPPING.clear()


def stream_command(cmd: List[str], log_path: str,
                   echo: Callable[[str], None], prefix: str,
                   threads: Optional[int] = None) -> List[str]:
    """Run ``cmd``; append its output to the log; echo progress lines.

    Raises:
        RunFailed: if ``cmd`` exits non-zero, or the runner is stopping
            (:func:`stop_live_runs`).
    """
    lines = []
    with open(log_path, 'a') as log:
        log.write(f'$ {" ".join(cmd)}\n')
        log.flush()
        with _LIVE_LOCK:
            if _STOPPING.is_set():
                raise RunFailed(f'{prefix}: not started, the runner is '
                                f'stopping')
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    env=_subprocess_env(threads))
            _LIVE.add(proc)
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                lines.append(line)
                if 'Iter(train)' in line or 'Iter(val)' in line:
                    echo(f'    {prefix} '
                         f'{line.split(" - INFO - ")[-1].strip()}')
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # this thread was interrupted
                proc.kill()
                proc.wait()
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    if rc != 0:
        tail = ''.join(lines[-25:])
        raise RunFailed(f'{prefix}: {osp.basename(cmd[1])} exited with {rc}; '
                        f'log: {log_path}\n{tail}')
    return lines


def _test_metric(lines: List[str]) -> Optional[dict]:
    for line in reversed(lines):
        if line.startswith('test metrics: '):
            return json.loads(line[len('test metrics: '):])
    return None


def _seed_opt(run: Run) -> List[str]:
    return ['--cfg-options', f'randomness.seed={run.seed or 0}']


def _train(run: Run, work_dir: str, config: str, log: str, key: str,
           echo: Callable[[str], None], threads: Optional[int]):
    """Train (or resume) a run: (checkpoint, resumed_from, raw metric).

    The metric is the validation at the last iteration (None if it did not
    log).
    """
    ckpt = last_checkpoint(work_dir)
    cmd = [sys.executable, _TRAIN, config, '--work-dir', work_dir]
    resumed_from = 0
    if ckpt is not None:
        resumed_from = checkpoint_iter(ckpt)
        echo(f'    {run.name}: resuming from {ckpt}')
        cmd.append('--resume')
    stream_command(cmd + _seed_opt(run), log, echo, run.name, threads)
    checkpoint = last_checkpoint(work_dir)
    if checkpoint is None or checkpoint_iter(checkpoint) != run.iters:
        raise RunFailed(f'{run.name}: training ended without the '
                        f'iteration-{run.iters} checkpoint ({log})')
    return checkpoint, resumed_from, last_value(work_dir, key,
                                                step=run.iters)


def _evaluate(run: Run, work_dir: str, config: str, log: str, key: str,
              checkpoint: Optional[str], echo: Callable[[str], None],
              threads: Optional[int]) -> float:
    """Raw ``key`` metric of ``checkpoint`` from ``tools/test.py``."""
    if checkpoint is None:
        raise RunFailed(f'{run.name}: no checkpoint to evaluate')
    lines = stream_command([sys.executable, _TEST, config, checkpoint,
                            '--work-dir', osp.join(work_dir, 'test')] +
                           _seed_opt(run), log, echo, run.name, threads)
    metrics = _test_metric(lines)
    if metrics == {} and key.startswith('coco/'):
        # mmdet's CocoMetric returns no metrics when the model detected
        # nothing on the whole split: that is 0 mAP, not a failure.
        metrics = {key: 0.0}
    if metrics is None or key not in metrics:
        raise RunFailed(f'{run.name}: tools/test.py printed no {key} '
                        f'({log})')
    return metrics[key]


def _export(run: Run, work_dir: str, config: str, checkpoint: str,
            log: str, echo: Callable[[str], None],
            threads: Optional[int]) -> str:
    """Export an assistant's student to a plain checkpoint and config
    (``tools/export_student.py``); the checkpoint's path."""
    dst = osp.join(work_dir, EXPORTED_CKPT)
    stream_command([sys.executable, _EXPORT, checkpoint, dst, '--config',
                    config, '--out-config',
                    osp.join(work_dir, EXPORTED_CONFIG)],
                   log, echo, run.name, threads)
    return osp.abspath(dst)


def _save(result: RunResult, work_dir: str) -> None:
    tmp = osp.join(work_dir, 'result.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(result.to_dict(), f, indent=2)
    os.replace(tmp, osp.join(work_dir, 'result.json'))


def execute_run(run: Run, root: str, task: str,
                checkpoint: Optional[str] = None,
                echo: Callable[[str], None] = print,
                threads: Optional[int] = None) -> RunResult:
    """Train (or resume) and evaluate one run; return its result.

    An assistant run (``run.role == 'assistant'``) is also exported to a
    plain checkpoint (:attr:`RunResult.exported`).

    Args:
        run: The run.
        root: The experiment's work dir.
        task: ``'det'`` or ``'seg'``.
        checkpoint: For an evaluation-only run (``run.iters == 0``), the
            checkpoint to evaluate.
        echo: Where progress lines go.
        threads: ``OMP_NUM_THREADS`` of the subprocesses (None: inherit).

    Returns:
        The result (also saved as ``result.json``); ``metric`` is 0-100.
    """
    work_dir = run.work_dir(root)
    done = read_result(work_dir)
    if done is not None:
        return done
    os.makedirs(work_dir, exist_ok=True)
    config = run.config_path(root)
    log = osp.join(work_dir, 'run.log')
    key, factor, _ = METRIC_KEYS[task]
    start = time.time()
    resumed_from = 0
    value = None
    if run.iters > 0:
        checkpoint, resumed_from, value = _train(run, work_dir, config, log,
                                                 key, echo, threads)
    if value is None:  # evaluation-only run, or validation did not log
        value = _evaluate(run, work_dir, config, log, key, checkpoint, echo,
                          threads)
    exported = None
    if run.role == 'assistant':
        exported = _export(run, work_dir, config, checkpoint, log, echo,
                           threads)
    result = RunResult(
        name=run.name, role=run.role,
        method=run.method.name if run.method else None, seed=run.seed,
        metric=round(float(value * factor), 2),
        checkpoint=osp.abspath(checkpoint), config=osp.abspath(config),
        log=osp.abspath(log), work_dir=osp.abspath(work_dir),
        iters=run.iters, resumed_from=resumed_from,
        seconds=round(time.time() - start, 1), exported=exported)
    _save(result, work_dir)
    return result
