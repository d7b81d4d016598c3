# LD (Zheng et al., CVPR 2022): GFL R101-FPN ms-2x (44.7) -> GFL R18-FPN 1x
# on COCO 2017, the distillation losses of the official HikariTJU/LD config
# ld_r18_gflv1_r101_fpn_coco_1x.py. That config sets only loss_ld; its LDHead
# adds, with its default arguments, LD on the valuable localization region
# (loss_ld_vlr) and class KD on the positives (loss_kd), so all three are here:
# * loss: LD on the student's positive locations (main region), T=10, 0.25;
# * loss_vlr: LD on the VLR, weighted by the VLR IoU, T=10, 0.25;
# * loss_cls: KD on the class logits at the positive locations, T=2, 10.
# Data and schedule are mmdet's (as mmdet's ld_r18-gflv1-r101_fpn_1x_coco).
# See configs/ld/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student=dict(
        config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        backbone=dict(
            depth=18,
            init_cfg=dict(type='Pretrained',
                          checkpoint='torchvision://resnet18')),
        neck=dict(in_channels=[64, 128, 256, 512])),
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        ld=dict(
            mode='ld',  # per FPN level
            student='bbox_head',
            teacher='bbox_head',
            loss=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                      loss_weight=0.25, T=10),
            loss_vlr=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                          loss_weight=0.25, T=10),
            loss_cls=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                          loss_weight=10, T=2))))
