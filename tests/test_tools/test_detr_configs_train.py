"""Two training iterations of every configs/kd_detr and configs/detr_distill
config on real BCCD.

The configs' own models at full size (DINO R50 -> R18, Deformable DETR
R101 -> R50, DINO -> Faster R-CNN) from random weights (no checkpoint, no
download), one embedded BCCD image per iteration at 320x240: the step
runs, the distillation losses are finite, the student's optimizer steps
and the teacher gets no gradient. A CPU cannot train these detectors to
a number (see configs/kd_detr/README.md).
"""
import glob
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import BCCD_MINI, REPO
from tests.test_tools.test_det_families_train import _LossRecorder
from visionkd.utils import without_teacher_weights

CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs', 'kd_detr', '*.py')) +
    glob.glob(osp.join(REPO, 'configs', 'detr_distill', '*.py')))
PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(320, 240), keep_ratio=True),
    dict(type='PackDetInputs'),
]


def _from_scratch(spec):
    """A model spec with its backbone's pretrained init off."""
    spec = dict(config=spec) if isinstance(spec, str) else dict(spec)
    spec['backbone'] = dict(spec.get('backbone', {}), init_cfg=None)
    return spec


def bccd_cfg(path: str, work_dir: str) -> Config:
    cfg = Config.fromfile(path)
    without_teacher_weights(cfg.model)
    cfg.model.student = _from_scratch(cfg.model.student)
    cfg.work_dir = work_dir
    cfg.train_dataloader = dict(
        batch_size=1, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='CocoDataset', data_root=BCCD_MINI,
                     ann_file='annotations/train.json',
                     data_prefix=dict(img='images/'), indices=2,
                     metainfo=dict(classes=('RBC', 'WBC', 'Platelets')),
                     pipeline=PIPELINE))
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2,
                         val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = None
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.randomness = dict(seed=0)
    cfg.log_level = 'WARNING'
    return cfg


@pytest.mark.parametrize('path', CONFIGS,
                         ids=[osp.basename(p) for p in CONFIGS])
def test_two_iterations_on_bccd(path, tmp_path):
    from mmengine.runner import Runner
    cfg = bccd_cfg(path, str(tmp_path))
    pretty = Config.pretty_text
    Config.pretty_text = property(lambda self: '')
    try:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            runner = Runner.from_cfg(cfg)
            student = runner.model.student
            before = {k: v.detach().clone()
                      for k, v in student.named_parameters()}
            rec = _LossRecorder(runner.model)
            runner.train()
    finally:
        Config.pretty_text = pretty
        torch.set_grad_enabled(True)
    assert runner.iter == 2 and len(rec.values) == 2
    for losses in rec.values:
        kd = {k: v for k, v in losses.items() if k.startswith('loss_kd_')}
        assert kd and all(math.isfinite(v) for v in kd.values()), losses
    assert any(not torch.equal(v, before[k])
               for k, v in student.named_parameters())
    assert all(p.grad is None for p in runner.model.teacher.parameters())
