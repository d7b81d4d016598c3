# Tiny distillation on ../shared/data/camvid with one term per segmentation
# KD family (SKD pixel + pair, IFVD, CIRKD mini-batch + memory, DIST, MGD),
# so a single train+test run exercises all of them (CWD: *_cwd.py).
# Teacher = the tiny PSPNet with a wider decode head (64 vs 32 channels).
# Two iterations and no validation during training, to keep CI time down
# (tools/test.py evaluates the checkpoint afterwards).
_base_ = ['./pspnet_camvid_tiny.py']
model = dict(
    _delete_=True,
    type='visionkd.SegmentationDistiller',
    student='{{fileDirname}}/pspnet_camvid_tiny.py',
    teacher=dict(config='{{fileDirname}}/pspnet_camvid_tiny.py',
                 decode_head=dict(channels=64)),
    teacher_ckpt=None,
    distill_terms=dict(
        skd_pixel=dict(student='decode_head.conv_seg',
                       teacher='decode_head.conv_seg',
                       loss=dict(type='PixelWiseKDLoss', loss_weight=20.0)),
        skd_pair=dict(student='decode_head.bottleneck',
                      teacher='decode_head.bottleneck',
                      loss=dict(type='PairWiseAffinityLoss')),
        ifvd=dict(student='decode_head.bottleneck',
                  teacher='decode_head.bottleneck',
                  loss=dict(type='IFVDLoss', num_classes=19,
                            loss_weight=200.0)),
        cirkd_minibatch=dict(student='decode_head.bottleneck',
                             teacher='decode_head.bottleneck',
                             loss=dict(type='CIRKDMiniBatchLoss',
                                       gather=False)),
        cirkd_memory=dict(student='decode_head.bottleneck',
                          teacher='decode_head.bottleneck',
                          connector=[dict(type='ConvConnector',
                                          norm_cfg=dict(type='BN'),
                                          act_cfg=dict(type='ReLU')),
                                     dict(type='ConvConnector')],
                          loss=dict(type='CIRKDMemoryLoss', num_classes=19,
                                    pixel_memory_size=256,
                                    region_memory_size=32,
                                    pixel_contrast_size=190,
                                    region_contrast_size=38,
                                    loss_weight=0.1)),
        dist=dict(student='decode_head.conv_seg',
                  teacher='decode_head.conv_seg',
                  loss=dict(type='DISTLoss')),
        mgd=dict(student='decode_head.bottleneck',  # 32 -> 64: align conv
                 teacher='decode_head.bottleneck',
                 loss=dict(type='MGDLoss', lambda_mgd=0.75))))

max_iters = 2
train_cfg = dict(max_iters=max_iters, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=max_iters))
