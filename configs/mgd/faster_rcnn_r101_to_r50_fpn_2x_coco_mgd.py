# MGD (Yang et al., ECCV 2022): Faster R-CNN R101-FPN 2x (39.8) -> R50-FPN 2x
# on COCO 2017 with the official two-stage setting of yzd-v/MGD
# (det/configs/distillers/mgd/cascade_mask_rcnn_rx101_32x4d_distill_faster_
# rcnn_r50_fpn_2x_coco.py, whose teacher is a Cascade Mask R-CNN X101): MGD on
# P2-P5 (neck levels 0-3), alpha_mgd 5e-7, lambda_mgd 0.45, grad clip 35.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'  # noqa: E501

mgd = dict(type='MGDLoss', alpha_mgd=0.0000005, lambda_mgd=0.45)
model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                 loss=mgd)))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
