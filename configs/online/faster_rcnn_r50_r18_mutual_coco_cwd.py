# Online (mutual) distillation for detection (Zhang et al., "Deep Mutual
# Learning", CVPR 2018), ours, not a paper setting: a Faster R-CNN R50-FPN
# and an R18-FPN train together from their ImageNet backbones on COCO 2017,
# 1x. Each learns from the labels and from the other's FPN features
# (P2-P5): CWD (tau 1, weight 5 per level, configs/cwd's detection setting)
# both ways; fpn teaches the student, fpn_back
# (direction='student_to_teacher') teaches the teacher. Both FPNs are 256
# wide (a ConvConnector on the learner's side where they are not). Both
# models are in the optimizer and the checkpoint (the teacher under
# online_teachers.teacher.*, its losses logged as teacher.*). Export either:
# tools/export_student.py CKPT OUT [--model teacher].
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

cwd = dict(type='ChannelWiseDivergence', tau=1.0, loss_weight=5.0)
model = dict(
    type='visionkd.DetectionDistiller',
    student=dict(
        config='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
        backbone=dict(
            depth=18,
            init_cfg=dict(type='Pretrained',
                          checkpoint='torchvision://resnet18')),
        neck=dict(in_channels=[64, 128, 256, 512])),
    teacher='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    teacher_trainable=True,
    teacher_ckpt=None,  # both from their ImageNet backbones
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                 loss=cwd),
        fpn_back=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                      direction='student_to_teacher', loss=cwd)))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
