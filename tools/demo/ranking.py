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
from several runner invocations of one machine is pooled first with
``tools/analysis_tools/merge_results.py``. Runs of different sessions
(another machine: another teacher, other baselines) cannot be pooled, but
their methods can be ranked on one dataset: give each document as
``NAME=PATH`` with the same ``NAME``. Each method's gains are paired with
the baseline of its own document (a method may be in one document of a
dataset only), the dataset's ranks compare the methods of all of them, the
share of the gap closed divides by the mean of the documents' gaps (so
that no method gains rank from a session whose teacher came out weaker),
and the dataset's table row lists every document's teacher and baseline.
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
from typing import Dict, List, Optional, Sequence, Union

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


def _joined_info(name: str, parts: List[dict],
                 methods: List[List[str]]) -> dict:
    """One dataset's entry from its documents' infos (``parts`` and the
    methods of each kept under ``parts`` when there are several)."""
    if len(parts) == 1:
        return parts[0]
    for key in ('metric', 'budget', 'preset', 'student_iters'):
        if len({str(p[key]) for p in parts}) > 1:
            raise ValueError(f'dataset {name}: its documents differ in '
                             f'{key} ({[p[key] for p in parts]}); rank them '
                             f'as datasets of their own')
    info = {k: parts[0][k] for k in ('metric', 'preset', 'student_iters',
                                     'budget')}
    info['parts'] = [dict(p, methods=m) for p, m in zip(parts, methods)]
    return info


def _one_gap(info: dict, main: Dict[str, Dict[str, dict]],
             name: str) -> None:
    """Give the methods of a dataset of several documents one gap: the
    mean of the documents' teacher - baseline gaps (``info['gap']``)."""
    gaps = [p['teacher'] - p['baseline'] for p in info['parts']
            if p['teacher'] is not None and p['baseline'] is not None]
    gap = sum(gaps) / len(gaps) if gaps else None
    info['gap'] = _round(gap)
    for by_dataset in main.values():
        scores = by_dataset.get(name)
        if scores is not None:
            scores['gap_closed'] = None if gap is None or gap <= 0 else \
                round(scores['gain'] / gap, 3)


def sources_of(ranking: dict) -> Dict[str, List[str]]:
    """Dataset name -> its documents' paths (repository-relative), as
    ``build_ranking`` was given them, from a ranking document."""
    out: Dict[str, List[str]] = {}
    for task in ranking['tasks'].values():
        for entry in [task, task.get('time_matched', {})]:
            for name, info in entry.get('datasets', {}).items():
                out[name] = [p['source'] for p in info.get('parts', [info])]
    return out


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


def build_ranking(sources: Dict[str, Union[str, Sequence[str]]]) -> dict:
    """The ranking document of the ``results.json`` files.

    Args:
        sources: Dataset name -> path of its ``results.json``, or the paths
            of several documents of the dataset (runs of different
            sessions; each method in one of them, its gains paired with
            that document's baseline). Such a dataset's entry has
            ``parts`` (each document's info and methods) instead of one
            ``source``, ``teacher`` and ``baseline``.

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
    paths_of = {name: [paths] if isinstance(paths, str) else list(paths)
                for name, paths in sources.items()}
    for name, paths in paths_of.items():
        parts, part_methods, task = [], [], None
        for path in paths:
            with open(path) as f:
                doc = json.load(f)
            entry_of = tasks.setdefault(doc['task'], _new_entry())
            if doc.get('schedule', {}).get('budget', 'iters') == 'time':
                entry_of = entry_of.setdefault('time_matched', _new_entry())
            if task is not None and entry_of is not task:
                raise ValueError(f'dataset {name}: {path} is of another task '
                                 f'or budget than its other documents')
            task = entry_of
            parts.append(_dataset_info(path, doc))
            part_methods.append(sorted(doc['methods']))
            for method, entry in doc['methods'].items():
                scores = method_scores(doc, entry)
                if scores is None:
                    continue
                side = 'other_families' if 'arch' in entry else 'main'
                if 'arch' in entry:
                    scores['arch'] = entry['arch']
                by_dataset = task[side].setdefault(method, {})
                if name in by_dataset:
                    raise ValueError(f'dataset {name}: method {method} is '
                                     f'in two of its documents; pool them '
                                     f'with merge_results.py or keep one')
                by_dataset[name] = scores
        task['datasets'][name] = info = _joined_info(name, parts,
                                                     part_methods)
        if 'parts' in info:
            _one_gap(info, task['main'], name)
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
            _source_arg(name, p, len(paths) > 1)
            for name, paths in paths_of.items() for p in paths),
        tasks=tasks)


def _source_arg(name: str, path: str, named: bool) -> str:
    rel = osp.relpath(osp.abspath(path), REPO)
    return f'{name}={rel}' if named or dataset_name(path) != name else rel


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
        for part in info.get('parts', [info]):
            seeds = ', '.join(str(s) for s in part['seeds'] or [])
            label = name if 'parts' not in info else \
                f'{name} ({", ".join(part["methods"])})'
            lines.append(
                f'| {label} | {seeds} | {part["preset"]}, '
                f'{part["student_iters"]}, {part["budget"]} | '
                f'{part["teacher"]} | {part["baseline"]} |')
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
    parser.add_argument('results', nargs='+', metavar='[NAME=]PATH',
                        help="results.json files (the folder names the "
                        "dataset unless NAME= does; several documents of "
                        "one NAME: one dataset, runs of several sessions)")
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--markdown', metavar='PATH',
                        help='also write the cross-dataset tables')
    args = parser.parse_args(argv)
    sources: Dict[str, List[str]] = {}
    for arg in args.results:
        name, sep, path = arg.partition('=')
        if not sep:
            name, path = dataset_name(arg), arg
            if name in sources:
                parser.error(f'two results.json files in folders named '
                             f'{name}: give NAME=PATH to rank them as one '
                             f'dataset')
        sources.setdefault(name, []).append(path)
    try:
        doc = build_ranking(sources)
    except ValueError as e:
        parser.error(str(e))
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
