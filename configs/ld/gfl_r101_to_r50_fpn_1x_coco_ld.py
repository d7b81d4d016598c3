# LD (Zheng et al., CVPR 2022): GFL R101-FPN ms-2x (44.7) -> GFL R50-FPN 1x
# on COCO 2017, the distillation losses of the official HikariTJU/LD config
# ld_r50_gflv1_r101_fpn_coco_1x.py: LD on the main region (T=10, 0.25), LD on
# the valuable localization region (T=10, 0.25), class KD on the positives
# (T=2, 10) -- the R18 config's terms with mmdet's GFL R50-FPN student. Left
# out: that config's feature imitation (loss_im, weight 2, 'finegrained').
# See configs/ld/README.md.
_base_ = ['./gfl_r101_to_r18_fpn_1x_coco_ld.py']

model = dict(type='visionkd.DetectionDistiller',
             student='mmdet::gfl/gfl_r50_fpn_1x_coco.py')
