"""Two training iterations of every detection KD family on real BCCD data.

In-process mmengine Runner on the embedded BCCD subset
(tools/demo/data/bccd_mini) with the tiny demo
Faster R-CNNs (teacher half width, student quarter width) or tiny GFLs, one
distillation term per family, as the configs under configs/ write it.
"""
import copy
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import REPO

KD_CFG = osp.join(REPO, 'tests', 'data', 'configs',
                  'faster_rcnn_bccd_tiny_kd.py')

CONV = dict(type='ConvConnector')
FAMILIES = {
    'fitnet': dict(student='neck', teacher='neck', connector=CONV,
                   loss=dict(type='FeatureMSELoss')),
    'pkd': dict(student='neck', teacher='neck', connector=CONV,
                loss=dict(type='PKDLoss', loss_weight=6.0)),
    'cwd': dict(student='neck', teacher='neck', connector=CONV,
                levels=[0, 1, 2, 3],
                loss=dict(type='ChannelWiseDivergence', tau=1.0,
                          loss_weight=5.0)),
    'fgd': dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                loss=dict(type='FGDLoss', temp=0.5, alpha_fgd=5e-5,
                          beta_fgd=2.5e-5, gamma_fgd=5e-5,
                          lambda_fgd=5e-7)),
    'mgd': dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                loss=dict(type='MGDLoss', alpha_mgd=5e-7, lambda_mgd=0.45)),
    'fgfi': dict(student='neck', teacher='neck',
                 loss=dict(type='FGFILoss', stride=None, scales=[8],
                           ratios=[0.5, 1.0, 2.0], loss_weight=0.01)),
    'defeat': dict(student='neck', teacher='neck',
                   loss=dict(type='DeFeatLoss', loss_weight_fg=3.0,
                             loss_weight_bg=12.0,
                             strides=[4, 8, 16, 32, 64])),
    'roi': dict(mode='roi', student='roi_head', teacher='roi_head',
                loss=dict(type='RoIKDLoss', tau=2.0, loss_weight_bbox=1.0)),
    'ld': dict(mode='ld', student='bbox_head', teacher='bbox_head',
               loss=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                         loss_weight=0.25, T=10),
               loss_cls=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                             loss_weight=0.5, T=10)),
    'bckd': dict(mode='bckd', student='bbox_head', teacher='bbox_head',
                 loss_cls=dict(type='BCKDClsLoss', beta=1.0, loss_weight=1.0),
                 loss_reg=dict(type='BCKDRegLoss', loss_weight=4.0)),
    'cross_head': dict(
        mode='cross_head', student='bbox_head', teacher='bbox_head',
        reused_teacher_head_idx=0,
        loss_cls=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
        loss_reg=dict(type='KDKLDivLoss', T=1.0, class_reduction='sum',
                      loss_weight=4.0)),
}
#: families of GFL heads, trained together on a GFL pair
GFL_FAMILIES = ('bckd', 'cross_head', 'ld')


def tiny_gfl(width: int, fpn: int) -> dict:
    """A from-scratch GFL R18-FPN of the given widths for BCCD."""
    return dict(
        _scope_='mmdet',
        config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        backbone=dict(depth=18, base_channels=width, init_cfg=None,
                      frozen_stages=-1, norm_eval=False),
        neck=dict(in_channels=[width * 2**i for i in range(4)],
                  out_channels=fpn),
        bbox_head=dict(in_channels=fpn, feat_channels=fpn, stacked_convs=1,
                       num_classes=3))


def detector_cfg(names, work_dir: str) -> Config:
    """2 iterations of the BCCD KD config with the given family terms."""
    cfg = Config.fromfile(KD_CFG)
    cfg.work_dir = work_dir
    cfg.model.distill_terms = {n: copy.deepcopy(FAMILIES[n]) for n in names}
    if set(names) & set(GFL_FAMILIES):
        cfg.model.student = tiny_gfl(16, 64)
        cfg.model.teacher = tiny_gfl(32, 64)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2,
                         val_interval=100)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = None
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    # half-size images (real BCCD boxes, scaled): same code paths, faster
    dataset = cfg.train_dataloader.dataset
    dataset.indices = 4
    for step in dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (160, 120)
    cfg.randomness = dict(seed=0)
    cfg.log_level = 'WARNING'
    return cfg


class _LossRecorder:
    """Collects the distiller's loss dicts during training."""

    def __init__(self, model):
        self.values = []
        self._loss = model.loss

        def loss(*args, **kwargs):
            out = self._loss(*args, **kwargs)
            self.values.append({
                k: float(sum(v) if isinstance(v, list) else v.detach())
                for k, v in out.items()})
            return out

        model.loss = loss


def train_two_iterations(names, work_dir) -> dict:
    """Run the runner; return the losses, the student change and grads."""
    from mmengine.runner import Runner
    cfg = detector_cfg(names, work_dir)
    # mmengine pretty-prints (yapf) the config several times per run, which
    # costs more than the two iterations on a busy CPU; nothing reads it.
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
    changed = [k for k, v in student.named_parameters()
               if not torch.equal(v, before[k])]
    teacher_grads = [p.grad for p in runner.model.teacher.parameters()
                     if p.grad is not None]
    return dict(iters=runner.iter, losses=rec.values, changed=changed,
                teacher_grads=teacher_grads)


TWO_STAGE = sorted(n for n in FAMILIES if n not in GFL_FAMILIES)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """One run of the Faster R-CNN pair with every two-stage family's term
    (they share the recorded layers, as several terms of one config do) and
    one run of the GFL pair with LD, BCKD and CrossKD."""
    return dict(
        two_stage=train_two_iterations(
            TWO_STAGE, str(tmp_path_factory.mktemp('two_stage'))),
        gfl=train_two_iterations(list(GFL_FAMILIES),
                                 str(tmp_path_factory.mktemp('gfl'))))


def test_every_family_is_listed():
    from visionkd.registry import TERM_MODES
    # 'mask' needs instance masks, which BCCD has not: its training step is
    # tests/test_models/test_distillers/test_mask_term.py; 'detr_query' and
    # 'detr_distill' need DETR models: tests/test_tools/
    # test_detr_configs_train.py trains their configs on BCCD
    detection_modes = {m for m, cls in TERM_MODES.module_dict.items()
                       if 'detection' in cls.tasks and m != 'feature'}
    assert detection_modes - {'mask', 'detr_query', 'detr_distill'} <= \
        set(FAMILIES)


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_two_training_iterations(runs, name):
    run = runs['gfl' if name in GFL_FAMILIES else 'two_stage']
    assert run['iters'] == 2 and len(run['losses']) == 2
    for losses in run['losses']:
        kd = {k: v for k, v in losses.items()
              if k == f'loss_kd_{name}' or k.startswith(f'loss_kd_{name}_')}
        assert kd, f'{name}: no distillation loss in {sorted(losses)}'
        assert all(math.isfinite(v) for v in kd.values()), kd
        assert all(math.isfinite(v) for v in losses.values()), losses
    # the optimizer stepped the student; the teacher got no gradient
    assert run['changed']
    assert not run['teacher_grads']
