# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> DeepLabV3+ MobileNetV2-D8 (75.2
# mIoU) on Cityscapes; student, data (512x1024 crops), 80k schedule and
# optimizer: mmseg's mobilenet-v2-d8_deeplabv3plus_4xb2-80k_cityscapes-
# 512x1024. Ours, not a paper setting (see README.md). CWD (Shu et al., ICCV
# 2021) on the decode-head logits (decode_head.conv_seg) with the official
# logits-only setting tau=4, loss weight 3 (irfanICMLL/TorchDistiller
# SemSeg-distill, exp_cwd.sh). The student's logits are at stride 4 (the
# DeepLabV3+ decoder), the teacher's at 8: the distiller infers a
# ResizeConnector (bilinear, antialiased) that shrinks the student logits
# to the teacher's size. The auxiliary FCN head trains on labels only.
_base_ = [
    'mmseg::mobilenet_v2/'
    'mobilenet-v2-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/distill/deeplabv3_r101_logits_cwd.py'
]

model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student=('mmseg::mobilenet_v2/'
             'mobilenet-v2-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024.py'),
    teacher=_base_.deeplabv3_r101_teacher,
    teacher_ckpt=_base_.deeplabv3_r101_teacher_ckpt,
    distill_terms=_base_.logits_cwd_terms)
