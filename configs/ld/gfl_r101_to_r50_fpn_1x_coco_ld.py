# LD (Zheng et al., CVPR 2022): GFL R101-FPN ms-2x (44.7) -> GFL R50-FPN 1x
# on COCO 2017, settings of the official HikariTJU/LD config
# ld_r50_gflv1_r101_fpn_coco_1x.py (= mmdet's ld_r50-gflv1-r101_fpn_1x_coco):
# the R18 config's LD (T=10, weight 0.25) + class KD (T=10, weight 0.5) terms
# with mmdet's GFL R50-FPN student. See configs/ld/README.md.
_base_ = ['./gfl_r101_to_r18_fpn_1x_coco_ld.py']

model = dict(type='visionkd.DetectionDistiller',
             student='mmdet::gfl/gfl_r50_fpn_1x_coco.py')
