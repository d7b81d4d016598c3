# BCKD (Yang et al., ICCV 2023): GFL R101-FPN ms-2x (44.7) -> GFL
# MobileNetV2-FPN 1x on COCO 2017, settings of the official TinyTigerPan/BCKD
# config bckd_mobilenet_gflv1_r101_fpn_coco_1x.py: the R50 config's BCKD
# terms with an ImageNet MobileNetV2 backbone (stages 1, 2, 4, 6, LeakyReLU
# 0.1) and FPN inputs of 24/32/96/320 channels. See configs/bckd/README.md.
_base_ = ['./gfl_r101_to_r50_fpn_1x_coco_bckd.py']

model = dict(
    student=dict(
        backbone=dict(
            _delete_=True,
            type='MobileNetV2',
            out_indices=(1, 2, 4, 6),
            act_cfg=dict(type='LeakyReLU', negative_slope=0.1),
            init_cfg=dict(type='Pretrained',
                          checkpoint='open-mmlab://mmdet/mobilenet_v2')),
        neck=dict(in_channels=[24, 32, 96, 320])))
