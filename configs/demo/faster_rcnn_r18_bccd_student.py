# Baseline student of the README demo: Faster R-CNN with a quarter-width
# ResNet-18-FPN (base 16 channels), from scratch on the embedded BCCD subset.
# Fewer proposals/RoIs and a fixed RoIAlign sampling ratio keep the CPU
# RoIAlign (otherwise most of a step's time) cheap.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/datasets/bccd_mini.py',
    '../_base_/schedules/demo_iter.py',
]
width = 16
fpn = 32
model = dict(
    backbone=dict(
        depth=18, base_channels=width, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[width * 2**i for i in range(4)],
              out_channels=fpn),
    rpn_head=dict(in_channels=fpn, feat_channels=fpn),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(sampling_ratio=2), out_channels=fpn),
        bbox_head=dict(in_channels=fpn, fc_out_channels=128, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=300)))
