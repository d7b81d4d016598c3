"""``results.json`` and ``results.md`` of an experiment."""
import json
import math
import os
from typing import Dict, List, Optional, Sequence

__all__ = ['mean_std', 'build_results', 'has_default_family', 'write_json',
           'write_markdown']


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
                  schedule: dict, assistant: Optional[str] = None,
                  assistants: Optional[Dict[str, str]] = None) -> dict:
    """The ``results.json`` document (the issue's schema).

    ``{"task", "metric", "teacher": {"metric": x}, "baseline": {"metric":
    [per seed]}, "methods": {name: {"metric": [per seed], "config": path}},
    "schedule": {...}}``. A seed that has not finished is ``null``. A
    method of another model family also gets its own ``teacher`` and
    ``baseline`` entries and its family name as ``arch``; a family that
    only teaches (a method's ``teacher_archs``) is in ``teachers_only``:
    ``{arch: {"metric": x}}``.

    With a teacher assistant (``assistant``: the model's name;
    ``assistants``: method name -> the assistant run its students via the
    assistant learn from), the document has
    ``"assistants": {run: {"model", "method", "arch", "metric",
    "config"}}`` and each method a ``"via_assistant": {"assistant": run,
    "metric": [per seed], "config": path}`` entry beside its direct
    (teacher -> student) ``metric``.
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
    teaching = sorted({a for m in methods for a in m.teacher_archs} -
                      {m.arch or default_arch for m in methods})
    if teaching:  # families that only teach: their teacher's metric
        doc['teachers_only'] = {
            a: dict(metric=metric_of(f'teacher{sfx(a)}')) for a in teaching}
    if assistant is not None and assistants:
        _add_assistants(doc, assistant, assistants, metric_of, seeds,
                        methods, default_arch, configs)
    return doc


def _add_assistants(doc: dict, model: str, assistants: Dict[str, str],
                    metric_of, seeds: Sequence[int], methods: Sequence,
                    default_arch: str, configs: Dict[str, str]) -> None:
    """``assistants`` and every method's ``via_assistant`` entry.

    An assistant run is ``assistant_<model>_<method>``; a student via it
    ``<method>_via_<model>_seed<N>``.
    """
    doc['assistants'] = {}
    specs = {m.name: m for m in methods}
    for name, run in assistants.items():
        method = run[len(f'assistant_{model}_'):]
        arch = specs[name].arch or default_arch
        doc['assistants'].setdefault(run, dict(
            model=model, method=method,
            arch=None if arch == default_arch else arch,
            metric=metric_of(run), config=configs.get(run)))
        via = f'{name}_via_{model}'
        doc['methods'][name]['via_assistant'] = dict(
            assistant=run, metric=[metric_of(f'{via}_seed{s}')
                                   for s in seeds],
            config=configs.get(via))


def has_default_family(doc: dict) -> bool:
    """Whether the default family's teacher and baseline were planned.

    They are unless every method needs another family (the runner trains
    only the families the methods need): the document's top-level
    ``teacher`` / ``baseline`` stay null then and the reports leave them
    out.
    """
    return not doc['methods'] or any(
        'arch' not in e for e in doc['methods'].values())


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


def _assistant_rows(doc: dict, arch: Optional[str]) -> List[str]:
    """One row per teacher assistant of the family ``arch`` (None: the
    default family), e.g. ``assistant mid (cwd)``."""
    rows = []
    for entry in doc.get('assistants', {}).values():
        if entry['arch'] == arch:
            m = entry['metric']
            rows.append(f'| assistant {entry["model"]} ({entry["method"]}) '
                        f'| {"n/a" if m is None else f"{m:.1f}"} | | | | |')
    return rows


def _method_rows(doc: dict, name: str, teacher: Optional[float],
                 base: List[Optional[float]]) -> List[str]:
    """A method's row (teacher -> student) and, with an assistant, its
    row via the assistant (gain and gap against the same baseline and
    teacher)."""
    entry = doc['methods'][name]
    t = entry.get('teacher', {}).get('metric', teacher)
    b = entry.get('baseline', {}).get('metric', base)
    rows = [_method_row(name, entry['metric'], t, b)]
    via = entry.get('via_assistant')
    if via is not None:
        model = doc['assistants'][via['assistant']]['model']
        rows.append(_method_row(f'{name} via {model}', via['metric'], t, b))
    return rows


def _family_rows(doc: dict) -> List[str]:
    """The method rows: the main family's first, then one block per other
    family (its own teacher, assistants and baseline, e.g. LD on GFL) so
    that every gain reads against the rows right above it."""
    teacher = doc['teacher']['metric']
    base = doc['baseline']['metric']
    families: Dict[Optional[str], List[str]] = {}
    for name, entry in doc['methods'].items():
        families.setdefault(entry.get('arch'), []).append(name)
    lines = []
    for arch, names in families.items():
        if arch is not None:
            first = doc['methods'][names[0]]
            t = first['teacher']['metric']
            b = first['baseline']['metric']
            m_, s_, n_ = mean_std(b)
            lines.append(f'| teacher ({arch}) | '
                         f'{"n/a" if t is None else f"{t:.1f}"} | | | | |')
            lines += _assistant_rows(doc, arch)
            lines.append(f'| baseline student ({arch}) | {_fmt(m_, s_, n_)} '
                         f'| {_seeds(b)} | | | |')
        for name in names:
            lines += _method_rows(doc, name, teacher, base)
    return lines


def _budget_lines(sched: dict) -> List[str]:
    """What ``--budget`` the students had, and the time-matched counts."""
    mode = sched.get('budget')
    if mode is None:  # an experiment of before --budget
        return []
    if mode != 'time':
        return [f'Budget: iters -- every student trains '
                f'{sched["student_iters"]} iterations (`--budget time` '
                'gives each distilled student the baseline\'s time '
                'instead).', '']
    budget = sched.get('time_budget', {})
    probe = budget.get('probe', {})
    lines = [
        'Budget: time -- each distilled student trains round(baseline '
        'iterations x t_baseline / t_method) iterations, its schedule '
        'stretched to that length; t is the median seconds per training '
        f'iteration of a probe ({probe.get("warmup", "?")} warm-up + '
        f'{probe.get("iters", "?")} timed iterations of each config, one '
        'after the other before training: the baselines, the methods, the '
        'baselines again; a method is matched to its baseline\'s time '
        'interpolated between those two probes).', '',
        '| config | iterations | probe s/iteration | matched to |',
        '|---|---|---|---|']
    for name, entry in budget.get('configs', {}).items():
        ref = entry.get('baseline')
        match = '' if ref is None else \
            f'{ref} ({entry["baseline_seconds_per_iter"]:.3f} s/iteration)'
        lines.append(f'| {name} | {entry["iters"]} | '
                     f'{entry["seconds_per_iter"]:.3f} | {match} |')
    return lines + ['']


def _wall_time_line(seconds: Dict[str, float],
                    trained: Optional[Dict[str, int]]) -> str:
    def one(name: str, sec: float) -> str:
        n = (trained or {}).get(name)
        if not n:
            return f'{name} {sec:.0f}'
        return f'{name} {sec:.0f} ({n} it, {sec / n:.2f} s/it)'
    return ('Wall time per run (s, this machine; s/it includes the final '
            'validation): ' +
            ', '.join(one(k, v) for k, v in seconds.items()) + '.')


def _teacher_rows(doc: dict) -> List[str]:
    """The default family's teacher, the teaching-only teachers and the
    default family's assistants."""
    rows = []
    for name, t in [('teacher', doc['teacher']['metric'])] + [
            (f'teacher ({arch}, teaches only)', entry['metric'])
            for arch, entry in doc.get('teachers_only', {}).items()]:
        rows.append(f'| {name} | {"n/a" if t is None else f"{t:.1f}"} '
                    '| | | | |')
    return rows + _assistant_rows(doc, None)


def write_markdown(doc: dict, path: str, title: str,
                   command: Optional[str] = None,
                   seconds: Optional[Dict[str, float]] = None,
                   trained: Optional[Dict[str, int]] = None) -> None:
    """The results table (teacher, baseline, methods) as markdown.

    Args:
        doc: The ``results.json`` document.
        path: The ``.md`` file to write.
        title: Its title.
        command: The command line, quoted under the schedule.
        seconds: Run name -> wall seconds of its last session.
        trained: Run name -> iterations trained in that session (adds
            seconds per iteration to the wall times).
    """
    metric = doc['metric']
    base = doc['baseline']['metric']
    bm, bs, bn = mean_std(base)
    lines = [f'# {title}', '']
    sched = doc['schedule']
    lines.append(', '.join(f'{k}: {v}' for k, v in sched.items()
                           if not isinstance(v, (dict, list))) + '.')
    lines.append('')
    if command:
        lines += ['```bash', command, '```', '']
    lines += _budget_lines(sched)
    lines += [
        f'| model | {metric} (mean ± std) | per seed | gain | gap closed '
        '| all seeds > best baseline seed |',
        '|---|---|---|---|---|---|']
    if has_default_family(doc):
        lines += _teacher_rows(doc)
        lines.append(f'| baseline student | {_fmt(bm, bs, bn)} | '
                     f'{_seeds(base)} | | | |')
    lines += _family_rows(doc)
    lines += [
        '',
        f'{metric} on the val split, 0-100; std is the sample standard '
        'deviation over the seeds; gain = method mean - baseline mean; gap '
        'closed = gain / (teacher - baseline mean).',
    ]
    if doc.get('assistants'):
        lines += [
            '', '`assistant <model> (<method>)`: the teacher assistant, '
            'trained distilled from the teacher with that method (one '
            'seed); `<method> via <model>`: the student distilled from '
            'that assistant with the method (teacher -> assistant -> '
            'student); its gain and gap closed read against the same '
            'baseline and teacher as the direct row above it.']
    if seconds:
        lines += ['', _wall_time_line(seconds, trained)]
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(tmp, path)
