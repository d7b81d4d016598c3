# DETRDistill (Chang et al., ICCV 2023, arXiv 2211.10156) on DINO-4scale:
# R50 (12 epochs, 49.0 mAP, mmdet) -> R18 on COCO 2017, 12 epochs. The
# released Deformable DETR defaults (the paper reports DINO too, its code
# is not released): Hungarian-matched logit/box KD layer by layer on the
# 900 matching queries (DINO's denoising queries train on labels only)
# and query-prior feature KD on the four ChannelMapper levels. The R18
# student's neck maps its 128/256/512 channels to the same 256 as the
# teacher's. Data, schedule and hooks: mmdet's DINO config.
_base_ = ['mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py']

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v3.0/dino/dino-4scale_r50_8xb2-12e_coco/dino-4scale_r50_8xb2-12e_coco_20221202_182705-55b2bba2.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student=dict(
        config='mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
        backbone=dict(
            depth=18,
            init_cfg=dict(type='Pretrained',
                          checkpoint='torchvision://resnet18')),
        neck=dict(in_channels=[128, 256, 512])),
    teacher='mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(detr=dict(mode='detr_distill')))
