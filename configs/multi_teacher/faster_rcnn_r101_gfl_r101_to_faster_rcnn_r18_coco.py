# Two teachers -> one student (ours, not a paper setting): a Faster R-CNN
# R101-FPN 2x (39.8 mAP) and a GFL R101-FPN ms-2x (44.7) distil one Faster
# R-CNN R18-FPN on COCO 2017, 1x. RoI-level KD (configs/roi_kd) from the
# two-stage teacher, whose RoI head scores the student's proposals; FGD
# (configs/kd, the official two-stage weights) on the FPN from the GFL
# teacher, whose FPN is P3-P7 where the student's is P2-P6: the four levels
# of equal stride (P3-P6) are paired with levels=dict(student=..., teacher=).
# Each teacher runs only up to what its term records (frcnn: its RoI head on
# the student's RoIs; gfl: backbone + neck), both frozen and outside the
# checkpoint. See docs/frameworks.md.
_base_ = ['../kd/faster_rcnn_r101_to_r18.py']

gfl_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student=_base_.model.student,
    teachers=dict(
        frcnn=dict(model=_base_.model.teacher,
                   ckpt=_base_.teacher_ckpt),
        gfl=dict(model='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
                 ckpt=gfl_ckpt)),
    distill_terms=dict(
        roi=dict(mode='roi', student='roi_head', teacher='roi_head',
                 from_teacher='frcnn',
                 loss=dict(type='RoIKDLoss', tau=2.0, loss_weight_fg=1.0,
                           loss_weight_bg=1.0, loss_weight_bbox=1.0)),
        fpn=dict(student='neck', teacher='neck', from_teacher='gfl',
                 levels=dict(student=[1, 2, 3, 4], teacher=[0, 1, 2, 3]),
                 loss=_base_.model.distill_terms.fpn.loss)))
