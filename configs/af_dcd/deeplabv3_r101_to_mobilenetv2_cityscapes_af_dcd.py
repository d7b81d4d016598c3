# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> DeepLabV3 MobileNetV2-D8 on
# Cityscapes 512x1024, 80k schedule. Af-DCD (Fan et al., NeurIPS 2023),
# settings of the official OSVAI/Af-DCD train_scripts/cityscape/
# deeplabv3_r101_mbv2_r18_v2_ocmgd.sh and train_ocmgd.py:
# * pixel-wise KD on the logits: lambda_kd = 1, kd_temperature = 1;
# * Af-DCD on the last backbone output (the official c4, MobileNetV2's
#   320-channel stage 7; mmseg's backbone.layer7; -> teacher 2048 channels
#   through the loss's 1x1 align conv): lambda_fd = 2e-6, lambda_ctr = 5e-3,
#   the loss defaults otherwise (random mask of 75 % of the locations,
#   plain projector, tau 0.07, 16 groups, 4x4 pooling, 4x4 patches).
_base_ = ['./deeplabv3_r101_to_r18_cityscapes_af_dcd.py']

model = dict(
    student=('mmseg::mobilenet_v2/'
             'mobilenet-v2-d8_deeplabv3_4xb2-80k_cityscapes-512x1024.py'),
    distill_terms=dict(
        af_dcd=dict(
            student='backbone.layer7',
            loss=dict(_delete_=True, type='AfDCDLoss', lambda_fd=2e-6,
                      lambda_ctr=5e-3))))
