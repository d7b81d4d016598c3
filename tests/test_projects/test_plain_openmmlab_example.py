"""The plain mmdet/mmseg example configs train through mmengine's Runner.

projects/plain_openmmlab_example: (a) a plain mmdet config whose model is
wrapped in visionkd's distiller via ``custom_imports``; (b) a plain mmseg
config that uses a visionkd loss without the distiller.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from tests.conftest import BCCD_MINI, REPO, SHARED_DATA, needs_shared_data

EXAMPLE = osp.join(REPO, 'projects', 'plain_openmmlab_example', 'configs')

@pytest.fixture
def no_scope_leak():
    """Forget the DefaultScope instances a Runner creates."""
    before = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)


def _short_schedule(cfg: Config, work_dir, iters: int = 2,
                    batch_size: int = 1) -> None:
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters,
                         val_interval=1000)
    # mmengine validates after the last iteration: no validation here
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = []
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=1000)
    cfg.default_hooks.visualization = dict(
        type=cfg.default_hooks.visualization.type)
    cfg.log_processor = dict(by_epoch=False)
    cfg.randomness = dict(seed=0)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)


def _train(cfg: Config) -> dict:
    """Train; return the losses of the last iteration, as logged."""
    runner = Runner.from_cfg(cfg)
    assert DefaultScope.get_current_instance().scope_name == \
        cfg.default_scope
    runner.train()
    tags = runner.message_hub.log_scalars
    return {k[len('train/'):] if k.startswith('train/') else k:
            v.current() for k, v in tags.items() if 'loss' in k}


def test_mmdet_config_with_visionkd_distiller(tmp_path, no_scope_leak):
    cfg = Config.fromfile(osp.join(EXAMPLE, 'faster_rcnn_r18_distill_bccd.py'))
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports.imports == ['visionkd']
    bccd = BCCD_MINI + '/'  # the embedded BCCD subset (320x240)
    cfg.train_dataloader.dataset.data_root = bccd
    cfg.train_dataloader.dataset.indices = 4
    # 320x240 instead of COCO's 1333x800 keeps the CPU test fast
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'Resize'
    resize.scale = (320, 240)
    cfg.model.teacher_ckpt = None  # no trained teacher in tests
    _short_schedule(cfg, tmp_path)
    losses = _train(cfg)
    kd = [k for k in losses if k.startswith('loss_kd_fpn_l')]
    assert sorted(kd) == [f'loss_kd_fpn_l{i}' for i in range(5)]
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox'} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


@needs_shared_data
def test_mmseg_config_with_visionkd_loss_alone(tmp_path, no_scope_leak):
    cfg = Config.fromfile(osp.join(EXAMPLE, 'pspnet_r18_selfkd_camvid.py'))
    assert cfg.default_scope == 'mmseg'
    camvid = osp.join(SHARED_DATA, 'camvid') + '/'
    cfg.train_dataloader.dataset.data_root = camvid
    cfg.train_dataloader.dataset.indices = 4
    # 128x160 crops: the dilated (output stride 8) backbone is costly on CPU
    crop = cfg.train_dataloader.dataset.pipeline[3]
    assert crop.type == 'RandomCrop'
    crop.crop_size = cfg.model.data_preprocessor.size = (128, 160)
    # PSPNet's 1x1 pyramid pooling + BN needs more than one image
    _short_schedule(cfg, tmp_path, batch_size=2)
    losses = _train(cfg)
    assert {'decode.loss_ce', 'aux.loss_ce', 'loss_selfkd'} <= set(losses)
    assert losses['loss_selfkd'] > 0
    assert not any(k.startswith('loss_kd_') for k in losses)


def test_self_distillation_gradients_reach_the_student_head_only(
        no_scope_leak):
    """The decode head (teacher) gets no gradient from loss_selfkd."""
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(osp.join(EXAMPLE, 'pspnet_r18_selfkd_camvid.py'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64),
                                        ori_shape=(64, 64),
                                        pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, 64, 64)))
        samples.append(s)
    model.train()
    loss = model.loss(x, samples)['loss_selfkd']
    loss.backward()
    assert model.decode_head.conv_seg.weight.grad is None
    assert model.auxiliary_head.conv_seg.weight.grad.abs().sum() > 0
