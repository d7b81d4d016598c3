"""Run counter and ETA of an experiment."""
import time
from typing import Callable, Dict, List, Optional

from .run_executor import RunResult
from .run_plan import Run

__all__ = ['Progress', 'format_seconds']


def format_seconds(seconds: Optional[float]) -> str:
    """``'1h02m'``, ``'3m05s'``, ``'42s'`` or ``'?'``."""
    if seconds is None:
        return '?'
    s = int(round(seconds))
    if s >= 3600:
        return f'{s // 3600}h{s % 3600 // 60:02d}m'
    if s >= 60:
        return f'{s // 60}m{s % 60:02d}s'
    return f'{s}s'


class Progress:
    """Prints ``[i/N] run: state (ETA ...)`` lines.

    The ETA sums, over the runs still to do, their iterations times the
    seconds per trained iteration (evaluation included) measured in this
    session: of the same config (another seed) if there is one, else of
    runs with the same iteration count, else of any run; with ``jobs`` runs
    at a time, divided by ``jobs`` (their seconds were measured side by
    side, so this assumes the runs keep the workers busy).

    Args:
        runs: All runs of the experiment, in order.
        echo: Where lines go.
        jobs: Runs trained at the same time.
    """

    def __init__(self, runs: List[Run],
                 echo: Callable[[str], None] = print, jobs: int = 1) -> None:
        self.runs = runs
        self.echo = echo
        self.jobs = max(1, jobs)
        self.rate: Dict[str, List[float]] = {}
        self.rate_by_iters: Dict[int, List[float]] = {}
        self.done = set()
        self.start_time = time.time()

    def _rate(self, run: Run) -> Optional[float]:
        for table, key in ((self.rate, run.config_name),
                           (self.rate_by_iters, run.iters)):
            if table.get(key):
                return sum(table[key]) / len(table[key])
        every = [r for v in self.rate.values() for r in v]
        return sum(every) / len(every) if every else None

    def eta(self) -> Optional[float]:
        """Seconds left, None while nothing has been measured."""
        total = 0.0
        for run in self.runs:
            if run.name in self.done or run.iters == 0:
                continue
            rate = self._rate(run)
            if rate is None:
                return None
            total += rate * run.iters
        return total / self.jobs

    def start(self, run: Run, note: str = '') -> None:
        i = self.runs.index(run) + 1
        self.echo(f'[{i}/{len(self.runs)}] {run.name}: {note or "running"} '
                  f'(elapsed {format_seconds(time.time() - self.start_time)}'
                  f', ETA {format_seconds(self.eta())})')

    def finish(self, run: Run, result: Optional[RunResult],
               skipped: bool = False) -> None:
        """Print that ``run`` ended (``result`` None: it failed)."""
        self.done.add(run.name)
        i = self.runs.index(run) + 1
        if result is None:
            self.echo(f'[{i}/{len(self.runs)}] {run.name}: FAILED')
            return
        trained = run.iters - result.resumed_from
        if not skipped and trained > 0:
            rate = result.seconds / trained
            self.rate.setdefault(run.config_name, []).append(rate)
            self.rate_by_iters.setdefault(run.iters, []).append(rate)
        what = 'already done' if skipped else \
            f'done in {format_seconds(result.seconds)}'
        self.echo(f'[{i}/{len(self.runs)}] {run.name}: {what}, metric '
                  f'{result.metric:.2f} (ETA {format_seconds(self.eta())})')
