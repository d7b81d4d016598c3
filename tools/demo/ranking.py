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
(``visionkd/experiments/evidence.py``), and where it is below zero
(``datasets_below_zero``); ``ranks`` is its rank on each dataset by the
mean paired gain among the methods run there and ``mean_rank`` their
mean. ``--markdown PATH`` writes the cross-dataset tables of
docs/results/README.md (per dataset: seeds, teacher, baseline; per
method: mean paired gain and interval on each dataset, mean rank, count
of datasets with the interval above / below zero). A dataset's evidence
from several runner invocations is pooled first with
``tools/analysis_tools/merge_results.py``.
Only the methods of each experiment's main model family are ranked (their
gains read against the same teacher and baseline); a method of another
family (``arch`` in ``results.json``, e.g. LD on GFL) is listed under
``other_families`` with its own numbers but not ranked. A results.json of
``--budget time`` (every distilled student gets its baseline's training
time) is ranked apart, under the task's ``time_matched``, with tables of
its own: ``make demo`` and ``--recommend`` pick from the equal-iteration
ranking, and ``--recommend`` says how its method fares at equal time.
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


def _paired_mean(scores: dict) -> float:
    mean = _mean(scores['paired_gains'])
    return scores['gain'] if mean is None else mean


def dataset_ranks(per_method: Dict[str, Dict[str, dict]]
                  ) -> Dict[str, Dict[str, int]]:
    """Method -> {dataset: its rank there} (1 = the largest mean paired
    gain among the methods that ran on that dataset)."""
    ranks: Dict[str, Dict[str, int]] = {m: {} for m in per_method}
    datasets = sorted({d for by in per_method.values() for d in by})
    for name in datasets:
        ran = [(m, _paired_mean(by[name])) for m, by in per_method.items()
               if name in by]
        ran.sort(key=lambda mg: -mg[1])
        for i, (method, _) in enumerate(ran):
            ranks[method][name] = i + 1
    return ranks


def _ranked(per_method: Dict[str, Dict[str, dict]]) -> List[dict]:
    rows = []
    ranks = dataset_ranks(per_method)
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
            datasets_below_zero=sum(
                s['interval'] is not None and s['interval'][1] < 0
                for s in by_dataset.values()),
            mean_rank=round(sum(ranks[name].values()) / len(ranks[name]),
                            2),
            ranks=ranks[name],
            datasets=by_dataset))
    rows.sort(key=lambda r: (r['gap_closed'] is None,
                             -(r['gap_closed'] or 0.0), -r['gain']))
    return [dict(rank=i + 1, **row) for i, row in enumerate(rows)]


def _new_entry() -> dict:
    return dict(datasets={}, main={}, other_families={})


def build_ranking(sources: Dict[str, str]) -> dict:
    """The ranking document of the ``results.json`` files.

    Args:
        sources: Dataset name -> path of its ``results.json``.

    Returns:
        ``{'score', 'tasks': {task: {'datasets': {...}, 'ranking': [...],
        'other_families': {...}}}}``; ``ranking`` is best first, each row
        ``{'rank', 'method', 'gap_closed', 'gain', 'datasets': {name:
        scores}}``. The datasets run at equal wall-clock time
        (``schedule.budget == 'time'``) are ranked apart, under the task's
        ``time_matched`` (the same keys): their gains answer another
        question than those at equal iterations.
    """
    tasks: Dict[str, dict] = {}
    for name, path in sources.items():
        with open(path) as f:
            doc = json.load(f)
        task = tasks.setdefault(doc['task'], _new_entry())
        if doc.get('schedule', {}).get('budget', 'iters') == 'time':
            task = task.setdefault('time_matched', _new_entry())
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
        for entry in [task] + ([task['time_matched']]
                               if 'time_matched' in task else []):
            entry['ranking'] = _ranked(entry.pop('main'))
    return dict(
        score='mean over the datasets of the share of the teacher-baseline '
        'gap closed, gain / (teacher - baseline mean) over the seed means; '
        'ties: mean gain in metric points. Main model family of each '
        'experiment only; other families are listed, not ranked.',
        command='python tools/demo/ranking.py ' + ' '.join(
            osp.relpath(osp.abspath(p), REPO) for p in sources.values()),
        tasks=tasks)


def _gain_cell(scores: Optional[dict]) -> str:
    if scores is None:
        return '-'
    mean = _paired_mean(scores)
    if scores['interval'] is None:
        return f'{mean:+.1f} ({scores["seeds"]} seed)'
    low, high = scores['interval']
    mark = ' **>0**' if low > 0 else (' **<0**' if high < 0 else '')
    return f'{mean:+.1f} [{low:+.1f}, {high:+.1f}]{mark}'


def markdown_table(doc: dict) -> str:
    """The cross-dataset tables of a ranking document (one per task).

    Per dataset: seeds, teacher, baseline mean. Per method: its mean
    paired gain and 90 % interval on each dataset (bold mark when the
    interval is above or below zero), its mean rank over the datasets it
    ran on and on how many its interval is above / below zero. The
    time-matched datasets get their own tables after the task's.
    """
    lines = []
    for task, entry in doc['tasks'].items():
        if entry['datasets']:
            lines += _task_table(f'### {task}', entry)
        if 'time_matched' in entry:
            lines += _task_table(
                f'### {task}, equal wall-clock time (`--budget time`)',
                entry['time_matched'])
    return '\n'.join(lines)


def _task_table(title: str, entry: dict) -> List[str]:
    names = list(entry['datasets'])
    lines = [title, '',
             '| dataset | seeds | preset, student iterations, budget '
             '| teacher | baseline (mean) |', '|---|---|---|---|---|']
    for name, info in entry['datasets'].items():
        seeds = ', '.join(str(s) for s in info['seeds'] or [])
        lines.append(
            f'| {name} | {seeds} | {info["preset"]}, '
            f'{info["student_iters"]}, {info["budget"]} | '
            f'{info["teacher"]} | {info["baseline"]} |')
    lines += ['', '| method | ' + ' | '.join(names) +
              ' | mean rank | interval > 0 | interval < 0 |',
              '|---|' + '---|' * (len(names) + 3)]
    for row in entry['ranking']:
        cells = [_gain_cell(row['datasets'].get(n)) for n in names]
        lines.append(
            f'| {row["method"]} | ' + ' | '.join(cells) +
            f' | {row["mean_rank"]:.1f} | {row["datasets_above_zero"]}'
            f' of {len(row["datasets"])} | '
            f'{row["datasets_below_zero"]} |')
    return lines + ['']


def dataset_name(path: str) -> str:
    """``docs/results/bccd/results.json`` -> ``'bccd'``."""
    return osp.basename(osp.dirname(osp.abspath(path)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', nargs='+',
                        help="results.json files (the folder names the "
                        "dataset)")
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--markdown', metavar='PATH',
                        help='also write the cross-dataset tables')
    args = parser.parse_args(argv)
    sources = {dataset_name(p): p for p in args.results}
    if len(sources) != len(args.results):
        parser.error('two results.json files in folders of the same name')
    doc = build_ranking(sources)
    with open(args.out, 'w') as f:
        json.dump(doc, f, indent=2)
        f.write('\n')
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(markdown_table(doc))
    for task, entry in doc['tasks'].items():
        print(f'{task}: ' + ', '.join(
            f'{r["rank"]}. {r["method"]}' for r in entry['ranking']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
