# CrossKD (Wang et al., CVPR 2024): ATSS R101-FPN 1x (41.5) -> ATSS R50-FPN
# 1x on COCO 2017, settings of the official jbwang1997/CrossKD config
# crosskd_r50_atss_r101_fpn_1x_coco.py: the student head's features after
# its 3rd conv cross into the teacher's head; KD quality focal loss (beta 1,
# weight 1) on the crossed class scores, GIoU (weight 1) between the decoded
# crossed and teacher boxes, sigmoid BCE (weight 1) towards the teacher's
# centerness at the student's positives; 16 images, lr 0.01.
# See configs/crosskd/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/atss/atss_r101_fpn_1x_coco/atss_r101_fpn_1x_20200825-dfcadd6f.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::atss/atss_r50_fpn_1x_coco.py',
    teacher='mmdet::atss/atss_r101_fpn_1x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        crosskd=dict(
            mode='cross_head',  # per level: cls_l<i>, reg_l<i>, center_l<i>
            student='bbox_head',
            teacher='bbox_head',
            reused_teacher_head_idx=3,
            loss_cls=dict(type='KDQualityFocalLoss', beta=1.0,
                          loss_weight=1.0),
            loss_reg=dict(type='mmdet.GIoULoss', loss_weight=1.0),
            loss_center=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True,
                             loss_weight=1.0))))

optim_wrapper = dict(optimizer=dict(lr=0.01))
