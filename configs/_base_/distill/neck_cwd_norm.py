# The distillation terms of MMYOLO's RTMDet recipe (configs/rtmdet/
# distillation, MMRazor FpnTeacherDistill), shared by configs/rtmdet and
# configs/yolox: CWD (tau 1, loss weight 1 per level) on the three neck
# outputs P3-P5 before their BN/SiLU (`neck.out_convs.<i>.conv`), both maps
# standardised per channel on batch statistics (NormConnector: BatchNorm
# without affine; the student's after a bias-free 1x1 conv to the teacher's
# channels). See configs/rtmdet/README.md.
neck_cwd_norm_terms = {
    f'fpn{i}': dict(
        student=f'neck.out_convs.{i}.conv',
        teacher=f'neck.out_convs.{i}.conv',
        connector=dict(type='NormConnector', with_conv=True),
        teacher_connector=dict(type='NormConnector'),
        loss=dict(type='ChannelWiseDivergence', tau=1.0, loss_weight=1.0))
    for i in range(3)
}
