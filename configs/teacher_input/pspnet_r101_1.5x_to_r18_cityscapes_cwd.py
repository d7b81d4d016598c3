# A teacher at its own input scale (ours, not a paper setting): the PSPNet
# R101-D8 teacher (79.76 mIoU at full resolution) sees each 512x1024 crop
# upsampled 1.5x (768x1536, nearer to the 1024x2048 images it was trained
# on) while the PSPNet R18-D8 student trains on the crop itself. CWD (tau 4,
# weight 3, configs/cwd) on the decode-head logits: the teacher's 96x192
# logits are resized (bilinear, antialiased) to the student's 64x128 by an
# inferred teacher-side ResizeConnector. Costs: docs/benchmarks.md.
_base_ = ['../cwd/pspnet_r101_to_r18_cityscapes_cwd.py']

model = dict(teacher_input=dict(scale_factor=1.5))
