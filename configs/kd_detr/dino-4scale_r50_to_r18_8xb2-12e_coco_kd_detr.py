# KD-DETR (Wang et al., CVPR 2024, arXiv 2211.08071): DINO-4scale R50 (12
# epochs, 49.0 mAP, mmdet) -> DINO-4scale R18 on COCO 2017, 12 epochs.
# Consistent distillation points, fed to both decoders in separate calls:
# the teacher's own 900 queries (its content queries at its top-900 encoder
# boxes) and 300 random boxes (sigmoid(N(0, 1)), new every step, zero
# content). Every student decoder layer imitates the teacher's last layer:
# class logits by a softmax KL (T 10) weighted by the teacher's max sigmoid
# score, boxes by L1 (5) + GIoU (2); DINO's denoising queries train on
# labels only. Defaults of the authors' released code (DAB-DETR; their
# DINO code is not released): see README.md. Data, schedule (AdamW 1e-4,
# backbone x0.1) and hooks: mmdet's DINO config.
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
    distill_terms=dict(
        query=dict(mode='detr_query', student='decoder', teacher='decoder',
                   num_random=300)))
