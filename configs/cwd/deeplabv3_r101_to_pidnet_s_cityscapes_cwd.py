# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> PIDNet-S (ImageNet-pretrained,
# 78.74 mIoU) on Cityscapes; student, data (1024x1024 crops with the edge
# maps PIDNet's boundary loss needs), 120k schedule and optimizer: mmseg's
# pidnet-s_2xb6-120k_1024x1024-cityscapes. Ours, not a paper setting (see
# README.md). CWD (Shu et al., ICCV 2021) on the logits PIDNet predicts
# with, the I-branch head's decode_head.conv_seg (stride 8 on both), with
# the official logits-only setting tau=4, loss weight 3 (irfanICMLL/
# TorchDistiller SemSeg-distill, exp_cwd.sh). The P- and D-branch heads
# (decode_head.p_cls_seg, d_cls_seg) run only in training and train on
# labels only.
_base_ = [
    'mmseg::pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py',
    '../_base_/distill/deeplabv3_r101_logits_cwd.py'
]

model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student='mmseg::pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py',
    teacher=_base_.deeplabv3_r101_teacher,
    teacher_ckpt=_base_.deeplabv3_r101_teacher_ckpt,
    distill_terms=_base_.logits_cwd_terms)
