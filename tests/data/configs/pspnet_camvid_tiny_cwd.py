# Tiny CWD distillation (logits) on ../shared/data/camvid for tests.
_base_ = ['./pspnet_camvid_tiny.py']
model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student='{{fileDirname}}/pspnet_camvid_tiny.py',
    teacher=dict(config='{{fileDirname}}/pspnet_camvid_tiny.py',
                 decode_head=dict(channels=64)),
    teacher_ckpt=None,
    distill_terms=dict(
        logits=dict(student='decode_head.conv_seg',
                    teacher='decode_head.conv_seg',
                    loss=dict(type='ChannelWiseDivergence', tau=1.0,
                              loss_weight=3.0))))
