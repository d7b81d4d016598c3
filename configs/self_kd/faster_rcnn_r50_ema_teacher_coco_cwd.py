# Self-distillation from an EMA teacher (mean teacher, Tarvainen & Valpola,
# NeurIPS 2017) for detection, ours, not a paper setting: the Faster R-CNN
# R50-FPN student on COCO 2017 learns from the FPN features (P2-P5) of an
# exponential moving average of its own weights (decay 0.999; no teacher
# checkpoint; the EMA weights are in the checkpoint as ema_teachers.*).
# CWD (tau 1, weight 5 per level) as the authors' detection setting
# (configs/cwd); no connector: the EMA has the student's widths.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    teacher=dict(kind='ema', decay=0.999),
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3],
                 loss=dict(type='ChannelWiseDivergence', tau=1.0,
                           loss_weight=5.0))))
