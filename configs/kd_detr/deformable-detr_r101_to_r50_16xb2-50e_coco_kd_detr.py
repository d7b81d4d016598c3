# KD-DETR (Wang et al., CVPR 2024, arXiv 2211.08071) on Deformable DETR
# (single stage): R101 -> R50 on COCO 2017, 50 epochs (the DETRDistill
# pair, Chang et al., ICCV 2023). Distillation points: the teacher's 300
# learned queries (content + positional embedding, their 2-d reference
# points) and 300 random points (sigmoid(N(0, 1)), zero content and
# positional queries), each through both decoders; every student layer
# imitates the teacher's last layer (softmax KL T 10 weighted by the
# teacher's confidence; L1 5 + GIoU 2), the released code's defaults.
# mmdet ships no Deformable DETR R101: train the teacher first with this
# config's teacher (mmdet's R50 config at depth 101) and point teacher_ckpt
# at it, e.g. --cfg-options model.teacher_ckpt=PATH. Data and schedule:
# mmdet's Deformable DETR config.
_base_ = ['mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py']

model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student='mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
    teacher=dict(
        config='mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
        backbone=dict(depth=101, init_cfg=None)),
    teacher_ckpt='work_dirs/deformable-detr_r101_16xb2-50e_coco/epoch_50.pth',
    distill_terms=dict(
        query=dict(mode='detr_query', student='decoder', teacher='decoder',
                   num_random=300)))
