"""tools/analysis_tools/roi_kd_check.py: the teacher's and the student's
agreement with the sampling labels of the student's RoIs, and the loss's
parts (issue #19 item 3)."""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from tests.conftest import SHARED_DATA
from tools.analysis_tools import roi_kd_check as rc
from visionkd.experiments import METHODS, get_preset
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.run_configs import run_config
from visionkd.models.losses import RoIKDLoss

BCCD = osp.join(SHARED_DATA, 'bccd')


def test_roi_stats_by_hand():
    # 2 classes + background (label 2); 3 RoIs: fg 0, fg 1, bg
    preds_T = torch.tensor([[2.0, 0.0, 0.0],    # top-1 0: right
                            [2.0, 0.0, 0.0],    # top-1 0: wrong (label 1)
                            [0.0, 0.0, 0.0]])   # uniform: argmax 0, wrong
    preds_S = torch.zeros(3, 3)
    labels = torch.tensor([0, 1, 2])
    s = rc.roi_stats(preds_S, preds_T, labels)
    assert (s['n_fg'], s['n_bg']) == (2, 1)
    assert s['teacher_fg_top1'] == 0.5 and s['teacher_bg_top1'] == 0.0
    e2 = math.exp(2.0)
    # p(label): RoI 0 e^2 / (e^2 + 2), RoI 1 1 / (e^2 + 2)
    assert s['teacher_fg_p'] == pytest.approx((e2 + 1) / (e2 + 2) / 2)
    assert s['teacher_bg_p'] == pytest.approx(1 / 3)
    assert s['student_fg_p'] == pytest.approx(1 / 3)
    only_bg = rc.roi_stats(preds_S[2:], preds_T[2:], labels[2:])
    assert math.isnan(only_bg['teacher_fg_top1'])


def test_parts_add_up_to_the_loss():
    torch.manual_seed(0)
    loss = RoIKDLoss(tau=2.0, loss_weight_fg=1.0, loss_weight_bg=0.5,
                     loss_weight_bbox=2.0, loss_weight=1.5)
    call = dict(preds_S=torch.randn(6, 4), preds_T=torch.randn(6, 4),
                labels=torch.tensor([0, 1, 2, 3, 3, 1]),
                bbox_pred_S=torch.randn(6, 12),
                bbox_pred_T=torch.randn(6, 12))
    parts = rc._parts(loss, call)
    assert sum(parts.values()) == pytest.approx(float(loss(**call)))
    assert all(v > 0 for v in parts.values())
    assert loss.loss_weight_bg == 0.5  # the loss itself is left as it was
    no_box = RoIKDLoss(loss_weight_bbox=0.0)
    assert rc._parts(no_box, call)['bbox'] == 0.0


@pytest.mark.skipif(not osp.isdir(BCCD), reason='../shared/data is absent')
def test_check_on_the_runner_config(tmp_path, capsys):
    preset = get_preset('det', 'tiny')
    data = DataSpec(BCCD, 'annotations/train.json', 'annotations/val.json')
    classes = data.class_names('det')
    teacher = run_config(preset, data, classes, 'teacher',
                         preset.default_arch)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config(teacher).model)
    model.init_weights()
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    cfg = Config(run_config(preset, data, classes, 'distill',
                            preset.default_arch, METHODS['det']['roi_kd'],
                            ckpt))
    path = str(tmp_path / 'roi_kd.py')
    cfg.dump(path)
    out = tmp_path / 'stats.json'
    stats = rc.main([path, '--iters', '2', '--json', str(out)])
    assert stats['images'] == 4  # 2 batches of the tiny preset's 2
    assert stats['n_fg'] + stats['n_bg'] == 4 * stats['rois_per_image']
    assert 0 < stats['fg_share'] < 1
    assert 0 <= stats['teacher_fg_top1'] <= 1 and stats['task_loss'] > 0
    assert stats['loss_fg'] > 0 and stats['loss_bg'] > 0
    assert json.loads(out.read_text()) == pytest.approx(stats)
    printed = capsys.readouterr().out
    assert 'RoIs per image' in printed and 'box L1' in printed
    # a student checkpoint (its keys as a baseline run saves them) is
    # loaded into the student: its scores change
    student = run_config(preset, data, classes, 'baseline',
                         preset.default_arch)
    torch.manual_seed(1)
    other = MODELS.build(Config(student).model)
    torch.save(dict(state_dict=other.state_dict()), tmp_path / 's.pth')
    loaded = rc.check(Config.fromfile(path), 2, str(tmp_path / 's.pth'))
    assert loaded['student_bg_p'] != pytest.approx(stats['student_bg_p'])
    with pytest.raises(SystemExit):
        rc.main([path, '--iters', '0'])
