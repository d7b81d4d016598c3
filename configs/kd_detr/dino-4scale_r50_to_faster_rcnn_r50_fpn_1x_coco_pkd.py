# A DETR teacher for a CNN student (heterogeneous, ours): DINO-4scale R50
# (12 epochs, 49.0 mAP) -> Faster R-CNN R50-FPN, COCO 2017, 1x. The two
# detectors share no head or query, so the term is on features only: PKD
# (Cao et al., NeurIPS 2022, made for heterogeneous pairs; weight 6 as
# configs/pkd) between the FPN's P3-P6 (student levels 1-4, strides 8-64)
# and DINO's ChannelMapper outputs (levels 0-3, the same strides), both
# 256 wide. Data and schedule: mmdet's Faster R-CNN 1x.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v3.0/dino/dino-4scale_r50_8xb2-12e_coco/dino-4scale_r50_8xb2-12e_coco_20221202_182705-55b2bba2.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    teacher='mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck',
                 levels=dict(student=[1, 2, 3, 4], teacher=[0, 1, 2, 3]),
                 loss=dict(type='PKDLoss', loss_weight=6.0))))
