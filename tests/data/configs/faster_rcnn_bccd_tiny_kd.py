# Tiny distillation on the embedded BCCD subset: PKD + CWD on the FPN.
_base_ = ['./faster_rcnn_bccd_tiny.py']
model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student='{{fileDirname}}/faster_rcnn_bccd_tiny.py',
    teacher='{{fileDirname}}/../../../configs/demo/'
    'faster_rcnn_r18x2_bccd_teacher.py',
    teacher_ckpt=None,
    distill_terms=dict(
        pkd=dict(student='neck', teacher='neck',
                 connector=dict(type='ConvConnector'),
                 loss=dict(type='PKDLoss', loss_weight=6.0)),
        cwd=dict(student='neck', teacher='neck',
                 connector=dict(type='ConvConnector'),
                 loss=dict(type='ChannelWiseDivergence', tau=2.0),
                 level_weights=[1, 1, 1, 1, 0])))
