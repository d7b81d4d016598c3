"""Rank the distillation methods across the published datasets.

Reads ``results.json`` files of ``tools/run_experiments.py`` (one per
dataset) and writes ``docs/results/ranking.json``, which ``make demo``
reads to pick its method::

    python tools/demo/ranking.py docs/results/bccd/results.json \\
        --out docs/results/ranking.json

Per task, a method's score is the share of the teacher-baseline gap it
closes (gain / (teacher - baseline mean), seed means), averaged over the
datasets it ran on: unlike the gain in metric points it is comparable
across datasets with different metrics and gaps. Ties go to the mean gain.
Each dataset entry also has the seed-paired gains (method minus the
baseline of the same seed), their 90 % Student-t interval (None for one
seed) and whether it is above zero; each ranked row counts the datasets
where it is (``datasets_above_zero``), which
``tools/run_experiments.py --recommend`` reads
(``visionkd/experiments/evidence.py``).
Only the methods of each experiment's main model family are ranked (their
gains read against the same teacher and baseline); a method of another
family (``arch`` in ``results.json``, e.g. LD on GFL) is listed under
``other_families`` with its own numbers but not ranked.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from visionkd.experiments.evidence import (  # noqa: E402
    gain_interval,
    paired_gains,
)

DEFAULT_OUT = osp.join(REPO, 'docs', 'results', 'ranking.json')


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def method_scores(doc: dict, entry: dict) -> Optional[dict]:
    """Mean, gain, gap closed and seed check of one ``results.json`` method.

    Args:
        doc: The dataset's ``results.json``.
        entry: One of its ``methods`` entries.

    Returns:
        ``{'metric', 'gain', 'gap_closed', 'beats_every_baseline_seed',
        'seeds', 'paired_gains', 'interval', 'interval_above_zero'}``
        (``gap_closed`` a fraction, None when the teacher is not above the
        baseline; ``interval`` the 90 % interval of the mean paired gain,
        None for one seed), or None if the method or its baseline has no
        finished seed.
    """
    teacher = entry.get('teacher', doc['teacher'])['metric']
    base = entry.get('baseline', doc['baseline'])['metric']
    mean, base_mean = _mean(entry['metric']), _mean(base)
    if mean is None or base_mean is None:
        return None
    gain = mean - base_mean
    closed = None
    if teacher is not None and teacher > base_mean:
        closed = gain / (teacher - base_mean)
    got = [v for v in entry['metric'] if v is not None]
    ref = [v for v in base if v is not None]
    pairs = paired_gains(entry['metric'], base)
    interval = gain_interval(pairs)
    return dict(metric=round(mean, 2), gain=round(gain, 2),
                gap_closed=None if closed is None else round(closed, 3),
                beats_every_baseline_seed=min(got) > max(ref),
                seeds=len(got), paired_gains=[round(g, 2) for g in pairs],
                interval=None if interval is None else
                [round(v, 2) for v in interval],
                interval_above_zero=interval is not None and
                interval[0] > 0)


def _dataset_info(path: str, doc: dict) -> dict:
    sched = doc.get('schedule', {})
    return dict(source=osp.relpath(osp.abspath(path), REPO),
                metric=doc['metric'], preset=sched.get('preset'),
                student_iters=sched.get('student_iters'),
                budget=sched.get('budget', 'iters'),
                seeds=sched.get('seeds'),
                teacher=doc['teacher']['metric'],
                baseline=_round(_mean(doc['baseline']['metric'])))


def _ranked(per_method: Dict[str, Dict[str, dict]]) -> List[dict]:
    rows = []
    for name, by_dataset in per_method.items():
        closed = [s['gap_closed'] for s in by_dataset.values()
                  if s['gap_closed'] is not None]
        rows.append(dict(
            method=name,
            gap_closed=round(sum(closed) / len(closed), 3) if closed
            else None,
            gain=round(sum(s['gain'] for s in by_dataset.values()) /
                       len(by_dataset), 2),
            datasets_above_zero=sum(s['interval_above_zero']
                                    for s in by_dataset.values()),
            datasets=by_dataset))
    rows.sort(key=lambda r: (r['gap_closed'] is None,
                             -(r['gap_closed'] or 0.0), -r['gain']))
    return [dict(rank=i + 1, **row) for i, row in enumerate(rows)]


def build_ranking(sources: Dict[str, str]) -> dict:
    """The ranking document of the ``results.json`` files.

    Args:
        sources: Dataset name -> path of its ``results.json``.

    Returns:
        ``{'score', 'tasks': {task: {'datasets': {...}, 'ranking': [...],
        'other_families': {...}}}}``; ``ranking`` is best first, each row
        ``{'rank', 'method', 'gap_closed', 'gain', 'datasets': {name:
        scores}}``.
    """
    tasks: Dict[str, dict] = {}
    for name, path in sources.items():
        with open(path) as f:
            doc = json.load(f)
        task = tasks.setdefault(doc['task'], dict(
            datasets={}, main={}, other_families={}))
        task['datasets'][name] = _dataset_info(path, doc)
        for method, entry in doc['methods'].items():
            scores = method_scores(doc, entry)
            if scores is None:
                continue
            if 'arch' in entry:
                scores['arch'] = entry['arch']
                task['other_families'].setdefault(method, {})[name] = scores
            else:
                task['main'].setdefault(method, {})[name] = scores
    for task in tasks.values():
        task['ranking'] = _ranked(task.pop('main'))
    return dict(
        score='mean over the datasets of the share of the teacher-baseline '
        'gap closed, gain / (teacher - baseline mean) over the seed means; '
        'ties: mean gain in metric points. Main model family of each '
        'experiment only; other families are listed, not ranked.',
        command='python tools/demo/ranking.py ' + ' '.join(
            osp.relpath(osp.abspath(p), REPO) for p in sources.values()),
        tasks=tasks)


def dataset_name(path: str) -> str:
    """``docs/results/bccd/results.json`` -> ``'bccd'``."""
    return osp.basename(osp.dirname(osp.abspath(path)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', nargs='+',
                        help="results.json files (the folder names the "
                        "dataset)")
    parser.add_argument('--out', default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    sources = {dataset_name(p): p for p in args.results}
    if len(sources) != len(args.results):
        parser.error('two results.json files in folders of the same name')
    doc = build_ranking(sources)
    with open(args.out, 'w') as f:
        json.dump(doc, f, indent=2)
        f.write('\n')
    for task, entry in doc['tasks'].items():
        print(f'{task}: ' + ', '.join(
            f'{r["rank"]}. {r["method"]}' for r in entry['ranking']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
