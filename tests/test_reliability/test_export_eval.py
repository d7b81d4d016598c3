"""An exported student checkpoint is a plain mmdet/mmseg checkpoint: it
loads with init_detector/init_model and strict key matching, and the
standard test loop gives the same predictions and mAP/mIoU as evaluating
the distiller config with the distiller checkpoint."""
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import needs_shared_data
from tests.test_reliability.helpers import (
    CFG_DIR,
    MICRO_KD,
    assert_same,
    isolated_mmengine,
)
from tools.export_student import export_student

DET_KD = osp.join(CFG_DIR, 'faster_rcnn_bccd_tiny_kd.py')


def distiller_ckpt(config: str, path: str) -> dict:
    """Save a distiller checkpoint with seeded random weights."""
    from visionkd.registry import MODELS
    cfg = Config.fromfile(config)
    scope = 'mmseg' if 'Segmentation' in cfg.model.type else 'mmdet'
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.uniform_(-0.1, 0.1)
            else:
                p.normal_(std=0.05)
        if scope == 'mmseg':  # favour road/building/sky: mIoU > 0
            model.student.decode_head.conv_seg.bias[[0, 2, 10]] += 3.0
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=6)), path)
    return model.student.state_dict()


def run_test_loop(config: str, ckpt: str, work_dir: str) -> tuple:
    """mmengine's test loop as tools/test.py runs it: metrics, preds."""
    from mmengine.evaluator import DumpResults
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.load_from = ckpt
    cfg.launcher = 'none'
    out = osp.join(work_dir, 'preds.pkl')
    with isolated_mmengine():
        runner = Runner.from_cfg(cfg)
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))
        metrics = runner.test()
    with open(out, 'rb') as f:
        return metrics, pickle.load(f)


def prediction_tensors(preds: list, kind: str) -> list:
    if kind == 'det':
        return [(p['pred_instances']['bboxes'], p['pred_instances']['scores'],
                 p['pred_instances']['labels']) for p in preds]
    return [(p['seg_logits']['data'], p['pred_sem_seg']['data'])
            for p in preds]


@pytest.mark.parametrize('kind, config, metric', [
    ('det', DET_KD, 'coco/bbox_mAP'),
    pytest.param('seg', MICRO_KD, 'mIoU', marks=needs_shared_data),
])
def test_exported_student_evaluates_like_the_distiller(
        tmp_path, kind, config, metric):
    from mmengine.runner import load_checkpoint
    src, dst = str(tmp_path / 'kd.pth'), str(tmp_path / 'student.pth')
    student_cfg = str(tmp_path / 'student.py')
    student_state = distiller_ckpt(config, src)
    export_student(src, dst, config, student_cfg)

    # mmdet's / mmseg's own loaders, with strict key matching
    if kind == 'det':
        from mmdet.apis import init_detector as init
    else:
        from mmseg.apis import init_model as init
    plain = init(student_cfg, dst, device='cpu')
    assert 'visionkd' not in type(plain).__module__
    load_checkpoint(plain, dst, map_location='cpu', strict=True)
    assert_same(plain.state_dict(), student_state, 'exported weights')

    kd_metrics, kd_preds = run_test_loop(config, src, str(tmp_path / 'kd'))
    st_metrics, st_preds = run_test_loop(student_cfg, dst,
                                         str(tmp_path / 'st'))
    assert kd_metrics[metric] == st_metrics[metric]
    assert set(kd_metrics) == set(st_metrics)
    assert len(kd_preds) == len(st_preds) > 0
    assert_same(prediction_tensors(kd_preds, kind),
                prediction_tensors(st_preds, kind), 'predictions')
    if kind == 'seg':  # random weights still label some pixels right
        assert kd_metrics[metric] > 0
