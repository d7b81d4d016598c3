# DETRDistill (Chang et al., ICCV 2023, arXiv 2211.10156) on DINO-4scale:
# R50 (12 epochs, 49.0 mAP, mmdet) -> R18 on COCO 2017, 12 epochs. The
# released Deformable DETR defaults (the paper reports DINO too, its code
# is not released): Hungarian-matched logit/box KD layer by layer on the
# 900 matching queries (DINO's denoising queries train on labels only)
# and query-prior feature KD on the four ChannelMapper levels (the R18
# student's neck maps 128/256/512 channels to the teacher's 256).
# Models, teacher checkpoint, data, schedule and hooks: the KD-DETR config
# of the same pair.
_base_ = ['../kd_detr/dino-4scale_r50_to_r18_8xb2-12e_coco_kd_detr.py']

model = dict(
    distill_terms=dict(_delete_=True, detr=dict(mode='detr_distill')))
