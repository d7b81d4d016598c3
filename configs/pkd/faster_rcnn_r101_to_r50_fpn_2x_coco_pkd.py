# PKD (Cao et al., NeurIPS 2022): Faster R-CNN R101-FPN 2x (39.8) -> R50-FPN
# 2x on COCO 2017, as the official implementation (MMRazor
# pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py): PKD on P2-P5 (FPN
# outputs 0-3; the max-pooled P6 is not distilled), loss weight 6 per level.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                 loss=dict(type='PKDLoss', loss_weight=6.0))))
