# FGFI (Wang et al., CVPR 2019): Faster R-CNN R101-FPN 2x (39.8) -> R50-FPN 2x
# on COCO 2017. Imitation mask from the student's RPN anchors on all five FPN
# levels (scales [8], ratios 0.5/1/2, strides 4-64: stride=None infers each
# level's stride, base size = stride), psi (thr_factor) 0.5, loss weight 0.01
# (official --ilw), 3x3 adapter without ReLU (FPN features are signed).
# See configs/fgfi/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        fpn=dict(
            student='neck',  # 5 levels, one FGFILoss (and adapter) each
            teacher='neck',
            loss=dict(type='FGFILoss', thr_factor=0.5, stride=None,
                      scales=[8], ratios=[0.5, 1.0, 2.0],
                      adapter_relu=False, loss_weight=0.01))))
