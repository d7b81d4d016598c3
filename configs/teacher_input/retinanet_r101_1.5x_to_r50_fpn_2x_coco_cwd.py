# A detection teacher at its own input scale (ours, not a paper setting): the
# RetinaNet R101-FPN teacher of configs/cwd sees each image upsampled 1.5x
# while the R50-FPN student trains on the image as it is. CWD on P3-P6 (tau
# 1, weight 5 per level, the authors' detection setting): each teacher level
# (1.5x the student's size) is resized (bilinear, antialiased) to the
# student's by an inferred teacher-side ResizeConnector. Feature terms only:
# the head-level modes (roi, ld, bckd, crosskd) feed the student's boxes or
# features to the teacher's head and refuse a teacher at another scale.
# Costs: docs/benchmarks.md; BCCD evidence: docs/results/frameworks.
_base_ = ['../cwd/retinanet_r101_to_r50_fpn_2x_coco_cwd.py']

model = dict(teacher_input=dict(scale_factor=1.5))
