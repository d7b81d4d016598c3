# PSPNet R101-D8 (80k, 79.76 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule. Structured KD (Liu et al., CVPR 2019), settings of the
# official irfanICMLL/structure_knowledge_distillation (train_options.py):
# * pixel-wise KD on the logits, lambda_pi = 10. The official criterion sums
#   over the images of a GPU (/ H*W only); PixelWiseKDLoss averages, so its
#   weight is lambda_pi * images_per_gpu = 10 * 2 (4xb2 here);
# * pair-wise affinity on the feature after the PSP module (official
#   feat_ind=-5, x_feat_after_psp = mmseg's decode_head.bottleneck),
#   2x2 max-pooled nodes (pool_scale 0.5), lambda_pa = 1.
# The holistic (adversarial) term of the paper is not included.
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
        pixel=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='PixelWiseKDLoss', tau=1.0, loss_weight=20.0)),
        pair=dict(
            student='decode_head.bottleneck',  # 128 channels
            teacher='decode_head.bottleneck',  # 512 channels
            loss=dict(type='PairWiseAffinityLoss', pool_scale=0.5,
                      loss_weight=1.0))))
