"""A segmentation task a tiny model learns in seconds, for the doctor and
auto-weight tests: 32x32 images of a bright square on a dark noisy
background (classes background / square), written to a tmp dir, with tiny
mmseg teacher/student configs and a teacher trained on it in-process."""
import os
import os.path as osp
from typing import Optional

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def restore_mmengine_globals():
    """Undo what in-process runners and tools leave behind: the default
    registry scope, the current logger and message hub (later tests build
    unscoped types and read the current logger). Autouse in every module
    that imports it."""
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    managers = (DefaultScope, MMLogger, MessageHub)
    saved = [m._instance_dict.copy() for m in managers]
    yield
    for manager, instances in zip(managers, saved):
        manager._instance_dict.clear()
        manager._instance_dict.update(instances)


#: mmseg EncoderDecoder: ResNetV1c-18 at 1/8 (16..128 channels) + FCN head.
MODEL = """dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean={mean}, std=[58.4, 57.1, 57.4],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(32, 32)),
    backbone=dict(
        type='ResNetV1c', depth=18, base_channels=16, stem_channels=16,
        num_stages=4, out_indices=(3, ), dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1), norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False, contract_dilation=True, init_cfg={init_cfg}),
    decode_head=dict(
        type='FCNHead', in_channels=128, in_index=0, channels=16,
        num_convs=1, concat_input=False, dropout_ratio=0.0, num_classes=2,
        norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                         loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))"""

MEAN = '[123.7, 116.3, 103.5]'

DATA = """default_scope = 'mmseg'
data_root = {root!r}
metainfo = dict(classes=('background', 'square'),
                palette=[(0, 0, 0), (255, 255, 255)])
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]


def _loader(split, sampler, batch_size):
    return dict(
        batch_size=batch_size, num_workers=0, persistent_workers=False,
        sampler=dict(type=sampler, shuffle=sampler != 'DefaultSampler'),
        dataset=dict(type='BaseSegDataset', data_root=data_root,
                     metainfo=metainfo, img_suffix='.png',
                     seg_map_suffix='.png',
                     data_prefix=dict(img_path='img/' + split,
                                      seg_map_path='ann/' + split),
                     pipeline=pipeline))


train_dataloader = _loader('train', 'InfiniteSampler', 4)
val_dataloader = _loader('val', 'DefaultSampler', 4)
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = []
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'),
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
randomness = dict(seed=0)
"""


def model_cfg(mean: str = MEAN, init_cfg: Optional[str] = None) -> str:
    """The tiny model's config text (``mean`` and backbone ``init_cfg`` as
    Python source)."""
    return MODEL.format(mean=mean, init_cfg=init_cfg or 'None')


def make_dataset(root: str, n_train: int = 16, n_val: int = 8) -> str:
    """Write the squares dataset under ``root``; return ``root``."""
    import mmcv
    rng = np.random.RandomState(0)
    for split, n in (('train', n_train), ('val', n_val)):
        os.makedirs(osp.join(root, 'img', split), exist_ok=True)
        os.makedirs(osp.join(root, 'ann', split), exist_ok=True)
        for i in range(n):
            img = rng.randint(0, 60, (32, 32, 3)).astype(np.uint8)
            ann = np.zeros((32, 32), np.uint8)
            size = rng.randint(8, 20)
            y, x = rng.randint(0, 32 - size, 2)
            img[y:y + size, x:x + size] = rng.randint(180, 255, (3, ))
            ann[y:y + size, x:x + size] = 1
            mmcv.imwrite(img, osp.join(root, 'img', split, f'{i}.png'))
            mmcv.imwrite(ann, osp.join(root, 'ann', split, f'{i}.png'))
    return root


def write_teacher_config(path: str, root: str) -> str:
    """A plain mmseg config of the tiny model on the squares data."""
    with open(path, 'w') as f:
        f.write(DATA.format(root=root) + f'model = {model_cfg()}\n')
    return path


def write_kd_config(path: str, root: str, teacher_ckpt: Optional[str],
                    terms: Optional[str] = None, student: str = '',
                    teacher: str = '', model_extra: str = '',
                    extra: str = '') -> str:
    """A SegmentationDistiller config on the squares data (``terms``,
    ``student``, ``teacher``: Python source; defaults: the tiny model for
    both and a CWD term on the logits; ``model_extra``: more distiller
    arguments, ``extra``: more config lines)."""
    terms = terms or ("dict(logits=dict(student='decode_head.conv_seg', "
                      "teacher='decode_head.conv_seg', loss=dict("
                      "type='ChannelWiseDivergence', tau=1.0, "
                      "loss_weight=3.0)))")
    text = DATA.format(root=root) + (
        'model = dict(\n'
        "    type='visionkd.SegmentationDistiller',\n"
        f'    student={student or model_cfg()},\n'
        f'    teacher={teacher or model_cfg()},\n'
        f'    teacher_ckpt={teacher_ckpt!r},\n'
        '    dry_run_input_size=(32, 32),\n'
        f'    {model_extra}'
        f'    distill_terms={terms})\n' + extra)
    with open(path, 'w') as f:
        f.write(text)
    return path


def train_teacher(config: str, out: str, iters: int = 40,
                  lr: float = 0.05) -> str:
    """Train the config's model for ``iters`` SGD steps (seeded); save its
    weights (tensors only) to ``out``; return ``out``."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _, batch in zip(range(iters), loader):
        data = model.data_preprocessor(batch, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(dict(state_dict=model.state_dict()), out)
    return out


def save_random(config: str, out: str, seed: int = 1) -> str:
    """Save the config's model at its random initialisation to ``out``."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(config)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
        model.init_weights()
    torch.save(dict(state_dict=model.state_dict()), out)
    return out
