# Very small detection distillation on the embedded BCCD subset
# (tools/demo/data/bccd_mini, 160x120 inputs) for the reliability tests
# (resume, NaN stop, bad inputs). Terms with parameters (connector, MGD
# generator) and randomness (MGD masks, RPN/RoI sampling, flips); a
# warm-up/decay weight schedule and a stop iteration. One FPN output conv
# per term, so the terms log as loss_kd_feat / loss_kd_mgd.
_base_ = ['./faster_rcnn_bccd_tiny.py']
model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student='{{fileDirname}}/faster_rcnn_bccd_tiny.py',
    teacher='{{fileDirname}}/../../../configs/demo/'
    'faster_rcnn_r18x2_bccd_teacher.py',
    teacher_ckpt=None,
    dry_run_input_size=(64, 64),
    distill_terms=dict(
        feat=dict(student='neck.fpn_convs.0', teacher='neck.fpn_convs.0',
                  connector=dict(type='ConvConnector'),
                  loss=dict(type='FeatureMSELoss', loss_weight=0.5)),
        mgd=dict(student='neck.fpn_convs.1', teacher='neck.fpn_convs.1',
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
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(160, 120), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 120), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))]
train_dataloader = dict(dataset=dict(indices=6, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(indices=2, pipeline=test_pipeline))
test_dataloader = val_dataloader
