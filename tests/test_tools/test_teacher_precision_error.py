"""teacher_precision_error.py measures a bf16 teacher's feature error."""
import os.path as osp

from mmengine.config import Config

from tests.conftest import REPO
from tools.analysis_tools.teacher_precision_error import compare, measure


def test_compare_is_exact_on_hand_values():
    import torch
    ref = {'neck:output': [torch.tensor([1.0, -2.0]), torch.tensor([4.0])]}
    low = {'neck:output': [torch.tensor([1.5, -2.0]), torch.tensor([3.0])]}
    err = compare(ref, low)['neck:output']
    assert err == dict(max_abs=1.0, max_rel=0.25, mean_rel=1.5 / 7.0)


def test_bf16_teacher_error_on_a_real_batch_is_small_but_not_zero():
    cfg = Config.fromfile(osp.join(REPO, 'tests', 'data', 'configs',
                                   'faster_rcnn_bccd_tiny_kd.py'))
    cfg.train_dataloader.batch_size = 1
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    worst = measure(cfg, None, batches=1, precisions=['bf16'])['bf16']
    assert worst, 'no teacher layer recorded'
    for err in worst.values():
        assert 0 < err['max_rel'] < 0.1 and 0 < err['mean_rel'] < 0.1
