# PKD (Cao et al., NeurIPS 2022): RetinaNet R101-FPN 2x (38.9) -> R50-FPN 2x
# on COCO 2017 with the official RetinaNet setting (MMRazor
# pkd_fpn_retina_x101_retina_r50_2x_coco.py, teacher RetinaNet X101): PKD on
# the first four FPN outputs P3-P6 (neck levels 0-3), loss weight 10 per
# level, lr 0.01.
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
                 loss=dict(type='PKDLoss', loss_weight=10.0))))

optim_wrapper = dict(optimizer=dict(lr=0.01))
