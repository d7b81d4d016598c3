# Two segmentation teachers -> one student (ours, not a paper setting):
# PSPNet R101-D8 (79.76 mIoU) and DeepLabV3 R101-D8 (80.20) distil one PSPNet
# R18-D8 on Cityscapes 512x1024, 80k: CWD (tau 4, weight 3, the official
# logits setting of configs/cwd) towards the mean of the two teachers'
# decode-head logits (both 19 classes at stride 8). fuse='max_confidence'
# instead takes, per pixel, the logits of the more confident teacher.
_base_ = ['../cwd/pspnet_r101_to_r18_cityscapes_cwd.py',
          '../_base_/distill/deeplabv3_r101_logits_cwd.py']

model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student=_base_.model.student,
    teachers=dict(
        pspnet=dict(model=_base_.model.teacher,
                    ckpt=_base_.teacher_ckpt),
        deeplabv3=dict(model=_base_.deeplabv3_r101_teacher,
                       ckpt=_base_.deeplabv3_r101_teacher_ckpt)),
    distill_terms=dict(
        logits=dict(student='decode_head.conv_seg',
                    teacher='decode_head.conv_seg',
                    from_teacher=('pspnet', 'deeplabv3'), fuse='mean',
                    loss=dict(type='ChannelWiseDivergence', tau=4.0,
                              loss_weight=3.0))))
