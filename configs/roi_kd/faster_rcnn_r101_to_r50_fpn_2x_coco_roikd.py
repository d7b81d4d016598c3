# RoI-level KD (Chen et al., NeurIPS 2017; decoupled fg/bg proposals as in
# DeFeat, Guo et al., CVPR 2021): Faster R-CNN R101-FPN 2x (39.8) -> R50-FPN
# 2x on COCO 2017. The teacher's RoI head scores the student's sampled
# proposals (shared proposals); KL on the class logits with temperature tau
# (tau^2 scaling), foreground and background proposals averaged separately,
# L1 imitation of the teacher's box deltas on foreground proposals.
# Weights are ours (no official Faster R-CNN FPN config exists for either
# paper); see configs/roi_kd/README.md.
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
        roi=dict(
            mode='roi',  # teacher RoI head on the student's sampled RoIs
            student='roi_head',
            teacher='roi_head',
            loss=dict(type='RoIKDLoss', tau=2.0, loss_weight_fg=1.0,
                      loss_weight_bg=1.0, loss_weight_bbox=1.0))))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
