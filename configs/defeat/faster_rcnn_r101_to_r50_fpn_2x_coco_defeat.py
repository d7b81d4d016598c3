# DeFeat (Guo et al., CVPR 2021): Faster R-CNN R101-FPN 2x (39.8) -> R50-FPN
# 2x on COCO 2017, neck part of the official ggjy/DeFeat.pytorch
# voc_stu_faster_rcnn_r50_decouple_neck.py: decoupled (GT box / background)
# imitation on all five FPN levels (strides 4-64, each GT box on its FPN
# level), object weight 3, background weight 12, 3x3 adapter, grad clip 35.
# The RoI-head part of DeFeat is not implemented. See configs/defeat/README.md.
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
        fpn=dict(
            student='neck',  # 5 levels, one DeFeatLoss (and adapter) each
            teacher='neck',
            loss=dict(type='DeFeatLoss', loss_weight_fg=3.0,
                      loss_weight_bg=12.0, strides=[4, 8, 16, 32, 64]))))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
