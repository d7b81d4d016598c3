# CrossKD (Wang et al., CVPR 2024): GFL R50-FPN 1x (40.2) -> GFL R18-FPN 1x
# on COCO 2017, settings of the official jbwang1997/CrossKD config
# crosskd_r18_gflv1_r50_fpn_1x_coco.py: the CrossKD term of the R101 -> R50
# config (reused_teacher_head_idx=3, KD QFL weight 1, bin-summed KL T=1
# weight 4) with an R18 student and mmdet's GFL R50 1x teacher; lr 0.01.
# See configs/crosskd/README.md.
_base_ = ['./gfl_r101_to_r50_fpn_1x_coco_crosskd.py']

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r50_fpn_1x_coco/gfl_r50_fpn_1x_coco_20200629_121244-25944287.pth'  # noqa: E501

model = dict(
    student=dict(
        _delete_=True,
        config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        backbone=dict(
            depth=18,
            init_cfg=dict(type='Pretrained',
                          checkpoint='torchvision://resnet18')),
        neck=dict(in_channels=[64, 128, 256, 512])),
    teacher='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
    teacher_ckpt=teacher_ckpt)
