"""Which runs of an experiment may start: a pure scheduler.

:class:`RunScheduler` only keeps state -- no I/O, no processes. The
orchestration (:mod:`.experiment`) asks it for the runs that are
:meth:`~RunScheduler.ready`, starts them and reports back with
``mark_started`` / ``mark_finished`` / ``mark_failed`` /
``mark_skipped``.

Rules: runs start in plan order (teachers first), at most ``jobs`` at a
time; a distilled student (or a teacher assistant) waits until its teacher
run (``Run.teacher``: the teacher of its model family, or for a student via
an assistant, that assistant; or every run of ``Run.teachers``) has
finished (it needs the checkpoint), and is skipped when that run failed or
was skipped.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

from .run_plan import Run

__all__ = ['Step', 'RunScheduler']


@dataclass(frozen=True)
class Step:
    """What to do with a run now.

    Attributes:
        run: The run.
        teacher_ckpt: For a distilled run, its teacher's checkpoint (a
            tuple, one per teacher, for a run with ``Run.teachers``).
        skip: Do not run it (its teacher failed); mark it skipped.
    """

    run: Run
    teacher_ckpt: Union[None, str, Tuple[str, ...]] = None
    skip: bool = False


class RunScheduler:
    """State of an experiment's runs: pending, running, finished, failed.

    Args:
        plan: The runs, in plan order.
        jobs: Runs at the same time.
    """

    def __init__(self, plan: Sequence[Run], jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f'jobs must be >= 1, got {jobs}')
        self.jobs = jobs
        self.pending: List[Run] = list(plan)
        self.running: List[Run] = []
        self.finished: List[str] = []
        #: Names of the runs that failed or were skipped, in that order.
        self.failed: List[str] = []
        self._teacher_ckpts: Dict[str, str] = {}
        self._failed_archs: Set[str] = set()
        #: Run name -> checkpoint of the finished teachers and assistants.
        self._ckpts: Dict[str, str] = {}
        self._failed_names: Set[str] = set()

    @property
    def active(self) -> bool:
        """Whether runs are still pending or running."""
        return bool(self.pending or self.running)

    def teacher_ckpt(self, arch: str) -> Optional[str]:
        """Checkpoint of the finished teacher of ``arch`` (None if not)."""
        return self._teacher_ckpts.get(arch)

    def _state(self, run: Run) -> Tuple[str, Union[None, str, tuple]]:
        """('go', teacher checkpoint or None), ('wait', None) (its teacher
        has not finished yet) or ('skip', None) (its teacher failed)."""
        if run.role not in ('distill', 'assistant') or (
                run.method is not None and
                not run.method.needs_teacher_run):
            return 'go', None
        if run.teachers:  # several: all must have finished
            if any(t in self._failed_names for t in run.teachers):
                return 'skip', None
            ckpts = tuple(self._ckpts.get(t) for t in run.teachers)
            return ('wait', None) if None in ckpts else ('go', ckpts)
        if run.teacher is None:  # the family's teacher
            ckpt = self._teacher_ckpts.get(run.arch)
            failed = run.arch in self._failed_archs
        else:
            ckpt = self._ckpts.get(run.teacher)
            failed = run.teacher in self._failed_names
        if ckpt is not None:
            return 'go', ckpt
        return ('skip' if failed else 'wait'), None

    def ready(self) -> List[Step]:
        """The runs to start or skip now, in plan order (changes nothing).

        Runs are taken in plan order while fewer than ``jobs`` run; a
        waiting student does not hold up the runs after it. If nothing runs
        and nothing can start, the students still waiting (their teacher
        never ran) are skipped.
        """
        steps, waiting = [], []
        free = self.jobs - len(self.running)
        for run in self.pending:
            if free <= 0:
                break
            state, ckpt = self._state(run)
            if state == 'wait':
                waiting.append(run)
            elif state == 'skip':
                steps.append(Step(run, skip=True))
            else:
                steps.append(Step(run, ckpt))
                free -= 1
        if not self.running and all(s.skip for s in steps):
            steps += [Step(run, skip=True) for run in waiting]
        return steps

    def _take(self, run: Run) -> None:
        if run in self.running:
            self.running.remove(run)
        else:
            self.pending.remove(run)

    def mark_started(self, run: Run) -> None:
        """``run`` (pending) is now running."""
        self.pending.remove(run)
        self.running.append(run)

    def mark_finished(self, run: Run, checkpoint: Optional[str]) -> None:
        """``run`` (running, or pending and done in an earlier session)
        finished; a teacher's (an assistant's) ``checkpoint`` releases its
        students."""
        self._take(run)
        self.finished.append(run.name)
        if run.role in ('teacher', 'assistant'):
            self._ckpts[run.name] = checkpoint
        if run.role == 'teacher':
            self._teacher_ckpts[run.arch] = checkpoint

    def mark_failed(self, run: Run) -> None:
        """``run`` failed; a teacher's (an assistant's) students will be
        skipped."""
        self._take(run)
        self.failed.append(run.name)
        self._failed_names.add(run.name)
        if run.role == 'teacher':
            self._failed_archs.add(run.arch)

    def mark_skipped(self, run: Run) -> None:
        """``run`` (pending) is not run (a :class:`Step` with ``skip``);
        the students of a skipped assistant are skipped too."""
        self._take(run)
        self.failed.append(run.name)
        self._failed_names.add(run.name)
