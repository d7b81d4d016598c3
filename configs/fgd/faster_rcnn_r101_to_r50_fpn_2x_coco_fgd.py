# FGD (Yang et al., CVPR 2022): Faster R-CNN R101-FPN 2x (39.8) -> R50-FPN 2x
# on COCO 2017, as the official yzd-v/FGD config
# fgd_faster_rcnn_r101_fpn_2x_distill_faster_rcnn_r50_fpn_2x_coco.py: FGD on
# P2-P5 (neck levels 0-3; the max-pooled P6 is not distilled), temp 0.5,
# alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7, gradient clip 35.
# "Inheriting strategy" as the official init_student=True: the student's
# neck and heads start from the teacher's. See configs/fgd/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'  # noqa: E501

fgd = dict(type='FGDLoss', temp=0.5, alpha_fgd=0.00005, beta_fgd=0.000025,
           gamma_fgd=0.00005, lambda_fgd=0.0000005)
model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    init_student=True,  # neck + heads from the teacher (same shapes)
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                 loss=fgd)))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
