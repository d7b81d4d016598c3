# Mask R-CNN R101-FPN 2x (40.8 box / 36.6 mask mAP) -> Mask R-CNN R50-FPN 2x
# on COCO 2017 instance segmentation. Two terms:
# * fpn: PKD on FPN outputs P2-P5 (Cao et al., NeurIPS 2022), weight 6 of
#   the official MMRazor Faster R-CNN R101 -> R50 2x config;
# * mask: the teacher's mask head on the student's positive RoIs, per-pixel
#   sigmoid KD on the ground-truth class channel (mode='mask').
# The mask term's T and weight are ours; see configs/mask_rcnn/README.md.
# Train:  python tools/train.py configs/mask_rcnn/<this file>
# Test:   python tools/test.py configs/mask_rcnn/<this file> CKPT (bbox+segm)
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r101_fpn_2x_coco/mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py',
    teacher='mmdet::mask_rcnn/mask-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                 loss=dict(type='PKDLoss', loss_weight=6.0)),
        mask=dict(
            mode='mask',  # teacher mask head on the student's positive RoIs
            student='roi_head',
            teacher='roi_head',
            T=1.0,
            weight=1.0)))
