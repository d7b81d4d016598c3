"""mmseg 1.2's real-time students (STDC1/2, BiSeNetV2, DDRNet, PIDNet,
SegFormer, MobileNetV2-DeepLabV3+, MobileNetV3-LRASPP), narrowed, under a
tiny PSPNet teacher: logit terms train on every pair whatever the
student's output stride or training heads; token layers get a connector."""
import copy

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_distiller, tiny_pspnet
from visionkd.registry import MODELS

BN = dict(type='BN', requires_grad=True)
CE = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
LOGITS = dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg')
LOSSES = {
    'cwd': dict(type='ChannelWiseDivergence', tau=4.0, loss_weight=3.0),
    'dist': dict(type='DISTLoss'),
    'pixel': dict(type='PixelWiseKDLoss'),
}


def fcn(in_channels: int, index: int, channels: int = 8) -> dict:
    return dict(type='FCNHead', in_channels=in_channels, channels=channels,
                num_convs=1, num_classes=19, in_index=index,
                concat_input=False, norm_cfg=BN, loss_decode=CE)


def _stdc(version: int = 1) -> dict:
    boundary = dict(
        type='STDCHead', in_channels=32, channels=8, num_convs=1,
        num_classes=2, boundary_threshold=0.1, in_index=0, norm_cfg=BN,
        concat_input=False, align_corners=True, loss_decode=[
            dict(type='CrossEntropyLoss', loss_name='loss_ce',
                 use_sigmoid=True, loss_weight=1.0),
            dict(type='DiceLoss', loss_name='loss_dice', loss_weight=1.0)])
    return dict(
        config=(f'mmseg::stdc/stdc{version}_in1k-pre_4xb12-80k_'
                'cityscapes-512x1024.py'),
        backbone=dict(
            backbone_cfg=dict(channels=(8, 16, 32, 64, 128), norm_cfg=BN,
                              init_cfg=None),
            last_in_channels=(128, 64), out_channels=16, norm_cfg=BN,
            ffm_cfg=dict(in_channels=48, out_channels=32)),
        decode_head=dict(in_channels=32, channels=16, norm_cfg=BN,
                         sampler=None),
        auxiliary_head=[fcn(16, 2), fcn(16, 1), boundary])


def _bisenetv2() -> dict:
    return dict(
        config=('mmseg::bisenetv2/'
                'bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py'),
        backbone=dict(detail_channels=(16, 16, 32),
                      semantic_channels=(8, 16, 16, 32), bga_channels=32,
                      semantic_expansion_ratio=2, norm_cfg=BN),
        decode_head=dict(in_channels=32, channels=16, norm_cfg=BN),
        auxiliary_head=[fcn(8, 1), fcn(16, 2), fcn(16, 3), fcn(32, 4)])


def _ddrnet() -> dict:
    return dict(
        config=('mmseg::ddrnet/'
                'ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py'),
        backbone=dict(channels=8, ppm_channels=16, norm_cfg=BN,
                      init_cfg=None),
        decode_head=dict(in_channels=32, channels=16, norm_cfg=BN))


def _pidnet() -> dict:
    return dict(
        config='mmseg::pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py',
        backbone=dict(channels=8, ppm_channels=16, norm_cfg=BN,
                      init_cfg=None),
        decode_head=dict(in_channels=32, channels=16, norm_cfg=BN))


def _segformer() -> dict:
    return dict(
        config=('mmseg::segformer/'
                'segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py'),
        backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1], init_cfg=None),
        decode_head=dict(in_channels=[8, 16, 40, 64], channels=16,
                         norm_cfg=BN))


def _mobilenetv2_deeplabv3plus() -> dict:
    return dict(
        config=('mmseg::mobilenet_v2/'
                'mobilenet-v2-d8_deeplabv3plus_4xb2-80k_cityscapes-'
                '512x1024.py'),
        pretrained=None,
        backbone=dict(widen_factor=0.25, norm_cfg=BN),
        decode_head=dict(in_channels=80, c1_in_channels=8, channels=16,
                         c1_channels=8, norm_cfg=BN),
        auxiliary_head=dict(in_channels=24, channels=8, norm_cfg=BN))


def _mobilenetv3_lraspp() -> dict:
    return dict(
        config=('mmseg::mobilenet_v3/'
                'mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py'),
        pretrained=None,
        backbone=dict(norm_cfg=BN),
        decode_head=dict(channels=16, branch_channels=(8, 8), norm_cfg=BN))


#: family -> (student spec, input (H, W), student logit stride)
STUDENTS = {
    'stdc1': (_stdc, (64, 128), 8),
    'stdc2': (lambda: _stdc(2), (64, 128), 8),
    'bisenetv2': (_bisenetv2, (64, 128), 8),
    'ddrnet_23_slim': (_ddrnet, (64, 128), 8),
    'pidnet_s': (_pidnet, (64, 128), 8),
    'segformer_b0': (_segformer, (64, 128), 4),
    'mobilenetv2_deeplabv3plus': (_mobilenetv2_deeplabv3plus, (64, 128), 4),
    # LRASPP's 49x49 image pool needs >= 392 px at stride 8 (one image)
    'mobilenetv3_lraspp': (_mobilenetv3_lraspp, (392, 392), 2),
}


def seg_batch_of(height: int, width: int, n: int = 2) -> dict:
    """``n`` random images with labels and PIDNet's edge maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 255, (3, height, width),
                                    dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width),
            pad_shape=(height, width)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 19, (1, height, width)))
        sample.gt_edge_map = PixelData(
            data=torch.randint(0, 2, (1, height, width)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def narrow_pspnet() -> dict:
    """The conftest's tiny PSPNet R18-D8 with a quarter-width backbone
    (logits and auxiliary logits at stride 8, 19 classes)."""
    spec = tiny_pspnet(16)
    spec['backbone'].update(stem_channels=16, base_channels=16)
    spec['decode_head']['in_channels'] = 128
    spec['auxiliary_head']['in_channels'] = 64
    return spec


def build(student: dict, terms: dict, size, **kwargs):
    student = dict(copy.deepcopy(student), data_preprocessor=dict(size=size))
    return build_distiller('seg', terms, student=student,
                           teacher=narrow_pspnet(), **kwargs)


def record_logits(model) -> dict:
    """Hooks keeping the logits both models compute in a step."""
    seen = {}
    for role, net in (('student', model.student), ('teacher', model.teacher)):
        net.decode_head.conv_seg.register_forward_hook(
            lambda m, i, o, role=role: seen.setdefault(role, o),
            prepend=True)
    return seen


@pytest.mark.parametrize('family', sorted(STUDENTS))
def test_logit_kd_trains_every_student(family):
    """One training step per family (CWD on the decode-head logits): the
    term's value is CWD between the student logits, resized to the
    teacher's size where the strides differ, and the teacher's; its
    gradient reaches the student's classifier and never the teacher."""
    make, size, stride = STUDENTS[family]
    torch.manual_seed(0)
    dry = dict(dry_run_input_size=size) if max(size) > 128 else {}
    model = build(make(), dict(logits=dict(LOGITS, loss=LOSSES['cwd'])),
                  size, **dry)
    resize = [type(c).__name__ for c in
              model.distill_terms['logits'].connectors[0]]
    assert resize == ([] if stride == 8 else ['ResizeConnector'])
    seen = record_logits(model)
    model.train()
    batch = seg_batch_of(*size, n=1 if dry else 2)
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    s, t = seen['student'], seen['teacher']
    assert s.shape[2:] == (size[0] // stride, size[1] // stride)
    assert t.shape[2:] == (size[0] // 8, size[1] // 8)
    if stride != 8:
        s = F.interpolate(s, t.shape[2:], mode='bilinear', antialias=True)
    expected = MODELS.build(LOSSES['cwd'])(s, t.detach())
    value = losses['loss_kd_logits']
    torch.testing.assert_close(value, expected)
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    grad = model.student.decode_head.conv_seg.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize('loss', ['dist', 'pixel'])
@pytest.mark.parametrize('family', ['pidnet_s', 'segformer_b0'])
def test_dist_and_pixel_wise_kd_on_other_strides_and_heads(family, loss):
    make, size, _ = STUDENTS[family]
    model = build(make(), dict(logits=dict(LOGITS, loss=LOSSES[loss])),
                  size)
    model.train()
    losses = model(**model.data_preprocessor(seg_batch_of(*size), True),
                   mode='loss')
    assert torch.isfinite(losses['loss_kd_logits'])
    assert losses['loss_kd_logits'].item() > 0
    # the student's own training heads still train (PIDNet: 4 losses)
    assert sum(k.startswith('decode.') for k in losses) >= 2


def test_auxiliary_head_is_one_more_term():
    """BiSeNetV2's auxiliary head 3 (stride 16) against the teacher's
    auxiliary FCN head (stride 8): the resize is inferred there too."""
    make, size, _ = STUDENTS['bisenetv2']
    terms = dict(logits=dict(LOGITS, loss=LOSSES['cwd']),
                 aux3=dict(student='auxiliary_head.3.conv_seg',
                           teacher='auxiliary_head.conv_seg',
                           loss=LOSSES['cwd']))
    model = build(make(), terms, size)
    conns = model.distill_terms['aux3'].connectors[0]
    assert [type(c).__name__ for c in conns] == ['ResizeConnector']
    model.train()
    losses = model(**model.data_preprocessor(seg_batch_of(*size), True),
                   mode='loss')
    losses['loss_kd_aux3'].backward()
    head = model.student.auxiliary_head
    assert head[3].conv_seg.weight.grad.abs().sum() > 0
    assert head[0].conv_seg.weight.grad is None


def test_training_only_heads_fail_at_build_with_the_fix():
    make, size, _ = STUDENTS['pidnet_s']
    with pytest.raises(ValueError) as err:
        build(make(), dict(p=dict(student='decode_head.p_cls_seg',
                                  teacher='decode_head.conv_seg',
                                  loss=LOSSES['cwd'])), size)
    msg = str(err.value)
    assert "distill term 'p'" in msg and 'runs only in training' in msg
    assert "distil 'decode_head.conv_seg'" in msg
    with pytest.raises(ValueError, match=r"several maps in training.*"
                                         r"'backbone\.dfm'"):
        build(make(), dict(b=dict(student='backbone', teacher='backbone',
                                  loss=dict(type='FeatureMSELoss'))), size)


def test_cnn_to_transformer_tokens_both_ways():
    """A MiT block's tokens (N, L, C) against a CNN map, student side and
    teacher side: the TokensToMapConnector is inferred first in the token
    side's chain, the grid follows the batch (64 x 128, while the dry run
    was 128 x 128), and the student learns through it."""
    seg, size = _segformer(), (64, 128)
    chain = [dict(type='ConvConnector'), dict(type='ResizeConnector')]
    token_student = dict(student='backbone.layers.3.1.0',
                         teacher='backbone.layer4', connector=chain,
                         loss=dict(type='FeatureMSELoss'))
    model = build(seg, dict(tok=token_student), size)
    term = model.distill_terms['tok']
    assert [type(c).__name__ for c in term.connectors[0]] == [
        'TokensToMapConnector', 'ConvConnector', 'ResizeConnector']
    model.train()
    losses = model(**model.data_preprocessor(seg_batch_of(*size), True),
                   mode='loss')
    losses['loss_kd_tok'].backward()
    block = model.student.backbone.layers[3][1][0]
    assert block.ffn.layers[1].weight.grad.abs().sum() > 0
    # the teacher records tokens, the student (a PSPNet) a map
    seg['data_preprocessor'] = dict(size=size)
    model = build_distiller('seg', dict(tok=dict(
        student='backbone.layer4', teacher='backbone.layers.3.1.0',
        connector=chain, loss=dict(type='FeatureMSELoss'))),
        student=dict(narrow_pspnet(), data_preprocessor=dict(size=size)),
        teacher=seg)
    term = model.distill_terms['tok']
    assert [type(c).__name__ for c in term.teacher_connectors[0]] == [
        'TokensToMapConnector']
    model.train()
    losses = model(**model.data_preprocessor(seg_batch_of(*size), True),
                   mode='loss')
    assert torch.isfinite(losses['loss_kd_tok'])
    losses['loss_kd_tok'].backward()
    assert model.student.backbone.layer4[0].conv1.weight.grad is not None


def test_full_size_mit_b5_teacher_to_narrow_cnn_student():
    """A SegFormer MiT-B5 teacher as mmseg configures it (full size, no
    weights; tests/test_configs builds B4 at full size from configs/cirkd)
    teaches a narrow STDC2 logit CWD: the teacher's stride-4 logits meet
    the student's stride-8 ones through an inferred resize on the student
    side, and only the student learns."""
    teacher = dict(
        config=('mmseg::segformer/segformer_mit-b5_8xb1-160k_'
                'cityscapes-1024x1024.py'),
        backbone=dict(init_cfg=None))
    size = (64, 128)
    model = build_distiller(
        'seg', dict(logits=dict(LOGITS, loss=LOSSES['cwd'])),
        student=dict(_stdc(2), data_preprocessor=dict(size=size)),
        teacher=teacher)
    depths = [len(stage[1]) for stage in model.teacher.backbone.layers]
    assert depths == [3, 6, 40, 3]
    conns = model.distill_terms['logits'].connectors[0]
    assert [type(c).__name__ for c in conns] == ['ResizeConnector']
    model.train()
    losses = model(**model.data_preprocessor(seg_batch_of(*size), True),
                   mode='loss')
    value = losses['loss_kd_logits']
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    assert model.student.decode_head.conv_seg.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
