# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> STDC1 (ImageNet-pretrained, 74.94
# mIoU) on Cityscapes; student, data, 80k schedule and optimizer: mmseg's
# stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024 (512x1024 crops). Ours, not a
# paper setting (see README.md). CWD (Shu et al., ICCV 2021) on the
# decode-head logits only (decode_head.conv_seg, stride 8 on both), with the
# official logits-only setting tau=4, loss weight 3 (irfanICMLL/
# TorchDistiller SemSeg-distill, exp_cwd.sh). STDC's auxiliary heads (two
# FCN heads and the 2-class boundary STDCHead) train on labels only.
_base_ = ['mmseg::stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py']

teacher_ckpt = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/deeplabv3_r101-d8_512x1024_80k_cityscapes/deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student='mmseg::stdc/stdc1_in1k-pre_4xb12-80k_cityscapes-512x1024.py',
    teacher=('mmseg::deeplabv3/'
             'deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py'),
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=4.0,
                      loss_weight=3.0))))
