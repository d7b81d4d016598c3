"""One ``results.json`` from several experiments of the same setting.

Evidence for one dataset often comes from several runner invocations (a
third seed added later, a method run on its own). They may be pooled only
if they are the same experiment: the same data, preset, schedule, weight
rule and teacher, and where two of them ran the same seed of the same run
(the baseline of seed 0, say), the same result, which the seeded runner
reproduces to the decimal. :func:`merge_results` checks all of that and
names what differs instead of averaging runs of different teachers.
"""
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ['SETTING_KEYS', 'merge_results']

#: Schedule entries that must be equal in every merged document.
SETTING_KEYS = ('preset', 'teacher_iters', 'student_iters', 'batch_size',
                'lr', 'policy', 'input_scale', 'crop', 'data_root', 'train',
                'val', 'classes', 'budget', 'weights')


def _per_seed(values: Sequence[Optional[float]],
              seeds: Sequence[int], where: str) -> Dict[int, float]:
    if len(values) != len(seeds):
        raise ValueError(f'{where}: {len(values)} values for {len(seeds)} '
                         f'seeds')
    return {s: v for s, v in zip(seeds, values) if v is not None}


def _pool(into: Dict[int, float], new: Dict[int, float], where: str,
          tol: float) -> None:
    for seed, value in new.items():
        if seed in into and abs(into[seed] - value) > tol:
            raise ValueError(
                f'{where}, seed {seed}: {into[seed]} in one document and '
                f'{value} in another; a seeded run gives one result, so '
                f'these are different experiments')
        into.setdefault(seed, value)


def _same(a, b, where: str, tol: float) -> None:
    if a is None or b is None:
        return
    if abs(a - b) > tol:
        raise ValueError(f'{where}: {a} vs {b}: the documents have '
                         f'different teachers')


def _check_setting(first: dict, doc: dict, index: int) -> None:
    for key in ('task', 'metric'):
        if doc[key] != first[key]:
            raise ValueError(f'document {index}: {key} {doc[key]!r}, '
                             f'document 0: {first[key]!r}')
    a, b = first.get('schedule', {}), doc.get('schedule', {})
    for key in SETTING_KEYS:
        if a.get(key) != b.get(key):
            raise ValueError(f'document {index}: schedule {key} '
                             f'{b.get(key)!r}, document 0: {a.get(key)!r}')


def _entry_refs(doc: dict, entry: dict) -> Tuple[dict, dict]:
    return (entry.get('teacher', doc['teacher']),
            entry.get('baseline', doc['baseline']))


def merge_results(docs: Sequence[dict], tol: float = 1e-6) -> dict:
    """Pool the seeds and methods of ``results.json`` documents.

    Args:
        docs: Documents of ``tools/run_experiments.py`` (same task, metric,
            setting and teacher).
        tol: Largest difference of two results of the same run that still
            counts as equal.

    Returns:
        One document in the runner's schema whose ``schedule.seeds`` is the
        sorted union of the seeds; a method or baseline seed that no
        document ran is ``null``. Methods of another family (``arch``) are
        pooled with their own teacher and baseline. The first document's
        config path of each method is kept.

    Raises:
        ValueError: Naming the first key, method or seed that differs.
    """
    if not docs:
        raise ValueError('nothing to merge')
    first = docs[0]
    if len(docs) > 1 and any('assistants' in doc for doc in docs):
        raise ValueError('documents with teacher assistants cannot be '
                         'merged (their via-assistant runs depend on the '
                         'assistant run)')
    for i, doc in enumerate(docs[1:], 1):
        _check_setting(first, doc, i)
    state = dict(teacher=None, baseline={}, methods={}, seeds=set())
    for i, doc in enumerate(docs):
        _pool_doc(state, doc, i, tol)
    order = sorted(state['seeds'])
    out = dict(task=first['task'], metric=first['metric'],
               teacher=dict(metric=state['teacher']),
               baseline=dict(metric=_listed(state['baseline'], order)),
               methods={}, schedule=dict(first['schedule'], seeds=order))
    for name, pooled in state['methods'].items():
        entry = dict(metric=_listed(pooled['runs'], order),
                     config=pooled['entry'].get('config'))
        if 'arch' in pooled['entry']:
            entry.update(arch=pooled['entry']['arch'],
                         teacher=dict(metric=pooled['teacher']),
                         baseline=dict(metric=_listed(pooled['baseline'],
                                                      order)))
        out['methods'][name] = entry
    return out


def _pool_doc(state: dict, doc: dict, i: int, tol: float) -> None:
    doc_seeds = doc['schedule']['seeds']
    state['seeds'].update(doc_seeds)
    t = doc['teacher']['metric']
    _same(state['teacher'], t, f'document {i}: teacher', tol)
    if state['teacher'] is None:
        state['teacher'] = t
    _pool(state['baseline'], _per_seed(doc['baseline']['metric'], doc_seeds,
                                       f'document {i}: baseline'),
          'baseline', tol)
    for name, entry in doc['methods'].items():
        pooled = state['methods'].setdefault(name, dict(
            runs={}, entry=entry, teacher=None, baseline={}))
        if entry.get('arch') != pooled['entry'].get('arch'):
            raise ValueError(f'method {name!r}: model family '
                             f'{entry.get("arch")!r} in document {i}, '
                             f'{pooled["entry"].get("arch")!r} before')
        _pool(pooled['runs'], _per_seed(
            entry['metric'], doc_seeds, f'document {i}: {name}'), name, tol)
        if 'arch' in entry:
            ref_t, ref_b = _entry_refs(doc, entry)
            _same(pooled['teacher'], ref_t['metric'],
                  f'{name}: its teacher', tol)
            if pooled['teacher'] is None:
                pooled['teacher'] = ref_t['metric']
            _pool(pooled['baseline'], _per_seed(
                ref_b['metric'], doc_seeds, f'{name}: baseline'),
                f'{name}: baseline', tol)


def _listed(by_seed: Dict[int, float], order: List[int]) -> list:
    return [by_seed.get(s) for s in order]
