# PSPNet R101-D8 (80k, 79.76 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule. CIRKD (Yang et al., CVPR 2022), settings of the official
# winycg/CIRKD train_cirkd.py, on the embedding before the classifier
# (mmseg's decode_head.bottleneck; CIRKD's s_outputs[-1]):
# * pixel-wise KD on the logits: lambda_kd = 1, kd_temperature = 1;
# * mini-batch pixel-to-pixel: contrast_temperature = 0.1, weight 1.0, per
#   GPU batch (the released code does not gather across GPUs);
# * memory pixel-to-pixel and pixel-to-region: memory sizes 20000 / 2000,
#   contrast sizes 4096 / 1024, temperatures 0.1 / 1.0, weights 0.1 / 0.1,
#   with the official projection head (1x1 conv-SyncBN-ReLU-1x1 conv,
#   student 128 -> teacher 512 channels) as connector.
# Note: the two memory queues are buffers (19 x 22000 x 512 floats, about
# 0.86 GB) and are saved in every checkpoint.
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
            loss=dict(type='PixelWiseKDLoss', tau=1.0, loss_weight=1.0)),
        minibatch=dict(
            student='decode_head.bottleneck',
            teacher='decode_head.bottleneck',
            loss=dict(type='CIRKDMiniBatchLoss', temperature=0.1,
                      loss_weight=1.0, gather=False)),
        memory=dict(
            student='decode_head.bottleneck',
            teacher='decode_head.bottleneck',
            connector=[
                dict(type='ConvConnector', norm_cfg=dict(type='SyncBN'),
                     act_cfg=dict(type='ReLU')),
                dict(type='ConvConnector')],
            loss=dict(type='CIRKDMemoryLoss', num_classes=19,
                      loss_weight=0.1))))
