# SegFormer MiT-B4 (160k, 81.89 mIoU) -> SegFormer MiT-B0 (76.54 mIoU) on
# Cityscapes; student, data (1024x1024 crops), 160k schedule and AdamW
# optimizer: mmseg's segformer_mit-b0_8xb1-160k_cityscapes-1024x1024. CIRKD
# (Yang et al., CVPR 2022), settings of the official winycg/CIRKD
# train_scripts/train_cirkd/citys/segformer_mit_b0.sh and
# train_cirkd_segformer.py (repo README before 2025-08: 75.58 -> 76.92,
# see README.md) on the embedding before the classifier (mmseg's
# decode_head.fusion_conv; CIRKD's linear_fuse output, s_outputs[-1]):
# * pixel-wise KD on the logits (decode_head.conv_seg, stride 4 on both):
#   lambda_kd = 1, kd_temperature = 1;
# * mini-batch pixel-to-pixel: contrast_temperature = 0.1, weight 1.0, per
#   GPU batch, both embeddings 2x2 average-pooled first (pooling=True);
# * memory pixel-to-pixel and pixel-to-region: pixel memory 2000 (the
#   script's --pixel-memory-size), region memory 2000, contrast sizes 4096
#   / 1024, temperatures 0.1 / 1.0, weights 0.1 / 0.1, with the official
#   projection head (1x1 conv-SyncBN-ReLU-1x1 conv) as connector, 256 ->
#   256 channels (mmseg's B4 head has 256 channels, CIRKD's 768).
_base_ = [
    'mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py'
]

teacher_ckpt = 'https://download.openmmlab.com/mmsegmentation/v0.5/segformer/segformer_mit-b4_8x1_1024x1024_160k_cityscapes/segformer_mit-b4_8x1_1024x1024_160k_cityscapes_20211207_080709-07f6c333.pth'  # noqa: E501
embedding = 'decode_head.fusion_conv'

model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student=('mmseg::segformer/'
             'segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py'),
    teacher=('mmseg::segformer/'
             'segformer_mit-b4_8xb1-160k_cityscapes-1024x1024.py'),
    teacher_ckpt=teacher_ckpt,
    distill_terms=dict(
        logits=dict(
            student='decode_head.conv_seg',
            teacher='decode_head.conv_seg',
            loss=dict(type='PixelWiseKDLoss', tau=1.0, loss_weight=1.0)),
        minibatch=dict(
            student=embedding,
            teacher=embedding,
            connector=dict(type='AvgPoolConnector'),
            teacher_connector=dict(type='AvgPoolConnector'),
            loss=dict(type='CIRKDMiniBatchLoss', temperature=0.1,
                      loss_weight=1.0, gather=False)),
        memory=dict(
            student=embedding,
            teacher=embedding,
            connector=[
                dict(type='ConvConnector', norm_cfg=dict(type='SyncBN'),
                     act_cfg=dict(type='ReLU')),
                dict(type='ConvConnector')],
            loss=dict(type='CIRKDMemoryLoss', num_classes=19,
                      pixel_memory_size=2000, loss_weight=0.1))))
