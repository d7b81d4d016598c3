# CrossKD (Wang et al., CVPR 2024): FCOS R101-caffe-FPN GN-head ms-2x (40.8)
# -> FCOS R50-caffe-FPN GN-head ms-2x on COCO 2017, settings of the official
# jbwang1997/CrossKD config
# crosskd_r50_fcos_r101-2x-ms_caffe_fpn_gn-head_2x_ms_coco.py: the student
# head's features after its 2nd conv cross into the teacher's head; KD
# quality focal loss (beta 1, weight 0.4) on the crossed class scores at
# every location, IoU loss (weight 0.75) between the boxes the crossed and
# the teacher's distances decode to, weighted by sigmoid(max teacher
# logit), both divided by the sum of the student's centerness targets;
# multi-scale (640-800) training, 2x, 16 images, lr 0.01 (FCOS's bias lr x2,
# no bias decay, grad clip 35, constant warm-up 1/3).
# See configs/crosskd/README.md.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/fcos/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth'  # noqa: E501

model = dict(
    type='visionkd.DetectionDistiller',
    student='mmdet::fcos/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
    teacher='mmdet::fcos/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        crosskd=dict(
            mode='cross_head',  # per FPN level: cls_l<i>, reg_l<i>
            student='bbox_head',
            teacher='bbox_head',
            reused_teacher_head_idx=2,
            loss_cls=dict(type='KDQualityFocalLoss', beta=1.0,
                          loss_weight=0.4),
            loss_reg=dict(type='mmdet.IoULoss', loss_weight=0.75))))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, 640), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(lr=0.01),
    paramwise_cfg=dict(bias_lr_mult=2., bias_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='ConstantLR', factor=1.0 / 3, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True,
         milestones=[16, 22], gamma=0.1),
]
