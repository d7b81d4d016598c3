# A plain MMSegmentation config that uses a visionkd loss *without* the
# distiller: PSPNet-R18 whose auxiliary (FCN, stage 3) head imitates its own
# decode head's logits (self-distillation) with visionkd.PixelWiseKDLoss.
# CamVid in the Cityscapes layout under data/camvid (leftImg8bit/, gtFine/).
# Train from the project root:  python tools/train.py <this config>
_base_ = [
    'mmseg::_base_/models/pspnet_r50-d8.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
custom_imports = dict(
    imports=['visionkd', 'projects.plain_openmmlab_example.selfkd'],
    allow_failed_imports=False)
data_root = 'data/camvid/'
crop_size = (240, 320)
norm_cfg = dict(type='BN', requires_grad=True)  # one GPU / CPU
model = dict(
    type='SelfDistillEncoderDecoder',
    loss_kd=dict(type='visionkd.PixelWiseKDLoss', tau=1.0, loss_weight=1.0),
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # 'open-mmlab://resnet18_v1c' for real training
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=512, channels=128, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, norm_cfg=norm_cfg))
train_dataloader = dict(
    batch_size=4, dataset=dict(data_root=data_root, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=(480, 360), ratio_range=(0.5, 2.0),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs')]))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(480, 360), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')]
val_dataloader = dict(
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
