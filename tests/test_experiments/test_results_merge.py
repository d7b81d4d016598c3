"""Pooling results.json documents of one experiment (issue #19 item 2)."""
import json

import pytest

from tools.analysis_tools import merge_results as merge_tool
from visionkd.experiments.results_merge import merge_results


def _doc(seeds, teacher, base, methods, **schedule):
    sched = dict(preset='cpu-small', student_iters=300, data_root='/d',
                 budget='iters', seeds=list(seeds))
    sched.update(schedule)
    return dict(task='det', metric='bbox_mAP', teacher=dict(metric=teacher),
                baseline=dict(metric=list(base)),
                methods={m: dict(metric=list(v), config=f'{m}.py')
                         for m, v in methods.items()},
                schedule=sched)


def test_merge_pools_seeds_and_methods_in_seed_order():
    a = _doc([0, 1], 50.7, [40.8, 40.4], {'cwd': [41.5, 41.4],
                                          'roi_kd': [47.9, 46.9]})
    b = _doc([2], 50.7, [41.3], {'cwd': [40.5], 'roi_kd': [48.2]})
    c = _doc([0, 1, 2], 50.7, [40.8, 40.4, 41.3],
             {'pkd': [42.4, None, 44.4]})
    doc = merge_results([b, a, c])
    assert doc['schedule']['seeds'] == [0, 1, 2]
    assert doc['baseline']['metric'] == [40.8, 40.4, 41.3]
    assert doc['methods']['cwd']['metric'] == [41.5, 41.4, 40.5]
    assert doc['methods']['roi_kd']['metric'] == [47.9, 46.9, 48.2]
    assert doc['methods']['pkd']['metric'] == [42.4, None, 44.4]
    assert doc['teacher']['metric'] == 50.7
    assert doc['methods']['cwd']['config'] == 'cwd.py'


def test_merge_refuses_other_teachers_settings_and_disagreeing_runs():
    a = _doc([0], 50.7, [40.8], {'cwd': [41.5]})
    with pytest.raises(ValueError, match='different teachers'):
        merge_results([a, _doc([1], 49.6, [41.0], {})])
    with pytest.raises(ValueError, match='schedule weights'):
        merge_results([a, _doc([1], 50.7, [40.4], {'cwd': [40.0]},
                               weights='grad_share (target 1)')])
    with pytest.raises(ValueError, match='schedule student_iters 400'):
        merge_results([a, _doc([1], 50.7, [40.4], {}, student_iters=400)])
    # the same seed of the same run must give the same result
    with pytest.raises(ValueError, match='baseline, seed 0: 40.8'):
        merge_results([a, _doc([0], 50.7, [40.9], {})])
    with pytest.raises(ValueError, match='cwd, seed 0'):
        merge_results([a, _doc([0], 50.7, [40.8], {'cwd': [39.5]})])
    with_ta = dict(_doc([1], 50.7, [40.4], {}), assistants={})
    with pytest.raises(ValueError, match='assistants'):
        merge_results([a, with_ta])


def test_merge_pools_another_family_against_its_own_teacher():
    def ld(seeds, teacher, base, values):
        doc = _doc(seeds, 50.7, [40.0] * len(seeds), {'ld': values})
        doc['methods']['ld'].update(arch='gfl', teacher=dict(metric=teacher),
                                    baseline=dict(metric=base))
        return doc

    doc = merge_results([ld([0], 41.0, [34.8], [38.7]),
                         ld([1], 41.0, [35.2], [38.1])])
    entry = doc['methods']['ld']
    assert entry['metric'] == [38.7, 38.1] and entry['arch'] == 'gfl'
    assert entry['baseline']['metric'] == [34.8, 35.2]
    with pytest.raises(ValueError, match='ld: its teacher'):
        merge_results([ld([0], 41.0, [34.8], [38.7]),
                       ld([1], 40.3, [35.2], [38.1])])


def test_merge_tool_writes_the_pooled_document(tmp_path, capsys):
    paths = []
    for i, doc in enumerate((
            _doc([0, 1], 50.7, [40.8, 40.4], {'cwd': [41.5, 41.4]}),
            _doc([2], 50.7, [41.3], {'cwd': [40.5], 'pkd': [44.4]}))):
        paths.append(str(tmp_path / f'{i}.json'))
        with open(paths[-1], 'w') as f:
            json.dump(doc, f)
    out = tmp_path / 'bccd' / 'results.json'
    assert merge_tool.main(paths + ['--out', str(out), '--methods',
                                    'cwd']) == 0
    doc = json.loads(out.read_text())
    assert list(doc['methods']) == ['cwd']
    assert doc['methods']['cwd']['metric'] == [41.5, 41.4, 40.5]
    assert len(doc['schedule']['merged_from']) == 2
    assert 'seeds [0, 1, 2]' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        merge_tool.main(paths + ['--out', str(out), '--methods', 'fgd'])
