"""Runs of an experiment as cluster jobs (Slurm through ``submitit``).

``--executor local`` (the default) trains each run as a subprocess of the
runner's machine, ``--jobs`` at a time. ``--executor slurm`` submits each
run that the scheduler releases as one Slurm job (``submitit``'s
``SlurmExecutor``): the job calls the same
:func:`~.run_executor.execute_run` on the cluster node, so a run's folder,
``result.json``, resume from its last checkpoint and the reports are the
same as locally, and a distilled student is only submitted once its
teacher's job has finished (the runner waits on the jobs). ``--jobs``
caps the jobs in the queue at once. ``--executor submitit-local`` is
submitit's ``LocalExecutor``: the same code path as Slurm (pickled job,
separate process, job folder and logs), on this machine; the tests use it.

The work dir must be on a file system that the nodes share with the
machine that runs ``tools/run_experiments.py`` (the runner reads each run's
``result.json`` and the teacher checkpoints from there). Job logs are under
``<work dir>/submitit/``.
"""
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from .run_executor import RunFailed, RunResult, execute_run

__all__ = ['EXECUTORS', 'ClusterOptions', 'make_executor', 'run_as_job']

#: Values of ``--executor``.
EXECUTORS = ('local', 'slurm', 'submitit-local')


@dataclass(frozen=True)
class ClusterOptions:
    """Where and with what resources the runs train.

    Attributes:
        executor: One of :data:`EXECUTORS`.
        partition: Slurm partition (None: the cluster's default).
        gpus: GPUs per job (one run uses at most one: ``tools/train.py``
            trains on one device).
        cpus: CPUs per job; also the run's ``OMP_NUM_THREADS``.
        timeout_min: Job time limit in minutes; a run cut by it resumes
            from its last checkpoint when the command is run again.
        mem_gb: Memory per job in GB (None: the partition's default).
        extra: More ``SlurmExecutor`` parameters (e.g. ``account``,
            ``qos``, ``constraint``), passed as they are.
    """

    executor: str = 'local'
    partition: Optional[str] = None
    gpus: int = 0
    cpus: int = 4
    timeout_min: int = 240
    mem_gb: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f'executor must be one of {list(EXECUTORS)}, '
                             f'got {self.executor!r}')
        if self.gpus < 0 or self.cpus < 1 or self.timeout_min < 1:
            raise ValueError(
                f'cluster resources: gpus must be >= 0, cpus >= 1 and '
                f'timeout_min >= 1, got {self.gpus}, {self.cpus} and '
                f'{self.timeout_min}')

    @property
    def on_cluster(self) -> bool:
        """Whether runs are submitted as jobs (not local subprocesses)."""
        return self.executor != 'local'

    def slurm_parameters(self) -> Dict[str, Any]:
        """``SlurmExecutor.update_parameters`` keywords: one task per job,
        :attr:`cpus` and :attr:`gpus` per task."""
        params: Dict[str, Any] = dict(
            nodes=1, ntasks_per_node=1, cpus_per_task=self.cpus,
            time=self.timeout_min)
        if self.gpus:
            params['gpus_per_node'] = self.gpus
        if self.partition is not None:
            params['partition'] = self.partition
        if self.mem_gb is not None:
            params['mem'] = f'{self.mem_gb}GB'
        params.update(self.extra)
        return params


def make_executor(opts: ClusterOptions, work_dir: str):
    """The ``submitit`` executor of ``opts`` (None for ``'local'``).

    Raises:
        ImportError: submitit is not installed (``pip install submitit``).
    """
    if not opts.on_cluster:
        return None
    try:
        import submitit
    except ImportError as e:  # pragma: no cover - tests install it
        raise ImportError(f'--executor {opts.executor} needs submitit: pip '
                          f'install submitit') from e
    folder = osp.join(osp.abspath(work_dir), 'submitit', '%j')
    if opts.executor == 'slurm':
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**opts.slurm_parameters())
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.timeout_min,
                                   gpus_per_node=opts.gpus)
    return executor


def run_as_job(executor, echo: Callable[[str], None], run, root: str,
               task: str, checkpoint: Optional[str],
               threads: Optional[int]) -> RunResult:
    """Submit :func:`execute_run` of ``run`` as one job and wait for it.

    The job prints its progress to its own log (``<work dir>/submitit/<job
    id>/``); here only the submission and the job id are echoed.

    Raises:
        RunFailed: the job failed (its error and log folder in the
            message), as a local run's failure does.
    """
    job = executor.submit(execute_run, run, root, task,
                          checkpoint=checkpoint, echo=print,
                          threads=threads)
    echo(f'    {run.name}: job {job.job_id} submitted '
         f'(logs: {job.paths.folder})')
    try:
        return job.result()
    except RunFailed:
        raise
    except Exception as e:  # submitit's FailedJobError, UncompletedJobError
        raise RunFailed(f'{run.name}: job {job.job_id} failed; logs: '
                        f'{job.paths.folder}\n{e}') from e
