"""tools/analysis_tools/method_shares.py on CamVid (tiny preset): each
method's run built as the runner builds it, its share measured, the two
rules' weights derived from it; methods without their teacher skipped."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from tests.conftest import SHARED_DATA
from tests.test_tools.synthetic_seg import restore_mmengine_globals  # noqa: F401,E501
from tools.analysis_tools import calibrate_weights as cw
from tools.analysis_tools import method_shares as ms
from visionkd.engine.hooks.auto_weight_hook import measure_terms
from visionkd.experiments import METHODS, get_preset
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.run_configs import run_config

CAMVID = osp.join(SHARED_DATA, 'camvid')
pytestmark = pytest.mark.skipif(not osp.isdir(CAMVID),
                                reason='../shared/data is absent')


def _teacher_ckpt(path: str) -> str:
    """A checkpoint of the tiny preset's (untrained) PSPNet teacher."""
    preset = get_preset('seg', 'tiny')
    data = DataSpec(CAMVID, 'train', 'val')
    cfg = run_config(preset, data, data.class_names('seg'), 'teacher',
                     preset.default_arch)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg['model'])
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def test_shares_and_rule_weights(tmp_path, capsys):
    ckpt = _teacher_ckpt(str(tmp_path / 'teacher.pth'))
    out = tmp_path / 'shares.json'
    shares = ms.main(['--task', 'seg', '--data-root', CAMVID, '--preset',
                      'tiny', '--teacher-ckpt', ckpt, '--methods', 'cwd',
                      'cwd_from_ddrnet', '--iters', '2', '--target', '0.5',
                      '--json', str(out)])
    printed = capsys.readouterr().out
    assert shares['cwd_from_ddrnet'] == dict(
        skipped='no --teacher-ckpt for the ddrnet family')
    (row, ) = shares['cwd']['terms']
    share, w = row['share'], row['weight']
    assert share > 0 and w == 1.0
    assert row['grad_share'] == pytest.approx(w * 0.5 / share)
    assert row['grad_share_cap'] == pytest.approx(w * min(1, 0.5 / share))
    # the measurement is the hook's on the runner's config of the method
    preset = get_preset('seg', 'tiny')
    data = DataSpec(CAMVID, 'train', 'val')
    cfg = Config(run_config(preset, data, data.class_names('seg'),
                            'distill', preset.default_arch,
                            METHODS['seg']['cwd'], ckpt))
    seed = cw.setup(cfg)
    again = measure_terms(cw.build_model(cfg, 'cpu'),
                          cw.train_batches(cfg, seed), 2)
    assert again.terms[row['term']].share == pytest.approx(share)
    changed = 'yes' if row['grad_share_cap'] != w else 'no'
    (line, ) = [x for x in printed.splitlines() if x.startswith('cwd ')]
    assert line.split()[1] == row['term'] and line.endswith(changed)
    assert json.loads(out.read_text())['methods'] == shares
    assert ms._no_nan(dict(a=[float('nan'), 1.0])) == dict(a=[None, 1.0])


def test_teacher_ckpt_of_another_family_needs_its_name():
    with pytest.raises(SystemExit, match="write FAMILY=PATH after the "
                       "first"):
        ms._ckpts(['a.pth', 'b.pth'], 'pspnet')
    assert ms._ckpts(['a.pth', 'ddrnet=b.pth'], 'pspnet') == dict(
        pspnet='a.pth', ddrnet='b.pth')
    with pytest.raises(SystemExit):
        ms.parse_args(['--task', 'seg', '--data-root', CAMVID,
                       '--teacher-ckpt', 'a.pth', '--methods', 'nope'])
