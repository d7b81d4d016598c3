"""tools/train.py and tools/test.py end to end on real data: the embedded
BCCD subset (detection) and ../shared/data/camvid (segmentation)."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import REPO, needs_shared_data, run_repo_script

CFG = osp.join(REPO, 'tests', 'data', 'configs')

def metrics(output: str) -> dict:
    line = [x for x in output.splitlines() if x.startswith('test metrics: ')]
    assert line, output[-2000:]
    return json.loads(line[-1][len('test metrics: '):])


def last_ckpt(work_dir) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


@pytest.mark.parametrize('config, metric', [
    ('faster_rcnn_bccd_tiny_kd.py', 'coco/bbox_mAP'),
    pytest.param('pspnet_camvid_tiny_cwd.py', 'mIoU',
                 marks=needs_shared_data),
])
def test_distill_train_then_test(tmp_path, config, metric):
    cfg = osp.join(CFG, config)
    out = run_repo_script('tools/train.py', cfg, '--work-dir', str(tmp_path))
    assert 'loss_kd_' in out
    ckpt = last_ckpt(tmp_path)
    out = run_repo_script('tools/test.py', cfg, ckpt, '--work-dir',
                   str(tmp_path / 'test'))
    value = metrics(out)[metric]
    assert 0.0 <= value <= 100.0
    import torch
    state = torch.load(ckpt, map_location='cpu',
                       weights_only=False)['state_dict']
    assert not any(k.startswith('teacher.') for k in state)
    assert any(k.startswith('student.') for k in state)


def test_bad_config_path_fails_clearly(tmp_path):
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/kd/nope.py'], cwd=REPO,
        capture_output=True, text=True)
    assert proc.returncode != 0
    assert "config file 'configs/kd/nope.py' does not exist" in proc.stderr
