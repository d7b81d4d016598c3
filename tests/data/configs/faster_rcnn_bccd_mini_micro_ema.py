# The micro distillation from an EMA teacher of the student itself (decay
# 0.5, so that a few iterations move it): no teacher checkpoint; the EMA
# weights and update count are in the checkpoints (ema_teachers.*).
_base_ = ['./faster_rcnn_bccd_mini_micro_kd.py']
model = dict(teacher=dict(_delete_=True, kind='ema', decay=0.5))
