# CrossKD (Wang et al., CVPR 2024): RetinaNet R101-FPN 2x (38.9) ->
# RetinaNet R50-FPN 2x on COCO 2017, settings of the official
# jbwang1997/CrossKD config crosskd_r50_retinanet_r101_fpn_2x_coco.py: the
# student head's features after its 3rd conv cross into the teacher's head;
# KD quality focal loss (beta 1, weight 1) on the crossed class scores, GIoU
# (weight 1) between the boxes the crossed and the teacher's deltas decode
# to on the student's anchors; lr 0.01. See configs/crosskd/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        crosskd=dict(
            mode='cross_head',  # per FPN level: cls_l<i>, reg_l<i>
            student='bbox_head',
            teacher='bbox_head',
            reused_teacher_head_idx=3,
            loss_cls=dict(type='KDQualityFocalLoss', beta=1.0,
                          loss_weight=1.0),
            loss_reg=dict(type='mmdet.GIoULoss', loss_weight=1.0))))

optim_wrapper = dict(optimizer=dict(lr=0.01))
