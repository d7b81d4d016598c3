"""The runner's weight rule (``--weights``): the methods' own weights or
one gradient-share calibration (AutoWeightHook) for every method."""
import json
import os.path as osp

import pytest

from tests.conftest import SHARED_DATA
from visionkd.experiments import METHODS, get_preset
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.run_configs import run_config, weight_hooks

BCCD = osp.join(SHARED_DATA, 'bccd')
CAMVID = osp.join(SHARED_DATA, 'camvid')
DET = DataSpec(BCCD, 'annotations/train.json', 'annotations/val.json',
               classes=('RBC', 'WBC', 'Platelets'))
needs_data = pytest.mark.skipif(not osp.isdir(SHARED_DATA),
                                reason='../shared/data is absent')


def _hooks(cfg):
    return [h for h in cfg.get('custom_hooks', [])
            if h['type'] == 'visionkd.AutoWeightHook']


def test_grad_share_rule_calibrates_every_distilled_run_only():
    preset = get_preset('det', 'cpu-small')
    spec = METHODS['det']['fgd']
    runs = {
        role: run_config(preset, DET, DET.classes, role, 'faster_rcnn',
                         spec if role in ('distill', 'assistant') else None,
                         'teacher.pth', assistant='mid' if role ==
                         'assistant' else None, weight_rule='grad_share',
                         weight_target=0.5)
        for role in ('teacher', 'baseline', 'distill', 'assistant')}
    want = [dict(type='visionkd.AutoWeightHook', target=0.5, iters=10)]
    assert _hooks(runs['distill']) == _hooks(runs['assistant']) == want
    assert not _hooks(runs['teacher']) and not _hooks(runs['baseline'])
    # the method's own weights are the starting point the hook rescales
    preset_run = run_config(preset, DET, DET.classes, 'distill',
                            'faster_rcnn', spec, 'teacher.pth')
    assert not _hooks(preset_run)
    assert preset_run['model'] == runs['distill']['model']
    # grad_share_cap: the same hook, weights only lowered
    capped = run_config(preset, DET, DET.classes, 'distill', 'faster_rcnn',
                        spec, 'teacher.pth', weight_rule='grad_share_cap',
                        weight_target=2.0)
    assert _hooks(capped) == [dict(type='visionkd.AutoWeightHook',
                                   target=2.0, iters=10, max_factor=1.0)]
    assert capped['model'] == preset_run['model']


def test_unknown_rule_and_bad_target_fail():
    with pytest.raises(ValueError, match=r"unknown weight rule 'paper'; "
                       r"rules: \['preset', 'grad_share', 'grad_share_cap'\]"):
        weight_hooks('paper')
    from tools.run_experiments import parse_args
    with pytest.raises(SystemExit):
        parse_args(['--task', 'det', '--data-root', BCCD, '--work-dir', 'w',
                    '--weights', 'grad_share', '--weight-target', '0'])


@needs_data
def test_tiny_seg_run_logs_the_calibrated_weights(tmp_path):
    from tools.run_experiments import main
    work = tmp_path / 'seg'
    rc = main(['--task', 'seg', '--data-root', CAMVID, '--methods', 'cwd',
               '--seeds', '0', '--preset', 'tiny', '--work-dir', str(work),
               '--weights', 'grad_share', '--weight-target', '0.5'])
    assert rc == 0
    doc = json.loads((work / 'results.json').read_text())
    assert doc['schedule']['weights'] == 'grad_share (target 0.5)'
    log = (work / 'runs' / 'cwd_seed0' / 'run.log').read_text()
    assert 'AutoWeightHook: weights calibrated to gradient share 0.5' in log
    assert 'AutoWeightHook' not in (work / 'runs' / 'baseline_seed0' /
                                    'run.log').read_text()
