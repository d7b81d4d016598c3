# PSPNet R101-D8 (80k, 79.76 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule. IFVD (Wang et al., ECCV 2020), settings of the official
# YukangWang/IFVD (options.py, networks/kd_model.py):
# * IFV loss on the feature after the PSP module (preds[2],
#   x_feat_after_psp = mmseg's decode_head.bottleneck), lambda_ifv = 200;
# * pixel-wise KD on the logits, lambda_kd = 10 with nn.KLDivLoss() (mean
#   over N*C*H*W), i.e. 10 / 19 on PixelWiseKDLoss (mean over N*H*W).
# The adversarial term of the paper (lambda_adv = 0.001) is not included.
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
        ifv=dict(
            student='decode_head.bottleneck',  # 128 channels
            teacher='decode_head.bottleneck',  # 512 channels
            loss=dict(type='IFVDLoss', num_classes=19, loss_weight=200.0)),
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='PixelWiseKDLoss', tau=1.0,
                      loss_weight=10.0 / 19))))
