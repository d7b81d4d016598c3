# CrossKD (Wang et al., CVPR 2024): GFL R50-FPN 1x (40.2) -> GFL R18-FPN 1x
# on COCO 2017, settings of the official jbwang1997/CrossKD config
# crosskd_r18_gflv1_r50_fpn_1x_coco.py: the CrossKD term of the R101 -> R50
# config (reused_teacher_head_idx=3, KD QFL weight 1, bin-summed KL T=1
# weight 4) with an R18 student and mmdet's GFL R50 1x teacher; lr 0.01.
# See configs/crosskd/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r50_fpn_1x_coco/gfl_r50_fpn_1x_coco_20200629_121244-25944287.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student=dict(
        config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        backbone=dict(
            depth=18,
            init_cfg=dict(type='Pretrained',
                          checkpoint='torchvision://resnet18')),
        neck=dict(in_channels=[64, 128, 256, 512])),
    teacher='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        crosskd=dict(
            mode='cross_head',  # per FPN level: cls_l<i>, reg_l<i>
            student='bbox_head',
            teacher='bbox_head',
            reused_teacher_head_idx=3,
            loss_cls=dict(type='KDQualityFocalLoss', beta=1.0,
                          loss_weight=1.0),
            loss_reg=dict(type='KDKLDivLoss', T=1.0, class_reduction='sum',
                          loss_weight=4.0))))

optim_wrapper = dict(optimizer=dict(lr=0.01))
