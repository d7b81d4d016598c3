# CWD (Shu et al., ICCV 2021): RetinaNet R101-FPN 2x (38.9) -> R50-FPN 2x on
# COCO 2017, channel-wise distillation of the FPN features with the authors'
# detection setting (pppppM/mmdetection-distiller, linked from the official
# TorchDistiller: cwd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py):
# tau 1, loss weight 5 per level on neck levels 0-3 (P3-P6), lr 0.01.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                 loss=dict(type='ChannelWiseDivergence', tau=1.0,
                           loss_weight=5.0))))

optim_wrapper = dict(optimizer=dict(lr=0.01))
