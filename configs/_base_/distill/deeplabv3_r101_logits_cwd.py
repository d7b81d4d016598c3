# The teacher and term of configs/cwd's real-time students: DeepLabV3
# R101-D8 (mmseg, 80k, 80.20 mIoU on Cityscapes) and CWD (Shu et al., ICCV
# 2021) on the decode-head logits only (decode_head.conv_seg), with the
# official logits-only setting tau=4, loss weight 3 (irfanICMLL/
# TorchDistiller SemSeg-distill, exp_cwd.sh). See configs/cwd/README.md.
deeplabv3_r101_teacher = (
    'mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py')
deeplabv3_r101_teacher_ckpt = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/deeplabv3_r101-d8_512x1024_80k_cityscapes/deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth'  # noqa: E501
logits_cwd_terms = dict(
    logits=dict(
        student='decode_head.conv_seg',
        teacher='decode_head.conv_seg',
        loss=dict(type='ChannelWiseDivergence', tau=4.0, loss_weight=3.0)))
