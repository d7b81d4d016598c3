# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> DeepLabV3 R18-D8 on Cityscapes
# 512x1024, 80k schedule. Af-DCD (Fan et al., NeurIPS 2023), settings of the
# official OSVAI/Af-DCD train_scripts/cityscape/
# deeplabv3_r101_deeplabv3_r18_ocmgd.sh and train_ocmgd.py:
# * pixel-wise KD on the logits: lambda_kd = 1, kd_temperature = 1;
# * Af-DCD on the last backbone stage (the official c4 = s_outputs[-2],
#   mmseg's backbone.layer4; student 512 -> teacher 2048 channels through
#   the loss's own 1x1 align conv): lambda_fd = 2e-6, lambda_ctr = 5e-3,
#   tau 0.07, 16 channel groups, 4x4 max-pooling, 4x4 patches; the script
#   asks for the centre mask and the enhanced projector (see README.md).
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
            loss=dict(type='PixelWiseKDLoss', tau=1.0, loss_weight=1.0)),
        af_dcd=dict(
            student='backbone.layer4',
            teacher='backbone.layer4',
            loss=dict(type='AfDCDLoss', lambda_fd=2e-6, lambda_ctr=5e-3,
                      rand_mask=False, enhance_projector=True))))
