# FGD (Yang et al., CVPR 2022): RetinaNet R101-FPN 2x (38.9) -> R50-FPN 2x on
# COCO 2017, as the official yzd-v/FGD config
# fgd_retina_r101_fpn_2x_distill_retina_r50_fpn_2x_coco.py: FGD on all five
# FPN levels P3-P7, temp 0.5, alpha 1e-3, beta 5e-4, gamma 5e-4 (not the
# loss default 1e-3), lambda 5e-6, lr 0.01, gradient clip 35.
# "Inheriting strategy" as the official init_student=True.
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
    init_student=True,  # neck + heads from the teacher (same shapes)
    distill_terms=dict(
        fpn=dict(
            student='neck',  # 5 levels, one FGDLoss (and GcBlocks) each
            teacher='neck',
            loss=dict(type='FGDLoss', temp=0.5, alpha_fgd=0.001,
                      beta_fgd=0.0005, gamma_fgd=0.0005,
                      lambda_fgd=0.000005))))

optim_wrapper = dict(
    optimizer=dict(lr=0.01), clip_grad=dict(max_norm=35, norm_type=2))
