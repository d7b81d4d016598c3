# The RTMDet distillation recipe of MMYOLO (configs/rtmdet/distillation)
# applied to YOLOX: YOLOX-s (40.5) -> YOLOX-tiny (32.0) on COCO 2017; no
# published distilled result for YOLOX. CWD (tau 1, loss weight 1 per
# level) on the three neck outputs before their BN/SiLU
# (`neck.out_convs.<i>.conv`), the student's map through a bias-free 1x1
# conv + BatchNorm without affine on batch statistics (NormConnector), the
# teacher's map standardised alike (teacher_connector), as in the recipe.
# Distillation on epochs 0-284; YOLOX's last 15 epochs (mmdet's
# YOLOXModeSwitchHook: no mosaic, L1 loss) train the student alone.
# Student, data, schedule, hooks: mmdet's YOLOX-tiny config.
_base_ = [
    'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py',
    '../_base_/distill/neck_cwd_norm.py'
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/yolox/yolox_s_8x8_300e_coco/yolox_s_8x8_300e_coco_20211121_095711-4592a793.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student=dict(config='mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'),
    teacher='mmdet::yolox/yolox_s_8xb8-300e_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=_base_.neck_cwd_norm_terms)

# Connectors get no gradient once distillation stops (DDP).
find_unused_parameters = True

# The student config's YOLOXModeSwitchHook (last 15 epochs), SyncNormHook
# and EMAHook, then the stop of distillation at epoch 285.
custom_hooks = _base_.custom_hooks + [
    dict(type='visionkd.DistillStopHook', stop_epoch=285)
]
