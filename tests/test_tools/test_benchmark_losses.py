"""tools/analysis_tools/benchmark_losses.py covers and measures every loss."""
import json

import pytest
import torch

from tools.analysis_tools import benchmark_losses as bl
from visionkd.registry import MODELS

TINY = dict(channels=4, p2_size=16, levels=3, repeats=1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add wake-up stalls when the
    machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def registry_losses():
    """Every registered distillation loss, found two ways (the module it
    lives in and the name suffix that test_losses.py uses)."""
    return sorted(
        name for name, cls in MODELS.module_dict.items()
        if cls.__module__.startswith('visionkd.models.losses')
        or name.endswith(('Loss', 'Divergence')))


def test_every_registered_loss_has_a_recipe():
    names = registry_losses()
    assert names, 'no loss registered'
    assert not set(names) - set(bl.RECIPES), 'add these to RECIPES'
    assert set(bl.registered_losses()) == set(names)
    for name, recipe in bl.RECIPES.items():
        assert recipe.family in bl.FAMILIES, name
        assert recipe.gt in (None, 'det', 'seg'), name


def test_every_recipe_builds_and_makes_its_calls():
    # builds every loss and its inputs (no forward: the GT-driven losses
    # are timed in the single-loss tests below)
    names = bl.benchmark_names()
    assert set(bl.VARIANTS) <= set(names)
    for name in names:
        losses = bl.build_losses(name, 4, 3)
        calls = bl.make_calls(name, 2, 2, 4, 16, 3)
        assert len(losses) == len(calls) > 0, name
        assert len(calls) == (3 if bl.recipe_of(name).family in (
            'feature', 'head') else 1), name


def test_variants_build_their_arguments():
    loss, = bl.build_losses('CIRKDMemoryLoss[batched]', 4, 3)
    assert type(loss).__name__ == 'CIRKDMemoryLoss'
    assert loss.queue_sampling == 'batched'
    assert bl.build_losses('CIRKDMemoryLoss', 4, 3)[0].queue_sampling == \
        'official'
    with pytest.raises(KeyError, match='PKDLoss\\[nope\\]'):
        bl.benchmark_loss('PKDLoss[nope]', 2, 2, **TINY)


@pytest.mark.parametrize('name,boxes,calls', [('FeatureMSELoss', 2, 1),
                                              ('FGDLoss', 5, 3),
                                              ('RoIKDLoss', 2, 1)])
def test_benchmark_loss_fields(name, boxes, calls):
    # FeatureMSELoss batches levels: one forward_levels call, as the term
    out = bl.benchmark_loss(name, 2, boxes, **TINY)
    assert out['loss'] == name and out['family'] == bl.RECIPES[name].family
    assert (out['batch'], out['boxes']) == (2, boxes)
    assert isinstance(out['aten_calls'], int) and out['aten_calls'] > 0
    assert out['calls'] == calls
    assert out['time_ms'] > 0


@pytest.mark.parametrize('name', ['PKDLoss', 'ATLoss'])
def test_one_call_for_all_levels_counts_fewer_calls(name):
    one = bl.benchmark_loss(name, 2, 2, **TINY)
    per_level = bl.benchmark_loss(name, 2, 2, per_level=True, **TINY)
    assert (one['calls'], per_level['calls']) == (1, 3)
    assert one['aten_calls'] < per_level['aten_calls'], (one, per_level)
    # a loss with per-level parameters is called per level either way
    fgd = bl.benchmark_loss('MGDLoss', 2, 2, **TINY)
    assert fgd['calls'] == 3


def test_batched_memory_queue_does_not_grow_with_the_batch():
    rows = {r['loss']: r for r in bl.benchmark_losses(
        ['CIRKDMemoryLoss', 'CIRKDMemoryLoss[batched]'], **TINY)}
    assert rows['CIRKDMemoryLoss[batched]']['batch_ratio'] <= 1.05
    assert rows['CIRKDMemoryLoss']['batch_ratio'] > 1.05  # official draws


def test_summary_ratios():
    rows = bl.benchmark_losses(['FeatureMSELoss', 'KLDivergence'], **TINY)
    assert [r['loss'] for r in rows] == ['FeatureMSELoss', 'KLDivergence']
    for r in rows:
        assert not r['uses_boxes']
        assert set(r['aten_calls']) == set(r['time_ms']) == {
            f'b{b}_n{n}' for b, n in bl.SETTINGS}
        assert all(isinstance(v, int) and v > 0
                   for v in r['aten_calls'].values())
        assert r['boxes_ratio'] == 1.0  # reads no boxes: same count
        assert r['batch_ratio'] > 0
        assert r['aten_calls_per_call'] == pytest.approx(
            r['aten_calls']['b2_n2'] / r['calls'])
    table = bl.format_markdown(bl.table_rows(rows))
    assert table.count('\n') == 3 and '1.00*' in table


def test_main_json_and_markdown(capsys):
    args = ['--losses', 'ATLoss', '--channels', '4', '--p2-size', '8',
            '--levels', '2', '--repeats', '1']
    bl.main(args + ['--json'])
    printed = json.loads(capsys.readouterr().out)
    assert [r['loss'] for r in printed] == ['ATLoss']
    assert printed[0]['calls'] == 1 and printed[0]['boxes_ratio'] == 1.0
    bl.main(args + ['--markdown', '--per-level'])
    out = capsys.readouterr().out
    assert '| `ATLoss` | feature | 2 |' in out
    assert 'batch_input_shape) 32 x 32' in out
    assert 'called once per level (--per-level)' in out
    with pytest.raises(SystemExit, match='NoSuchLoss'):
        bl.main(['--losses', 'NoSuchLoss'])
