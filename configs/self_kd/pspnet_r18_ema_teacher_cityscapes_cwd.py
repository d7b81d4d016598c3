# Self-distillation from an EMA teacher (mean teacher, Tarvainen & Valpola,
# NeurIPS 2017), ours, not a paper setting: the PSPNet R18-D8 student on
# Cityscapes 512x1024, 80k, learns from the decode-head logits of an
# exponential moving average of its own weights (decay 0.999; no teacher
# checkpoint; the EMA weights are in the checkpoint as ema_teachers.*).
# CWD (tau 4) as configs/cwd, weight 1: the target is the student's own
# smoothed prediction, weaker than a big teacher's.
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]

model = dict(
    type='visionkd.SegmentationDistiller',
    student='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher=dict(kind='ema', decay=0.999),
    distill_terms=dict(
        logits=dict(student='decode_head.conv_seg',
                    teacher='decode_head.conv_seg',
                    loss=dict(type='ChannelWiseDivergence', tau=4.0,
                              loss_weight=1.0))))
