# Teacher of the README demo: Faster R-CNN ResNet-34-FPN (full width),
# trained from scratch on the embedded BCCD subset for twice as long.
_base_ = ['./faster_rcnn_r18_bccd_student.py']
fpn = 128
model = dict(
    backbone=dict(depth=34, base_channels=64),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=fpn),
    rpn_head=dict(in_channels=fpn, feat_channels=fpn),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn),
        bbox_head=dict(in_channels=fpn, fc_out_channels=512)))
max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters,
         eta_min_ratio=0.05)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
