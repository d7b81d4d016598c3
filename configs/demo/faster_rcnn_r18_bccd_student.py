# Baseline student of the README demo: Faster R-CNN with a half-width
# ResNet-18-FPN, trained from scratch on the embedded BCCD subset (CPU).
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/datasets/bccd_mini.py',
    '../_base_/schedules/demo_iter.py',
]
fpn = 64
model = dict(
    backbone=dict(
        depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=fpn),
    rpn_head=dict(in_channels=fpn, feat_channels=fpn),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn),
        bbox_head=dict(in_channels=fpn, fc_out_channels=256, num_classes=3)))
