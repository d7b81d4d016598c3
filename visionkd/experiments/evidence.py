"""How sure a method's gain is: paired gains, intervals, a recommendation.

A distilled run and the baseline run of the same seed share the seed's
initialisation and data order, so their difference (the *paired gain*) is
what a method adds, with the seed's luck cancelled as far as it can be.
Over ``n`` seeds the mean paired gain gets a two-sided Student-t interval
(90 %, i.e. its lower end is a one-sided 95 % bound):

    ``mean +- t_{0.95, n-1} * sd / sqrt(n)``

which is wide for two seeds (``t = 6.31``) on purpose: two seeds cannot
separate methods whose gains differ by less than the seed spread (issue
#19 measured a baseline moving by 7 mAP between two seeds on a held-out
set). :func:`recommend` reads the cross-dataset ranking
(``docs/results/ranking.json``, ``tools/demo/ranking.py``) and names the
method whose interval is above zero on the most datasets, saying on how
many datasets and seeds that rests.
"""
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ['CONFIDENCE', 'paired_gains', 'gain_interval', 'recommend']

#: Two-sided level of :func:`gain_interval`.
CONFIDENCE = 0.90


def paired_gains(metric: Sequence[Optional[float]],
                 baseline: Sequence[Optional[float]]) -> List[float]:
    """Method minus baseline, seed by seed (seeds where either has no
    result are left out).

    Args:
        metric: The method's metric per seed, in the experiment's seed
            order.
        baseline: The baseline's metric per seed, same order.
    """
    if len(metric) != len(baseline):
        raise ValueError(f'{len(metric)} method seeds but {len(baseline)} '
                         f'baseline seeds: the gains cannot be paired')
    return [round(m - b, 4) for m, b in zip(metric, baseline)
            if m is not None and b is not None]


def _t_quantile(q: float, df: int) -> float:
    from scipy.stats import t
    return float(t.ppf(q, df))


def gain_interval(gains: Sequence[float],
                  confidence: float = CONFIDENCE
                  ) -> Optional[Tuple[float, float]]:
    """Two-sided Student-t interval of the mean paired gain.

    Returns:
        ``(low, high)``, or None with fewer than two gains (one seed says
        nothing about the spread).
    """
    n = len(gains)
    if n < 2:
        return None
    mean = statistics.fmean(gains)
    half = _t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(
        gains) / math.sqrt(n)
    return (mean - half, mean + half)


def _support(row: dict) -> Tuple[List[str], List[str], int]:
    """(datasets with the interval above zero, below zero, fewest
    seeds) of a ranking row."""
    above, below = [], []
    for name, scores in row['datasets'].items():
        interval = scores.get('interval')
        if interval is None:
            continue
        if interval[0] > 0:
            above.append(name)
        elif interval[1] < 0:
            below.append(name)
    seeds = min((s['seeds'] for s in row['datasets'].values()), default=0)
    return above, below, seeds


def _level(above: List[str], below: List[str]) -> str:
    if len(above) >= 3 and not below:
        return 'strong'
    if len(above) >= 2 and not below:
        return 'moderate'
    return 'weak'


def recommend(ranking: dict, task: str,
              methods: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """The method to try first on a new dataset of ``task``.

    The ranked method (main family) whose paired-gain interval is above
    zero on the most datasets; ties go to the ranking (mean gap closed).

    Args:
        ranking: ``docs/results/ranking.json``.
        task: ``'det'`` or ``'seg'``.
        methods: Only these (e.g. the ones that run on the user's models).

    Returns:
        ``{'method', 'confidence', 'reason', 'runner_up', 'time_matched'}``;
        ``method`` is None when no method's interval is above zero
        anywhere; ``time_matched`` (None without such evidence) is
        ``{'above', 'below', 'datasets', 'reason'}`` of the method on the
        ranking's equal-wall-clock-time datasets (the choice and its
        confidence rest on the equal-iteration ones).
        ``confidence``: ``'strong'`` (above zero on >= 3 datasets, below
        on none), ``'moderate'`` (>= 2, below on none), ``'weak'`` (one
        dataset, or below zero somewhere) or ``'none'``.
    """
    if task not in ranking.get('tasks', {}):
        raise ValueError(f'no {task} evidence in the ranking (tasks: '
                         f'{sorted(ranking.get("tasks", {}))})')
    entry = ranking['tasks'][task]
    rows = [r for r in entry['ranking']
            if methods is None or r['method'] in methods]
    scored = []
    for row in rows:
        above, below, seeds = _support(row)
        scored.append((len(above), row['rank'], row, above, below, seeds))
    scored.sort(key=lambda s: (-s[0], s[1]))
    n_sets = len(entry['datasets'])
    if not scored or scored[0][0] == 0:
        return dict(method=None, confidence='none', runner_up=None,
                    reason=f'no {task} method\'s {CONFIDENCE:.0%} paired-'
                    f'gain interval is above zero on any of the {n_sets} '
                    f'dataset(s): compare the top methods on your data '
                    f'(tools/run_experiments.py, 3 seeds or more)')
    count, _, row, above, below, seeds = scored[0]
    level = _level(above, below)
    reason = (f'{row["method"]}: its {CONFIDENCE:.0%} paired-gain interval '
              f'is above zero on {count} of the {n_sets} {task} dataset(s) '
              f'({", ".join(above)}), {seeds} seed(s) at least')
    if below:
        reason += f'; below zero on {", ".join(below)}'
    timed = _time_matched(entry.get('time_matched'), row['method'])
    if timed is not None:
        reason += '; ' + timed['reason']
    if level != 'strong':
        reason += ('; the evidence rests on few datasets: confirm on your '
                   'data with the top methods')
    runner = scored[1][2]['method'] if len(scored) > 1 else None
    return dict(method=row['method'], confidence=level, reason=reason,
                runner_up=runner, time_matched=timed)


def _time_matched(entry: Optional[dict], method: str) -> Optional[dict]:
    """How ``method`` fares at equal wall-clock time (the ranking's
    ``time_matched`` entry; None where nothing was run at that budget)."""
    if not entry or not entry['datasets']:
        return None
    n_sets = len(entry['datasets'])
    row = next((r for r in entry['ranking'] if r['method'] == method),
               None)
    if row is None:
        return dict(above=[], below=[], datasets=n_sets,
                    reason=f'not run at equal wall-clock time (the '
                    f'{n_sets} time-matched dataset(s) lack it)')
    above, below, _ = _support(row)
    reason = (f'at equal wall-clock time (--budget time) its interval is '
              f'above zero on {len(above)} of {n_sets} dataset(s)'
              + (f' ({", ".join(above)})' if above else ''))
    if below:
        reason += f', below zero on {", ".join(below)}'
    return dict(above=above, below=below, datasets=n_sets, reason=reason)
