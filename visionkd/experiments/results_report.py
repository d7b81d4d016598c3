"""``results.json`` and ``results.md`` of an experiment."""
import json
import math
import os
from typing import Dict, List, Optional, Sequence

__all__ = ['mean_std', 'build_results', 'write_json', 'write_markdown']


def mean_std(values: Sequence[Optional[float]]):
    """(mean, sample std, n) over the non-None values; (None, None, 0)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, 0.0, len(vals)
    var = sum((v - mean)**2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var), len(vals)


def build_results(task: str, metric: str, seeds: Sequence[int],
                  results: Dict[str, dict], methods: Sequence,
                  default_arch: str, configs: Dict[str, str],
                  schedule: dict) -> dict:
    """The ``results.json`` document (the issue's schema).

    ``{"task", "metric", "teacher": {"metric": x}, "baseline": {"metric":
    [per seed]}, "methods": {name: {"metric": [per seed], "config": path}},
    "schedule": {...}}``. A seed that has not finished is ``null``. A
    method of another model family also gets its own ``teacher`` and
    ``baseline`` entries and its family name as ``arch``.
    """
    def metric_of(name: str) -> Optional[float]:
        res = results.get(name)
        return None if res is None else res['metric']

    def sfx(arch):
        return '' if arch == default_arch else f'_{arch}'

    doc = dict(
        task=task, metric=metric,
        teacher=dict(metric=metric_of('teacher')),
        baseline=dict(metric=[metric_of(f'baseline_seed{s}')
                              for s in seeds]),
        methods={}, schedule=schedule)
    for m in methods:
        entry = dict(metric=[metric_of(f'{m.name}_seed{s}') for s in seeds],
                     config=configs.get(m.name))
        arch = m.arch or default_arch
        if arch != default_arch:
            entry['arch'] = arch
            entry['teacher'] = dict(metric=metric_of(f'teacher{sfx(arch)}'))
            entry['baseline'] = dict(metric=[
                metric_of(f'baseline{sfx(arch)}_seed{s}') for s in seeds])
        doc['methods'][m.name] = entry
    return doc


def write_json(doc: dict, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)


def _fmt(mean, std, n) -> str:
    if mean is None:
        return 'n/a'
    return f'{mean:.1f} ± {std:.1f}' if n > 1 else f'{mean:.1f}'


def _seeds(values) -> str:
    return ' / '.join('–' if v is None else f'{v:.1f}' for v in values)


def _method_row(name: str, values: List[Optional[float]],
                teacher: Optional[float], base: List[Optional[float]]) -> str:
    m, s, n = mean_std(values)
    bm, _, bn = mean_std(base)
    gain = closed = beyond = '–'
    if m is not None and bm is not None:
        gain = f'{m - bm:+.1f}'
        if teacher is not None and teacher > bm:
            closed = f'{100 * (m - bm) / (teacher - bm):.0f} %'
        got = [v for v in values if v is not None]
        ref = [v for v in base if v is not None]
        if n > 1 and bn > 1:
            beyond = 'yes' if min(got) > max(ref) else 'no'
    return (f'| {name} | {_fmt(m, s, n)} | {_seeds(values)} | {gain} | '
            f'{closed} | {beyond} |')


def write_markdown(doc: dict, path: str, title: str,
                   command: Optional[str] = None,
                   seconds: Optional[Dict[str, float]] = None) -> None:
    """The results table (teacher, baseline, methods) as markdown."""
    metric = doc['metric']
    teacher = doc['teacher']['metric']
    base = doc['baseline']['metric']
    bm, bs, bn = mean_std(base)
    lines = [f'# {title}', '']
    sched = doc['schedule']
    lines.append(', '.join(f'{k}: {v}' for k, v in sched.items()
                           if not isinstance(v, (dict, list))) + '.')
    lines.append('')
    if command:
        lines += ['```bash', command, '```', '']
    lines += [
        f'| model | {metric} (mean ± std) | per seed | gain | gap closed '
        '| all seeds > best baseline seed |',
        '|---|---|---|---|---|---|',
        f'| teacher | {"n/a" if teacher is None else f"{teacher:.1f}"} | '
        '| | | |',
        f'| baseline student | {_fmt(bm, bs, bn)} | {_seeds(base)} | | | |',
    ]
    # methods of the main family first, then one block per other family
    # (its own teacher and baseline, e.g. LD on GFL) so every gain reads
    # against the rows right above it
    families: Dict[Optional[str], List[str]] = {}
    for name, entry in doc['methods'].items():
        families.setdefault(entry.get('arch'), []).append(name)
    for arch, names in families.items():
        if arch is not None:
            first = doc['methods'][names[0]]
            t = first['teacher']['metric']
            b = first['baseline']['metric']
            m_, s_, n_ = mean_std(b)
            lines += [
                f'| teacher ({arch}) | '
                f'{"n/a" if t is None else f"{t:.1f}"} | | | | |',
                f'| baseline student ({arch}) | {_fmt(m_, s_, n_)} | '
                f'{_seeds(b)} | | | |']
        for name in names:
            entry = doc['methods'][name]
            t = entry.get('teacher', {}).get('metric', teacher)
            b = entry.get('baseline', {}).get('metric', base)
            lines.append(_method_row(name, entry['metric'], t, b))
    lines += [
        '',
        f'{metric} on the val split, 0-100; std is the sample standard '
        'deviation over the seeds; gain = method mean - baseline mean; gap '
        'closed = gain / (teacher - baseline mean).',
    ]
    if seconds:
        lines += ['', 'Wall time per run (s, this machine): ' + ', '.join(
            f'{k} {v:.0f}' for k, v in seconds.items()) + '.']
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(tmp, path)
