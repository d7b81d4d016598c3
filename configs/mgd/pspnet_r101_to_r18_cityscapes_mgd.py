# PSPNet R101-D8 (80k, 79.76 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule. MGD (Yang et al., ECCV 2022), settings of the official
# yzd-v/MGD seg/ (configs/distillers/mgd/psp_r101_distill_psp_r18_40k_512x512
# _city.py and its SegmentationDistiller):
# * MGD on the last backbone stage (extract_feat()[-1] = backbone.layer4,
#   student 512 -> teacher 2048 channels through MGD's own 1x1 align conv),
#   alpha_mgd = 2e-5, lambda_mgd = 0.75 (the segmentation mask ratio);
# * use_logit=True: channel-wise KD on the logits, tau = 4, weight 3.
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
        mgd=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            loss=dict(type='MGDLoss', alpha_mgd=0.00002, lambda_mgd=0.75)),
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='ChannelWiseDivergence', tau=4.0,
                      loss_weight=3.0))))
