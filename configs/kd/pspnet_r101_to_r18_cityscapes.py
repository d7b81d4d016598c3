# PSPNet R101-D8 (80k, 79.8 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule, channel-wise distillation (CWD, Shu et al., ICCV 2021) on the
# decode-head logits with the official logits-only setting tau=4, loss
# weight 3 (as configs/cwd/pspnet_r101_to_r18_cityscapes_cwd.py).
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'  # noqa: E501

model = dict(
    type='visionkd.SegmentationDistiller',
    student='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=4.0,
                      loss_weight=3.0))))
