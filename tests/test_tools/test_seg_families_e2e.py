"""tools/train.py + tools/test.py on camvid for every segmentation KD family.

One tiny config holds one distillation term per family (SKD pixel-wise and
pair-wise, IFVD, CIRKD mini-batch and memory, DIST, MGD), so a single
train+test pair covers them all; CWD is covered by test_train_test_e2e.py.
"""
import json
import math
import os.path as osp
import re

import pytest

from tests.conftest import REPO, SHARED_DATA, run_repo_script

CFG = osp.join(REPO, 'tests', 'data', 'configs',
               'pspnet_camvid_tiny_seg_families.py')
TERMS = ('skd_pixel', 'skd_pair', 'ifvd', 'cirkd_minibatch', 'cirkd_memory',
         'dist', 'mgd')

pytestmark = pytest.mark.skipif(
    not osp.isdir(osp.join(SHARED_DATA, 'camvid')),
    reason='../shared/data/camvid is not present')


def test_seg_families_train_then_test(tmp_path):
    out = run_repo_script('tools/train.py', CFG, '--work-dir', str(tmp_path))
    for term in TERMS:
        values = re.findall(rf'\bloss_kd_{term}: (\S+)', out)
        assert values, f'loss_kd_{term} is not in the training log'
        assert all(math.isfinite(float(v)) for v in values), (term, values)

    with open(osp.join(tmp_path, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    out = run_repo_script('tools/test.py', CFG, ckpt, '--work-dir',
                   str(tmp_path / 'test'))
    lines = [x for x in out.splitlines() if x.startswith('test metrics: ')]
    assert lines, out[-2000:]
    miou = json.loads(lines[-1][len('test metrics: '):])['mIoU']
    assert 0.0 <= miou <= 100.0
