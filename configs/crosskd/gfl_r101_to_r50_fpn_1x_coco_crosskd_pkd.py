# CrossKD + PKD (Wang et al., CVPR 2024): GFL R101-FPN ms-2x (44.9) -> GFL
# R50-FPN 1x on COCO 2017, settings of the official jbwang1997/CrossKD config
# crosskd+pkd_r50_gflv1_r101-2x-ms_fpn_1x_coco.py: the CrossKD term of
# gfl_r101_to_r50_fpn_1x_coco_crosskd.py plus PKD (Cao et al., NeurIPS 2022)
# on all five FPN outputs, loss weight 6 per level, as a second term.
# See configs/crosskd/README.md.
_base_ = ['./gfl_r101_to_r50_fpn_1x_coco_crosskd.py']

model = dict(
    distill_terms=dict(
        pkd=dict(student='neck', teacher='neck', levels=[0, 1, 2, 3, 4],
                 loss=dict(type='PKDLoss', loss_weight=6.0))))
