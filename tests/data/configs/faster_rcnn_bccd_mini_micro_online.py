# The micro distillation with an online (trainable) teacher: it trains with
# its own task loss, and a second term distils student -> teacher (mutual
# learning); both models are in the optimizer and the checkpoints.
_base_ = ['./faster_rcnn_bccd_mini_micro_kd.py']
model = dict(
    teacher_trainable=True,
    distill_terms=dict(
        back=dict(student='neck.fpn_convs.2', teacher='neck.fpn_convs.2',
                  direction='student_to_teacher',
                  connector=dict(type='ConvConnector'),
                  loss=dict(type='FeatureMSELoss', loss_weight=0.5))))
