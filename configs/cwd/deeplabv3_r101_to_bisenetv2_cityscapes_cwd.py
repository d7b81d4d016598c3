# DeepLabV3 R101-D8 (80k, 80.20 mIoU) -> BiSeNetV2 (from scratch, 73.21
# mIoU) on Cityscapes; student, data (1024x1024 crops), 160k schedule and
# optimizer: mmseg's bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024. Ours, not
# a paper setting (see README.md). CWD (Shu et al., ICCV 2021) on the
# decode-head logits (decode_head.conv_seg, after the bilateral guided
# aggregation, stride 8 on both), with the official logits-only setting
# tau=4, loss weight 3 (irfanICMLL/TorchDistiller SemSeg-distill,
# exp_cwd.sh). The four auxiliary FCN heads (auxiliary_head.<i>) train on
# labels only; one more term on 'auxiliary_head.<i>.conv_seg' would
# distil one of them.
_base_ = [
    'mmseg::bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py',
    '../_base_/distill/deeplabv3_r101_logits_cwd.py'
]

model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student=('mmseg::bisenetv2/'
             'bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py'),
    teacher=_base_.deeplabv3_r101_teacher,
    teacher_ckpt=_base_.deeplabv3_r101_teacher_ckpt,
    distill_terms=_base_.logits_cwd_terms)
