# RTMDet distillation recipe of MMYOLO (configs/rtmdet/distillation,
# MMRazor FpnTeacherDistill): RTMDet-s (44.5) -> RTMDet-tiny (40.9) on
# COCO 2017 (mmyolo: 41.0 -> 41.8 with its RTMDet-s teacher (44.6)).
# CWD (tau 1, loss weight 1 per level) on the three neck outputs before
# their BN/SiLU (`neck.out_convs.<i>.conv`), the student's map through a
# bias-free 1x1 conv + BatchNorm without affine on batch statistics
# (NormConnector); distillation on epochs 0-279, the last 20 epochs (no
# mosaic) train the student alone. The teacher's map is standardised alike
# (teacher_connector, parameter-free), as in the recipe (see
# README.md). Student, data, schedule and hooks: mmdet's RTMDet-tiny config.
_base_ = [
    'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
    '../_base_/distill/neck_cwd_norm.py'
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_s_8xb32-300e_coco/rtmdet_s_8xb32-300e_coco_20220905_161602-387a891e.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    # ImageNet-pretrained backbone; --cfg-options
    # model.student.backbone.init_cfg=None trains it from scratch.
    student=dict(config='mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'),
    teacher='mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=_base_.neck_cwd_norm_terms)

# Connectors get no gradient once distillation stops (DDP).
find_unused_parameters = True

# The student config's EMAHook and PipelineSwitchHook (epoch 280), then
# the stop of distillation at the same epoch.
custom_hooks = _base_.custom_hooks + [
    dict(type='visionkd.DistillStopHook', stop_epoch=280)
]
