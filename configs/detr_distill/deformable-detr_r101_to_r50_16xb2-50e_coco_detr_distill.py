# DETRDistill (Chang et al., ICCV 2023, arXiv 2211.10156) on Deformable
# DETR: R101 -> R50 on COCO 2017, 50 epochs, the released pair (teacher
# 44.8, student 44.1 -> 46.6 AP with all of DETRDistill). Two losses, the
# released defaults: Hungarian-matched logit/box KD (every student decoder
# layer matched to the teacher's same layer, all 300 teacher queries; BCE,
# L1 5, GIoU 2) and target-aware query-prior feature KD on the four neck
# levels (the teacher's 100 best (query, class) pairs per layer, weighted
# by score x IoU with the ground truth). Not included: query-prior
# assignment and the contrastive query loss (see README.md).
# Models, teacher checkpoint (train the R101 teacher first: mmdet ships
# none), data and schedule: the KD-DETR config of the same pair.
_base_ = ['../kd_detr/deformable-detr_r101_to_r50_16xb2-50e_coco_kd_detr.py']

model = dict(
    distill_terms=dict(_delete_=True, detr=dict(mode='detr_distill')))
