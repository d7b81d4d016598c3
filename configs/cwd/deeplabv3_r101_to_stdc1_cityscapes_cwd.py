# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> STDC1 (ImageNet-pretrained, 74.94
# mIoU) on Cityscapes; student, data, 80k schedule and optimizer: mmseg's
# stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024 (512x1024 crops). Ours, not a
# paper setting (see README.md). CWD (Shu et al., ICCV 2021) on the
# decode-head logits only (decode_head.conv_seg, stride 8 on both), with the
# official logits-only setting tau=4, loss weight 3 (irfanICMLL/
# TorchDistiller SemSeg-distill, exp_cwd.sh). STDC's auxiliary heads (two
# FCN heads and the 2-class boundary STDCHead) train on labels only.
_base_ = [
    'mmseg::stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py',
    '../_base_/distill/deeplabv3_r101_logits_cwd.py'
]

model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student='mmseg::stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py',
    teacher=_base_.deeplabv3_r101_teacher,
    teacher_ckpt=_base_.deeplabv3_r101_teacher_ckpt,
    distill_terms=_base_.logits_cwd_terms)
