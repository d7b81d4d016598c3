# PSPNet R101-D8 (80k, 79.76 mIoU) -> PSPNet R18-D8 on Cityscapes 512x1024,
# 80k schedule. BPKD (Liu et al., WACV 2024, arXiv 2306.08075): edge and
# body distillation of the decode-head logits under masks from the ground
# truth (the paper's Fig. 3). The official AkideLiu/BPKD releases evaluation
# code only: the weights lambda_edge = 50, lambda_body = 20, alpha = 2,
# tau = 1 and the 7x7 dilation / erosion kernel are inferred (see
# README.md, "How each detail was derived").
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]

teacher_ckpt = 'https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'  # noqa: E501

model = dict(
    type='visionkd.SegmentationDistiller',
    # ImageNet-pretrained backbone (open-mmlab://resnet18_v1c);
    # --cfg-options model.student.pretrained=None trains it from scratch.
    student=dict(
        config='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    teacher='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        bpkd=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='BPKDLoss', lambda_edge=50.0, lambda_body=20.0,
                      alpha=2.0, tau=1.0, edge_kernel_size=7))))
