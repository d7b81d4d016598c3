# The RTMDet distillation recipe of MMYOLO applied to instance segmentation:
# RTMDet-Ins-s (44.0 box / 38.7 mask) -> RTMDet-Ins-tiny (40.5 / 35.4) on
# COCO 2017; no published distilled result for RTMDet-Ins. Feature KD only:
# the recipe's CWD terms on the three neck outputs, both maps standardised
# (configs/_base_/distill/neck_cwd_norm.py); distillation on epochs 0-279.
# Student, data (with masks), schedule, bbox + segm evaluation and hooks:
# mmdet's RTMDet-Ins-tiny config. See README.md.
_base_ = [
    'mmdet::rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py',
    '../_base_/distill/neck_cwd_norm.py'
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet-ins_s_8xb32-300e_coco/rtmdet-ins_s_8xb32-300e_coco_20221121_212604-fdc5d7ec.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    # ImageNet-pretrained backbone; --cfg-options
    # model.student.backbone.init_cfg=None trains it from scratch.
    student=dict(config='mmdet::rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py'),
    teacher='mmdet::rtmdet/rtmdet-ins_s_8xb32-300e_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=_base_.neck_cwd_norm_terms)

# Connectors get no gradient once distillation stops (DDP).
find_unused_parameters = True

# The student config's EMAHook and PipelineSwitchHook (epoch 280), then
# the stop of distillation at the same epoch.
custom_hooks = _base_.custom_hooks + [
    dict(type='visionkd.DistillStopHook', stop_epoch=280)
]
