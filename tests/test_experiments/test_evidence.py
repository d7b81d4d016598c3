"""Paired gains, their intervals and the recommendation (issue #19)."""
import json
import os.path as osp

import pytest

from tests.conftest import REPO
from visionkd.experiments.evidence import (
    gain_interval,
    paired_gains,
    recommend,
)


def test_paired_gains_pair_by_seed_and_skip_missing():
    assert paired_gains([45.0, None, 41.0], [40.0, 39.0, 42.0]) == [5.0,
                                                                    -1.0]
    with pytest.raises(ValueError, match='cannot be paired'):
        paired_gains([1.0, 2.0], [1.0])


def test_gain_interval_by_hand():
    # mean 2, sd 1, n 3: t(0.95, 2) = 2.919986 -> 2 +- 2.919986 / sqrt(3)
    low, high = gain_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 1.685854, abs=1e-5)
    assert high == pytest.approx(2 + 1.685854, abs=1e-5)
    # two seeds: t(0.95, 1) = 6.313752, sd of (7.5, 6.4) = 0.777817
    low, high = gain_interval([7.5, 6.4])
    assert (low, high) == pytest.approx((6.95 - 3.4726, 6.95 + 3.4726),
                                        abs=1e-3)
    assert gain_interval([3.0]) is None and gain_interval([]) is None


def _row(rank, method, intervals, seeds=3):
    return dict(rank=rank, method=method, datasets={
        name: dict(interval=iv, seeds=seeds)
        for name, iv in intervals.items()})


def _ranking(*rows):
    return dict(tasks=dict(det=dict(
        datasets={'a': {}, 'b': {}, 'c': {}}, ranking=list(rows))))


def test_recommend_counts_datasets_above_zero_before_the_rank():
    ranking = _ranking(
        _row(1, 'first', {'a': [2.0, 9.0], 'b': [-1.0, 4.0],
                          'c': [-3.0, 5.0]}),
        _row(2, 'steady', {'a': [0.5, 2.0], 'b': [0.1, 1.0],
                           'c': [-1.0, 1.0]}))
    rec = recommend(ranking, 'det')
    assert rec['method'] == 'steady' and rec['runner_up'] == 'first'
    assert rec['confidence'] == 'moderate'
    assert 'above zero on 2 of the 3 det dataset(s) (a, b)' in rec['reason']
    # only the methods that run on the user's models
    only = recommend(ranking, 'det', methods=['first'])
    assert only['method'] == 'first' and only['confidence'] == 'weak'


def test_recommend_levels_and_no_method():
    strong = _ranking(_row(1, 'm', {'a': [1, 2], 'b': [1, 2], 'c': [1, 2]}))
    assert recommend(strong, 'det')['confidence'] == 'strong'
    hurts = _ranking(_row(1, 'm', {'a': [1, 2], 'b': [1, 2],
                                   'c': [-3, -1]}))
    rec = recommend(hurts, 'det')
    assert rec['confidence'] == 'weak' and 'below zero on c' in rec['reason']
    nothing = _ranking(_row(1, 'm', {'a': [-1, 2], 'b': None}))
    rec = recommend(nothing, 'det')
    assert rec['method'] is None and rec['confidence'] == 'none'
    with pytest.raises(ValueError, match='no seg evidence'):
        recommend(nothing, 'seg')


def test_recommend_says_how_the_method_fares_at_equal_time():
    ranking = _ranking(
        _row(1, 'm', {'a': [1, 2], 'b': [1, 2]}),
        _row(2, 'n', {'a': [1, 2], 'b': [-1, 2]}))
    assert recommend(ranking, 'det')['time_matched'] is None
    ranking['tasks']['det']['time_matched'] = dict(
        datasets={'a_time': {}, 'b_time': {}},
        ranking=[_row(1, 'n', {'a_time': [1, 2], 'b_time': [1, 2]}),
                 _row(2, 'm', {'a_time': [0.5, 3], 'b_time': [-4, -1]})])
    rec = recommend(ranking, 'det')
    assert rec['method'] == 'm'  # chosen at equal iterations
    assert rec['time_matched']['above'] == ['a_time']
    assert rec['time_matched']['below'] == ['b_time']
    assert ('at equal wall-clock time (--budget time) its interval is '
            'above zero on 1 of 2 dataset(s) (a_time), below zero on '
            'b_time') in rec['reason']
    ranking['tasks']['det']['time_matched']['ranking'].pop()
    assert 'not run at equal wall-clock time' in recommend(
        ranking, 'det')['reason']


def test_run_experiments_recommend_reads_the_published_ranking(capsys):
    """``--recommend`` trains nothing: it prints the published ranking's
    recommendation (no data root or work dir needed)."""
    from tools.run_experiments import main
    with open(osp.join(REPO, 'docs', 'results', 'ranking.json')) as f:
        want = recommend(json.load(f), 'det')
    assert main(['--task', 'det', '--recommend']) == 0
    out = capsys.readouterr().out
    assert out.startswith(f'det: try {want["method"]} first (confidence: '
                          f'{want["confidence"]}')
    assert want['reason'] in out
    with pytest.raises(SystemExit):  # training still needs its arguments
        main(['--task', 'det'])
