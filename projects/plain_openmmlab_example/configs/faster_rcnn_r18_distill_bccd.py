# A plain MMDetection config that distils with visionkd: only mmdet:: bases;
# the visionkd parts are `custom_imports` and the model wrapper. The teacher
# is your own trained mmdet detector (here a 2x-wide R18 Faster R-CNN trained
# with plain mmdet on the same data), the student a narrower one; FGD on all
# FPN levels. BCCD (COCO json) under data/bccd: annotations/{train,val}.json,
# images/. Train from the project root:  python tools/train.py <this config>
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['visionkd'], allow_failed_imports=False)
data_root = 'data/bccd/'
classes = ('RBC', 'WBC', 'Platelets')


def faster_rcnn_r18(width, fpn):
    """mmdet's Faster R-CNN with a ResNet-18 of `width` base channels."""
    return dict(
        config='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
        backbone=dict(depth=18, base_channels=width, init_cfg=None),
        neck=dict(in_channels=[width * 2**i for i in range(4)],
                  out_channels=fpn),
        rpn_head=dict(in_channels=fpn, feat_channels=fpn),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=fpn),
            bbox_head=dict(in_channels=fpn, num_classes=len(classes))))


model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student=faster_rcnn_r18(16, 32),
    teacher=faster_rcnn_r18(32, 64),
    teacher_ckpt='work_dirs/bccd_teacher/epoch_12.pth',
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck',
                 loss=dict(type='FGDLoss', alpha_fgd=0.00005,
                           beta_fgd=0.000025, gamma_fgd=0.00005,
                           lambda_fgd=0.0000005))))
bccd = dict(data_root=data_root, metainfo=dict(classes=classes),
               data_prefix=dict(img='images/'))
train_dataloader = dict(
    batch_size=4,
    dataset=dict(ann_file='annotations/train.json', **bccd))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/val.json', **bccd))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=0.01),
                     clip_grad=dict(max_norm=35, norm_type=2))
