# Deep-to-shallow self-distillation ("Be Your Own Teacher", Zhang et al.,
# ICCV 2019), ours, not a paper setting: in one PSPNet R18-D8 on Cityscapes
# 512x1024, 80k, the auxiliary FCN head (on layer3) learns from the decode
# head's logits (on layer4, detached) with pixel-wise KD (tau 1), besides
# both heads' labels. teacher='self': no second model, no second forward; the
# terms read the student's own training forward. (The plain-mmseg version of
# this is projects/plain_openmmlab_example/selfkd.)
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]

model = dict(
    type='visionkd.SegmentationDistiller',
    student='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher='self',
    distill_terms=dict(
        aux=dict(student='auxiliary_head.conv_seg',
                 teacher='decode_head.conv_seg',
                 loss=dict(type='PixelWiseKDLoss', tau=1.0,
                           loss_weight=1.0))))
