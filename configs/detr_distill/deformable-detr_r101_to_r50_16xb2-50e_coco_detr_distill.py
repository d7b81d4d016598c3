# DETRDistill (Chang et al., ICCV 2023, arXiv 2211.10156) on Deformable
# DETR: R101 -> R50 on COCO 2017, 50 epochs, the released pair (teacher
# 44.8, student 44.1 -> 46.6 AP with all of DETRDistill). Two losses, the
# released defaults: Hungarian-matched logit/box KD (every student decoder
# layer matched to the teacher's same layer, all 300 teacher queries; BCE,
# L1 5, GIoU 2) and target-aware query-prior feature KD on the four neck
# levels (the teacher's 100 best (query, class) pairs per layer, weighted
# by score x IoU with the ground truth). Not included: query-prior
# assignment and the contrastive query loss (see configs/kd_detr/README.md).
# mmdet ships no Deformable DETR R101: train the teacher first with this
# config's teacher and point teacher_ckpt at it (--cfg-options
# model.teacher_ckpt=PATH). Data and schedule: mmdet's Deformable DETR.
_base_ = ['mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py']

model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student='mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
    teacher=dict(
        config='mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
        backbone=dict(depth=101, init_cfg=None)),
    teacher_ckpt='work_dirs/deformable-detr_r101_16xb2-50e_coco/epoch_50.pth',
    distill_terms=dict(detr=dict(mode='detr_distill')))
