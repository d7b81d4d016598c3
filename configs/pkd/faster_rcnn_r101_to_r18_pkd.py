# Faster R-CNN R101-FPN (2x, 39.8 mAP) -> Faster R-CNN R18-FPN on COCO 2017,
# 1x schedule, PKD on all five FPN levels (Cao et al., NeurIPS 2022).
# (The PKD version of configs/kd/faster_rcnn_r101_to_r18.py, now FGD.)
# Train:  python tools/train.py configs/pkd/faster_rcnn_r101_to_r18_pkd.py
# Test:   python tools/test.py configs/pkd/faster_rcnn_r101_to_r18_pkd.py CKPT
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student=dict(
        config='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
        backbone=dict(
            depth=18,
            init_cfg=dict(type='Pretrained',
                          checkpoint='torchvision://resnet18')),
        neck=dict(in_channels=[64, 128, 256, 512])),
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(
            student='neck',
            teacher='neck',
            loss=dict(type='PKDLoss', loss_weight=6.0))))
