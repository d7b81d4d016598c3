# BCKD (Yang et al., ICCV 2023): GFL R101-FPN ms-2x (44.7) -> GFL R50-FPN 1x
# on COCO 2017, settings of the official TinyTigerPan/BCKD config
# bckd_r50_gflv1_r101_fpn_coco_1x.py: binary class KD (weight 1.0, beta 1.0)
# and IoU-based box KD (GIoU, weight 4.0) on all locations of every FPN level,
# SGD lr 0.01 (16 images per batch). See configs/bckd/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student=dict(config='mmdet::gfl/gfl_r50_fpn_1x_coco.py'),
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        bckd=dict(
            mode='bckd',  # all locations, per FPN level
            student='bbox_head',
            teacher='bbox_head',
            loss_cls=dict(type='BCKDClsLoss', beta=1.0, loss_weight=1.0),
            loss_reg=dict(type='BCKDRegLoss', loss_weight=4.0))))

optim_wrapper = dict(optimizer=dict(lr=0.01))
