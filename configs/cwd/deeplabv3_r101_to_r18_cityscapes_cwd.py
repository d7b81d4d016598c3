# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> DeepLabV3 R18-D8 on Cityscapes
# 512x1024, 80k schedule. CWD (Shu et al., ICCV 2021) on the decode-head
# logits with the official logits-only setting tau=4, loss weight 3
# (irfanICMLL/TorchDistiller SemSeg-distill, exp_cwd.sh).
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/deeplabv3_r101-d8_512x1024_80k_cityscapes/deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth'  # noqa: E501

model = dict(
    type='visionkd.SegmentationDistiller',
    student=('mmseg::deeplabv3/'
             'deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    teacher=('mmseg::deeplabv3/'
             'deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py'),
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=4.0,
                      loss_weight=3.0))))
