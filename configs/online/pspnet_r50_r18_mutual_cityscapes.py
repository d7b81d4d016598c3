# Online (mutual) distillation (Zhang et al., "Deep Mutual Learning", CVPR
# 2018), ours, not a paper setting: a PSPNet R50-D8 and the PSPNet R18-D8
# student train together from ImageNet-initialised backbones on Cityscapes
# 512x1024, 80k. Each learns from the labels and from the other's
# decode-head logits (pixel-wise KL, tau 1, the DML loss): logits teaches the
# student, logits_back (direction='student_to_teacher') teaches the teacher.
# Both are in the optimizer and the checkpoint (the teacher under
# online_teachers.teacher.*); its losses are logged as teacher.*. Export
# either model: tools/export_student.py CKPT OUT [--model teacher].
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]

kl = dict(type='PixelWiseKDLoss', tau=1.0, loss_weight=1.0)
model = dict(
    type='visionkd.SegmentationDistiller',
    student='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher='mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_trainable=True,
    teacher_ckpt=None,  # both from their ImageNet backbones
    distill_terms=dict(
        logits=dict(student='decode_head.conv_seg',
                    teacher='decode_head.conv_seg', loss=kl),
        logits_back=dict(student='decode_head.conv_seg',
                         teacher='decode_head.conv_seg',
                         direction='student_to_teacher', loss=kl)))
