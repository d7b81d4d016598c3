"""The bad-input catalogue (docs/faq.md) not covered by the distiller
tests: each raises one clear error before training, and a failing
tools/train.py leaves an existing work dir untouched."""
import os
import os.path as osp

import pytest
import torch

from tests.conftest import build_distiller, tiny_faster_rcnn
from tests.test_reliability.helpers import DET_MICRO_KD, run_tool

FEAT = dict(student='decode_head.bottleneck',
            teacher='decode_head.bottleneck')


@pytest.mark.parametrize('loss, words', [
    (dict(type='ChannelWiseDivergence', tau='2'),
     ["'x'", 'ChannelWiseDivergence', "tau='2'", 'expected float']),
    (dict(type='CIRKDMiniBatchLoss', gather='no'),
     ["'x'", "gather='no'", 'expected bool']),
    (dict(type='IFVDLoss', num_classes=19.5),
     ["'x'", 'num_classes=19.5', 'expected int']),
])
def test_hyperparameter_of_the_wrong_type(loss, words):
    with pytest.raises(TypeError) as info:
        build_distiller('seg', dict(x=dict(FEAT, loss=loss)))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_connector_argument_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"kernel_size='3'.*expected int"):
        build_distiller('seg', dict(x=dict(
            FEAT, connector=dict(type='ConvConnector', kernel_size='3'),
            loss=dict(type='FeatureMSELoss'))))


def test_gt_loss_on_a_model_without_that_ground_truth():
    # segmentors carry gt_sem_seg, not the boxes FGD needs
    with pytest.raises(TypeError) as info:
        build_distiller('seg', dict(fgd=dict(
            FEAT, loss=dict(type='FGDLoss'))))
    msg = str(info.value)
    assert "'fgd'" in msg and '`gt_instances`' in msg and 'gt_sem_seg' in msg
    # and detectors carry boxes, not the label maps IFVD needs
    with pytest.raises(TypeError, match='IFVDLoss needs `gt_sem_seg`'):
        build_distiller('det', dict(ifvd=dict(
            student='neck', teacher='neck',
            loss=dict(type='IFVDLoss', num_classes=3))),
            teacher=tiny_faster_rcnn(64))


def test_gt_loss_on_a_batch_without_ground_truth(seg_batch):
    model = build_distiller('seg', dict(ifvd=dict(
        FEAT, loss=dict(type='IFVDLoss', num_classes=19))))
    samples = seg_batch['data_samples']
    for sample in samples:
        del sample.gt_sem_seg
    # the student's own loss needs labels too; check the term alone
    from tests.test_models.test_distillers.helpers import StubRecords
    feats = [torch.randn(2, 32, 8, 8)]
    with pytest.raises(ValueError) as info:
        model.distill_terms['ifvd'](StubRecords(feats, feats), samples)
    msg = str(info.value)
    assert "'ifvd'" in msg and '`gt_sem_seg`' in msg
    assert 'LoadAnnotations' in msg


def test_task_mismatch_on_the_segmentation_side():
    with pytest.raises(TypeError, match='mmseg segmentor as teacher'):
        build_distiller('seg', dict(x=dict(FEAT,
                                           loss=dict(type='ATLoss'))),
                        teacher=dict(tiny_faster_rcnn(), _scope_='mmdet'))


def test_spatial_mismatch_without_connector():
    with pytest.raises(ValueError) as info:
        build_distiller('seg', dict(x=dict(
            student='backbone.layer1', teacher='backbone.layer4',
            loss=dict(type='FeatureMSELoss'))))
    msg = str(info.value)
    assert "'x'" in msg and 'ResizeConnector' in msg


@pytest.mark.parametrize('text, words', [
    (None, ['does not exist']),
    ('model = dict(type=\n', ['is invalid', 'SyntaxError']),
    ("_base_ = ['./missing_base.py']\n", ['is invalid', 'missing_base']),
])
def test_config_file_missing_or_invalid(tmp_path, text, words):
    from tools.common import load_config
    path = tmp_path / 'kd.py'
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as info:
        load_config(str(path))
    msg = str(info.value)
    assert str(path) in msg
    for word in words:
        assert word in msg, msg


def test_failed_build_leaves_the_work_dir_untouched(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    old = {
        'iter_4.pth': b'previous checkpoint',
        'last_checkpoint': str(work / 'iter_4.pth').encode(),
        osp.basename(DET_MICRO_KD): b'# the previous run\'s config dump',
    }
    for name, data in old.items():
        (work / name).write_bytes(data)
        os.utime(work / name, (1e9, 1e9))
    proc = run_tool('train.py', DET_MICRO_KD, '--work-dir', str(work),
                    '--cfg-options',
                    'model.distill_terms.feat.student=neck.fpn_conv.0',
                    check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()[-1]
    assert "distill term 'feat': student layer 'neck.fpn_conv.0' " \
        'does not exist in the student' in err
    assert "'neck.fpn_convs.0'" in err  # nearest name
    for name, data in old.items():
        assert (work / name).read_bytes() == data, name
        assert os.stat(work / name).st_mtime == 1e9, name
    # only mmengine's new timestamped log folder was added
    new = set(os.listdir(work)) - set(old)
    assert len(new) == 1 and (work / new.pop()).is_dir()
    assert not list(work.rglob('*.pth'))[1:]


# ------------------------------------------------ segmentor-specific terms
SEG_CWD = dict(type='ChannelWiseDivergence', tau=4.0, loss_weight=3.0)


def _fcn(in_index: int) -> dict:
    return dict(type='FCNHead', in_channels=256, channels=16, num_convs=1,
                num_classes=19, in_index=in_index, concat_input=False,
                norm_cfg=dict(type='BN'),
                loss_decode=dict(type='CrossEntropyLoss'))


@pytest.mark.parametrize('aux, words', [
    (None, ["distill term 'aux'", "student layer 'auxiliary_head.conv_seg'",
            'has no auxiliary_head', "['decode_head.conv_seg']",
            'drop the term']),
    ([_fcn(2), _fcn(2)], ["distill term 'aux'", "has 2 heads in "
                          "auxiliary_head (['FCNHead', 'FCNHead'])",
                          "'auxiliary_head.<i>.conv_seg' with i in 0..1"]),
])
def test_term_on_a_head_the_segmentor_does_not_have(aux, words):
    from tests.conftest import tiny_pspnet
    student = dict(tiny_pspnet(32), auxiliary_head=aux)
    with pytest.raises(ValueError) as info:
        build_distiller('seg', dict(aux=dict(
            student='auxiliary_head.conv_seg',
            teacher='auxiliary_head.conv_seg', loss=SEG_CWD)),
            student=student)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_logit_term_between_other_class_counts():
    from tests.conftest import tiny_pspnet
    with pytest.raises(ValueError) as info:
        build_distiller('seg', dict(logits=dict(
            student='decode_head.conv_seg', teacher='decode_head.conv_seg',
            loss=SEG_CWD)), student=tiny_pspnet(32, num_classes=11))
    msg = str(info.value)
    for word in ("distill term 'logits'", 'logits of 11 classes',
                 'teacher', 'of 19', 'num_classes=19',
                 "connector=dict(type='ConvConnector')"):
        assert word in msg, (word, msg)


def test_token_term_that_cannot_be_aligned():
    """ViT tokens with a class token (L = 16 * 16 + 1 = 257 at the 128 x
    128 dry run) against a CNN map: no grid, one build-time error."""
    vit = dict(
        type='EncoderDecoder', _scope_='mmseg',
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(type='VisionTransformer', img_size=(64, 64),
                      patch_size=8, embed_dims=32, num_layers=2, num_heads=2,
                      mlp_ratio=2, out_indices=(1, ), with_cls_token=True,
                      final_norm=False),
        decode_head=dict(_fcn(0), in_channels=32),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    with pytest.raises(ValueError) as info:
        build_distiller('seg', dict(tok=dict(
            student='backbone.layers.1', teacher='backbone.layer4',
            connector=dict(type='ConvConnector'),
            loss=dict(type='FeatureMSELoss'))), student=vit)
    msg = str(info.value)
    for word in ("distill term 'tok'", "student layer 'backbone.layers.1'",
                 '(1, 257, 32) tokens', 'no h x w grid of a 128x128 image',
                 'one token per location',
                 "dict(type='TokensToMapConnector', hw_shape=(h, w))"):
        assert word in msg, (word, msg)
