# PSPNet R101-D8 (80k, 79.76 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule. DIST (Huang et al., NeurIPS 2022), settings of the official
# hunto/DIST_KD segmentation/train_kd.py: DIST(beta=1, gamma=1), no
# temperature, on the decode-head logits with lambda_kd = 1 and on the
# auxiliary (FCN) head logits with 0.4 * lambda_kd.
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
            loss=dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0,
                      loss_weight=1.0)),
        aux_logits=dict(
            student='auxiliary_head.conv_seg',
            teacher='auxiliary_head.conv_seg',
            loss=dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0,
                      loss_weight=0.4))))
