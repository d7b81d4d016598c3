# PKD student of the README demo's models: the baseline student's data and
# schedule, the 2x-wide R18 teacher, PKD on all FPN levels through a 1x1
# connector (the tests' and the analysis tools' example). `make demo`
# itself distils with the method ranked first in docs/results/ranking.json
# and writes that config to work_dirs/demo/configs/.
_base_ = ['./faster_rcnn_r18_bccd_student.py']
model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student='{{fileDirname}}/faster_rcnn_r18_bccd_student.py',
    teacher='{{fileDirname}}/faster_rcnn_r18x2_bccd_teacher.py',
    teacher_ckpt=None,  # the demo passes work_dirs/demo/teacher/...pth
    distill_terms=dict(
        fpn=dict(
            student='neck',
            teacher='neck',
            connector=dict(type='ConvConnector'),
            loss=dict(type='PKDLoss', loss_weight=6.0))))
