# PSPNet R101-D8 (80k, 79.76 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule. CWD (Shu et al., ICCV 2021) on the decode-head logits with the
# official logits-only setting tau=4, loss weight 3 (irfanICMLL/TorchDistiller
# SemSeg-distill: `bash exp_cwd.sh channel kl 3 4 False False False`; the
# same tau/weight as the logits term of yzd-v/MGD's and winycg/CIRKD's CWD).
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
