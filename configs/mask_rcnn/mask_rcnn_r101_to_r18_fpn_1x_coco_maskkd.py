# Mask R-CNN R101-FPN 2x (40.8 box / 36.6 mask mAP) -> Mask R-CNN R18-FPN,
# 1x schedule, on COCO 2017 instance segmentation: PKD on all five FPN levels
# with weight 6 (as configs/pkd/faster_rcnn_r101_to_r18_pkd.py) plus the
# mask term (mode='mask', teacher mask head on the student's positive RoIs).
# See configs/mask_rcnn/README.md.
# Train:  python tools/train.py configs/mask_rcnn/<this file>
# Test:   python tools/test.py configs/mask_rcnn/<this file> CKPT (bbox+segm)
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r101_fpn_2x_coco/mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student=dict(
        config='mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
        backbone=dict(
            depth=18,
            init_cfg=dict(type='Pretrained',
                          checkpoint='torchvision://resnet18')),
        neck=dict(in_channels=[64, 128, 256, 512])),
    teacher='mmdet::mask_rcnn/mask-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck',
                 loss=dict(type='PKDLoss', loss_weight=6.0)),
        mask=dict(mode='mask', student='roi_head', teacher='roi_head',
                  T=1.0, weight=1.0)))
