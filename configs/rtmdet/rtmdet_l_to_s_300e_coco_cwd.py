# RTMDet distillation recipe of MMYOLO (configs/rtmdet/distillation,
# MMRazor FpnTeacherDistill): RTMDet-l (51.3) -> RTMDet-s (44.5) on COCO 2017
# (no published result for this pair; mmyolo distils RTMDet-l -> m).
# CWD (tau 1, loss weight 1 per level) on the three neck outputs before
# their BN/SiLU (`neck.out_convs.<i>.conv`), the student's map through a
# bias-free 1x1 conv + BatchNorm without affine on batch statistics
# (NormConnector); distillation on epochs 0-279, the last 20 epochs (no
# mosaic) train the student alone. The teacher's map is standardised alike
# (teacher_connector, parameter-free), as in the recipe (see
# README.md). Student, data, schedule and hooks: mmdet's RTMDet-s config.
_base_ = ['./rtmdet_m_to_s_300e_coco_cwd.py']

teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_l_8xb32-300e_coco/rtmdet_l_8xb32-300e_coco_20220719_112030-5a0be7c4.pth'  # noqa: E501

model = dict(teacher='mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py',
             teacher_ckpt=teacher_ckpt)
