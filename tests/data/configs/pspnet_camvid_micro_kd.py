# Very small distillation on ../shared/data/camvid (64x64 crops, 16-channel
# ResNet-18) for the reliability tests (resume, NaN stop, export). Terms
# with parameters (connector, MGD generator) and randomness (MGD masks,
# dropout); a warm-up/decay weight schedule and a stop iteration.
_base_ = ['./pspnet_camvid_tiny.py']
student = dict(
    config='{{fileDirname}}/pspnet_camvid_tiny.py',
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(stem_channels=16, base_channels=16),
    decode_head=dict(in_channels=128, channels=16),
    auxiliary_head=dict(in_channels=64, channels=8))
model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student=student,
    teacher=dict(student, decode_head=dict(in_channels=128, channels=24)),
    teacher_ckpt=None,
    dry_run_input_size=(64, 64),
    distill_terms=dict(
        logits=dict(student='decode_head.conv_seg',
                    teacher='decode_head.conv_seg',
                    loss=dict(type='ChannelWiseDivergence', loss_weight=3.)),
        feat=dict(student='decode_head.bottleneck',
                  teacher='decode_head.bottleneck',
                  connector=dict(type='ConvConnector'),
                  loss=dict(type='FeatureMSELoss', loss_weight=0.5)),
        mgd=dict(student='decode_head.bottleneck',
                 teacher='decode_head.bottleneck',
                 loss=dict(type='MGDLoss', alpha_mgd=1e-3))))
randomness = dict(seed=0)
max_iters = 6  # no validation while training (tools/test.py does it)
train_cfg = dict(max_iters=max_iters, val_begin=1000, val_interval=1000)
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
    dict(type='PolyLR', by_epoch=False, begin=2, end=max_iters)]
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=-1))
custom_hooks = [
    dict(type='visionkd.DistillLossWeightScheduleHook', warmup_iters=2,
         decay='cosine', end_factor=0.2),
    dict(type='visionkd.DistillStopHook', stop_iter=5)]
crop = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(120, 90), ratio_range=(0.6, 1.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(96, 72), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')]
train_dataloader = dict(dataset=dict(indices=6, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(indices=3, pipeline=test_pipeline))
test_dataloader = val_dataloader
