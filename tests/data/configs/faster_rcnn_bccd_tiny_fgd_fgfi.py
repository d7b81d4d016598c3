# Tiny FGD + FGFI distillation on the embedded BCCD subset (GT-driven detection
# terms) for the visualisation and logging tests.
_base_ = ['./faster_rcnn_bccd_tiny.py']
model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student='{{fileDirname}}/faster_rcnn_bccd_tiny.py',
    teacher='{{fileDirname}}/../../../configs/demo/'
    'faster_rcnn_r18x2_bccd_teacher.py',
    teacher_ckpt=None,
    distill_terms=dict(
        fgd=dict(student='neck', teacher='neck', levels=[0, 1],
                 loss=dict(type='FGDLoss')),
        fgfi=dict(student='neck', teacher='neck', levels=[0, 1],
                  loss=dict(type='FGFILoss', stride=None, scales=[8],
                            adapter_relu=False))))
