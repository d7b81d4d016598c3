# Teacher of the README demo: the student's Faster R-CNN at twice the width
# (ResNet-18 base 32 channels, FPN 64), trained from scratch on the embedded
# BCCD subset for a longer schedule.
_base_ = ['./faster_rcnn_r18_bccd_student.py']
width = 32
fpn = 64
model = dict(
    backbone=dict(base_channels=width),
    neck=dict(in_channels=[width * 2**i for i in range(4)],
              out_channels=fpn),
    rpn_head=dict(in_channels=fpn, feat_channels=fpn),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn),
        bbox_head=dict(in_channels=fpn, fc_out_channels=256)))
max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters,
         eta_min_ratio=0.05)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
