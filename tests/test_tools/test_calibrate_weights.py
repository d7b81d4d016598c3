"""tools/analysis_tools/calibrate_weights.py on the embedded BCCD subset:
the weights it writes bring each term's gradient share to the target on
train batches it did not measure."""
import os.path as osp
from itertools import islice

import pytest
from mmengine.config import Config

from tests.conftest import REPO
from tests.test_tools.synthetic_seg import restore_mmengine_globals  # noqa: F401,E501
from tools.analysis_tools import calibrate_weights as cw
from visionkd.engine.hooks.auto_weight_hook import measure_terms

STUDENT = osp.join(REPO, 'tests', 'data', 'configs',
                   'faster_rcnn_bccd_tiny.py')
CFG = f"""_base_ = [{STUDENT!r}]
model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student={STUDENT!r},
    teacher={STUDENT!r},
    teacher_ckpt=None,
    dry_run_input_size=(64, 64),
    distill_terms=dict(
        pkd=dict(student='neck', teacher='neck',
                 loss=dict(type='PKDLoss', loss_weight=6.0)),
        mse=dict(student='neck.fpn_convs.0', teacher='neck.fpn_convs.0',
                 loss=dict(type='FeatureMSELoss', loss_weight=0.5),
                 weight=2.0)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(160, 120), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
"""


def test_written_weights_reach_the_target_on_unseen_batches(tmp_path,
                                                            capsys):
    cfg_path = tmp_path / 'kd.py'
    cfg_path.write_text(CFG)
    out = tmp_path / 'sub' / 'calibrated.py'
    cw.main([str(cfg_path), '--iters', '3', '--target', '0.5', '--write',
             str(out)])
    printed = capsys.readouterr().out
    assert 'model.teacher_ckpt is not set' in printed
    assert '3 train batches, target gradient share 0.5' in printed
    rows = {x.split()[0]: x for x in printed.splitlines()
            if x.split()[:1] in (['pkd'], ['mse'])}
    for name, old in (('pkd', 1.0), ('mse', 2.0)):
        share, weight, new = (float(v) for v in rows[name].split()[2:5])
        assert weight == old and new == pytest.approx(old * 0.5 / share,
                                                      rel=1e-3)
        assert not 0.25 < share < 1.0  # far from the target before
    line = rows['pkd']
    new = float(line.split()[4])
    assert f'loss.loss_weight 6 x {new:.4g} = ' in line
    assert float(line.split(' = ')[1].split()[0]) == pytest.approx(
        6 * new, rel=1e-3)
    assert 'paste: model=dict(distill_terms=dict(pkd=dict(weight=' in printed
    # the written config inherits the original and only sets the weights
    text = out.read_text()
    assert "_base_ = ['../kd.py']" in text
    cfg = Config.fromfile(str(out))
    terms = cfg.model.distill_terms
    assert terms.pkd.weight == pytest.approx(new, rel=1e-3)
    assert terms.mse.loss.loss_weight == 0.5 and terms.mse.weight != 2.0
    # measured on the 4 batches after the 3 it calibrated on
    seed = cw.setup(cfg)
    model = cw.build_model(cfg, 'cpu')
    batches = islice(cw.train_batches(cfg, seed), 3, None)
    after = measure_terms(model, batches, 4)
    for name in ('pkd', 'mse'):
        assert after.terms[name].weight == terms[name].weight
        assert after.terms[name].share == pytest.approx(0.5, rel=0.2), name


def test_unknown_term_is_named(tmp_path):
    cfg_path = tmp_path / 'kd.py'
    cfg_path.write_text(CFG)
    with pytest.raises(SystemExit, match=r"--terms \['nope'\] not in"):
        cw.main([str(cfg_path), '--terms', 'nope'])


def test_max_factor_only_lowers_weights(tmp_path, capsys):
    # target 16: PKD's share (~18) is above it, the MSE term's (~14) below
    cfg_path = tmp_path / 'kd.py'
    cfg_path.write_text(CFG)
    cw.main([str(cfg_path), '--iters', '2', '--target', '16',
             '--max-factor', '1'])
    rows = {x.split()[0]: x.split() for x in
            capsys.readouterr().out.splitlines()
            if x.split()[:1] in (['pkd'], ['mse'])}
    got = {}
    for name, old in (('pkd', 1.0), ('mse', 2.0)):
        share, weight, new = (float(v) for v in rows[name][2:5])
        assert weight == old
        assert new == pytest.approx(old * min(1.0, 16 / share), rel=1e-3)
        got[name] = (share > 16, new < old)
    assert got == dict(pkd=(True, True), mse=(False, False))
    with pytest.raises(SystemExit):
        cw.parse_args([str(cfg_path), '--max-factor', '0'])
