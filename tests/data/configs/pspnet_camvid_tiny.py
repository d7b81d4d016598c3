# Tiny plain-mmseg PSPNet-R18 student on ../shared/data/camvid for tests.
_base_ = [
    'mmseg::_base_/models/pspnet_r50-d8.py',
    '../../../configs/_base_/datasets/camvid_cityscapes.py',
    'mmseg::_base_/default_runtime.py',
]
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(240, 320)),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=512, channels=32, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=16, norm_cfg=norm_cfg))
max_iters = 3
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=max_iters),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=False)
train_dataloader = dict(batch_size=2, dataset=dict(indices=4))
val_dataloader = dict(dataset=dict(indices=3))
test_dataloader = val_dataloader
