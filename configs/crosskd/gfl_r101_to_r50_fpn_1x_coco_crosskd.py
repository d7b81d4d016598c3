# CrossKD (Wang et al., CVPR 2024): GFL R101-FPN ms-2x (44.9) -> GFL R50-FPN
# 1x on COCO 2017, settings of the official jbwang1997/CrossKD config
# crosskd_r50_gflv1_r101-2x-ms_fpn_1x_coco.py: the student head's features
# after its 3rd conv (reused_teacher_head_idx=3) cross into the teacher's
# head; KD quality focal loss (beta 1, weight 1) on the crossed class scores,
# bin-summed KL (T=1, weight 4) on the crossed box distributions; lr 0.01.
# See configs/crosskd/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
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
