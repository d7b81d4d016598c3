"""RTMDet and YOLOX as students and teachers: the MMYOLO RTMDet recipe (CWD
on the neck outputs through NormConnector), PKD, a teacher of another family
and the build-time errors for mismatched levels."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, build_distiller, tiny_retinanet

RTMDET = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
YOLOX = 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'
BN = dict(type='BN')
CONFIGS = ['configs/rtmdet/rtmdet_s_to_tiny_300e_coco_cwd.py',
           'configs/rtmdet/rtmdet_m_to_s_300e_coco_cwd.py',
           'configs/rtmdet/rtmdet_l_to_s_300e_coco_cwd.py',
           'configs/yolox/yolox_s_to_tiny_300e_coco_cwd.py']


def tiny_rtmdet(widen: float = 0.125, out_channels: int = 16,
                sync_bn: bool = False) -> dict:
    """RTMDet spec (CSPNeXt, 3 levels, strides 8-32), narrow, no weights.

    ``sync_bn=True`` keeps the configs' SyncBN (a teacher gets it reverted).
    """
    c = out_channels
    norm = {} if sync_bn else dict(norm_cfg=BN)
    return dict(
        config=RTMDET,
        backbone=dict(deepen_factor=0.167, widen_factor=widen, init_cfg=None,
                      **norm),
        neck=dict(in_channels=[int(256 * widen), int(512 * widen),
                               int(1024 * widen)],
                  out_channels=c, **norm),
        bbox_head=dict(in_channels=c, feat_channels=c, num_classes=3, **norm))


def tiny_yolox(widen: float = 0.125, out_channels: int = 16) -> dict:
    """YOLOX spec (CSPDarknet, 3 levels), narrow, no batch resizing."""
    c = out_channels
    return dict(
        config=YOLOX,
        data_preprocessor=dict(batch_augments=None),
        backbone=dict(deepen_factor=0.33, widen_factor=widen),
        neck=dict(in_channels=[int(256 * widen), int(512 * widen),
                               int(1024 * widen)],
                  out_channels=c),
        bbox_head=dict(in_channels=c, feat_channels=c, num_classes=3))


def config_terms(path: str) -> dict:
    return Config.fromfile(osp.join(REPO, path)).model.distill_terms.to_dict()


def train_step(model, batch, kd_only: bool = False) -> dict:
    """Loss forward and backward (of the KD terms alone with ``kd_only``, so
    the student's neck gradients come from distillation); the losses."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    if kd_only:
        total = sum(v for k, v in losses.items() if k.startswith('loss_kd'))
    else:
        total, _ = model.parse_losses(losses)
    total.backward()
    return losses


def assert_student_neck_learns_teacher_frozen(model, losses, keys):
    for key in keys:
        assert key in losses and torch.isfinite(losses[key]), key
    neck = [p.grad for p in model.student.neck.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in neck)
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not any(p.requires_grad for p in model.teacher.parameters())


@pytest.mark.parametrize(
    'path,pair', [(p, 'yolox' if 'yolox' in p else 'rtmdet')
                  for p in CONFIGS], ids=[osp.basename(p) for p in CONFIGS])
def test_config_recipe_terms_train_tiny_pair(path, pair, det_batch):
    """The configs' CWD terms (NormConnector on neck.out_convs.<i>.conv) on
    tiny pairs: one step, finite losses, grads reach the student's neck and
    the connectors, never the teacher. The RTMDet teacher keeps SyncBN."""
    if pair == 'rtmdet':
        student, teacher = tiny_rtmdet(0.125, 16), tiny_rtmdet(
            0.25, 32, sync_bn=True)
    else:
        student, teacher = tiny_yolox(0.125, 16), tiny_yolox(0.25, 32)
    torch.manual_seed(0)
    model = build_distiller('det', config_terms(path), student=student,
                            teacher=teacher)
    assert not any('SyncBatchNorm' in type(m).__name__
                   for m in model.teacher.modules())
    losses = train_step(model, det_batch, kd_only=True)
    assert_student_neck_learns_teacher_frozen(
        model, losses, ['loss_kd_fpn0', 'loss_kd_fpn1', 'loss_kd_fpn2'])
    conn = model.distill_terms['fpn0'].connectors[0][0]
    assert (conn.conv.in_channels, conn.conv.out_channels) == (16, 32)
    assert conn.conv.weight.grad.abs().sum() > 0


def test_pkd_on_the_rtmdet_neck_one_entry_all_levels(det_batch):
    model = build_distiller(
        'det', dict(fpn=dict(student='neck', teacher='neck',
                             connector=dict(type='ConvConnector'),
                             loss=dict(type='PKDLoss', loss_weight=6.0))),
        student=tiny_rtmdet(0.125, 16), teacher=tiny_rtmdet(0.25, 32))
    losses = train_step(model, det_batch)
    assert_student_neck_learns_teacher_frozen(
        model, losses, ['loss_kd_fpn_l0', 'loss_kd_fpn_l1', 'loss_kd_fpn_l2'])


def test_retinanet_teacher_to_rtmdet_student_levels_select_p3_p5(
        det_batch):
    """RetinaNet's FPN gives 5 levels (P3-P7), RTMDet's neck 3 (P3-P5): one
    entry on both necks fails naming the term and the fix; with
    ``levels=[0, 1, 2]`` it distils P3-P5 with connectors inferred
    (16 -> 32 channels); indices beyond the shorter side are rejected."""
    student, teacher = tiny_rtmdet(0.125, 16), tiny_retinanet(32)
    whole = dict(student='neck', teacher='neck',
                 connector=dict(type='ConvConnector'),
                 loss=dict(type='PKDLoss'))
    with pytest.raises(ValueError) as err:
        build_distiller('det', dict(fpn=whole), student=student,
                        teacher=teacher)
    assert ("distill term 'fpn': student layer 'neck' gives 3 level(s) "
            "but teacher layer 'neck' gives 5") in str(err.value)
    assert 'levels=[...]' in str(err.value)
    with pytest.raises(ValueError, match=r'levels \[3\] out of range for 3 '
                                         r'level\(s\) recorded on both'):
        build_distiller('det', dict(fpn=dict(whole, levels=[0, 3])),
                        student=student, teacher=teacher)
    model = build_distiller('det', dict(fpn=dict(whole, levels=[0, 1, 2])),
                            student=student, teacher=teacher)
    conn = model.distill_terms['fpn'].connectors[0][0]
    assert conn.conv.conv.weight.shape[:2] == (32, 16)
    losses = train_step(model, det_batch, kd_only=True)
    assert_student_neck_learns_teacher_frozen(
        model, losses, ['loss_kd_fpn_l0', 'loss_kd_fpn_l1', 'loss_kd_fpn_l2'])


def test_teacher_connector_standardises_the_teacher_map():
    """The recipe's BN without affine on the teacher side: the loss sees the
    teacher's map standardised per channel; a connector with parameters is
    rejected; no state-dict entry is added."""
    from tests.test_models.test_distillers.helpers import (
        StubRecords,
        build_term,
    )
    torch.manual_seed(0)
    s = [torch.randn(2, 4, 5, 5, requires_grad=True)]
    t = [torch.randn(2, 4, 5, 5) * 3 + 1]
    seen = []
    term = build_term('x', dict(
        student='a', teacher='b',
        teacher_connector=dict(type='NormConnector'),
        loss=dict(type='ChannelWiseDivergence')), s, t)
    term.losses[0].register_forward_hook(
        lambda mod, args, out: seen.append(args[1]))
    term(StubRecords(s, t))['loss_kd_x'].backward()
    expected = (t[0] - t[0].mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        t[0].var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(seen[0], expected)
    assert not any(k.startswith('teacher_connectors')
                   for k in term.state_dict())
    with pytest.raises(TypeError, match='teacher_connector of distill term '
                                        "'x'.*has parameters"):
        build_term('x', dict(student='a', teacher='b',
                             teacher_connector=dict(type='ConvConnector'),
                             loss=dict(type='ChannelWiseDivergence')), s, t)


def test_yolox_mode_switch_hook_reaches_the_student_head():
    """mmdet's YOLOXModeSwitchHook switches on the L1 loss through
    ``model.detector`` (the student)."""
    from unittest import mock

    from mmdet.engine.hooks import YOLOXModeSwitchHook
    model = build_distiller('det', dict(fpn=dict(
        student='neck', teacher='neck', connector=dict(type='ConvConnector'),
        loss=dict(type='PKDLoss'))), student=tiny_yolox(0.125, 16),
        teacher=tiny_yolox(0.25, 32))
    assert model.detector is model.student
    assert not any(k.startswith('detector.') for k in model.state_dict())
    runner = mock.MagicMock(epoch=285, max_epochs=300, model=model)
    runner.train_dataloader.persistent_workers = False
    assert not model.student.bbox_head.use_l1
    YOLOXModeSwitchHook(num_last_epochs=15).before_train_epoch(runner)
    assert model.student.bbox_head.use_l1


def test_mismatched_strides_fail_at_build_with_the_fix(det_batch):
    """Student P3 (stride 8) against teacher P4 (stride 16): one build-time
    error naming the term, both shapes and ResizeConnector; adding it
    builds."""
    term = dict(student='neck.out_convs.0', teacher='neck.out_convs.1',
                connector=[dict(type='NormConnector')],
                loss=dict(type='ChannelWiseDivergence'))
    student, teacher = tiny_yolox(0.125, 16), tiny_rtmdet(0.25, 32)
    with pytest.raises(ValueError) as err:
        build_distiller('det', dict(p3=term), student=student,
                        teacher=teacher)
    msg = str(err.value)
    assert msg.startswith("distill term 'p3': student 'neck.out_convs.0' "
                          'has shape (1, 32, 16, 16) after connectors but '
                          "teacher 'neck.out_convs.1' has shape "
                          '(1, 32, 8, 8)')
    assert "dict(type='ResizeConnector')" in msg
    fixed = copy.deepcopy(term)
    fixed['connector'].append(dict(type='ResizeConnector'))
    model = build_distiller('det', dict(p3=fixed), student=student,
                            teacher=teacher)
    losses = train_step(model, det_batch)
    assert torch.isfinite(losses['loss_kd_p3'])


def test_rtmdet_ins_recipe_terms_train_with_masks():
    """configs/rtmdet/rtmdet_ins_s_to_tiny...: the recipe's neck terms on a
    tiny RTMDet-Ins pair train one step with the student's mask loss."""
    from mmdet.testing import demo_mm_inputs
    ins = 'mmdet::rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py'
    student, teacher = tiny_rtmdet(0.125, 16), tiny_rtmdet(0.25, 32)
    for spec in (student, teacher):
        spec['config'] = ins
    terms = config_terms(
        'configs/rtmdet/rtmdet_ins_s_to_tiny_300e_coco_cwd.py')
    torch.manual_seed(0)
    model = build_distiller('det', terms, student=student, teacher=teacher)
    assert type(model.student.bbox_head).__name__ == 'RTMDetInsSepBNHead'
    torch.manual_seed(0)
    batch = demo_mm_inputs(batch_size=2, image_shapes=(3, 64, 64),
                           num_items=[2, 1], num_classes=3, with_mask=True)
    losses = train_step(model, batch)
    assert 'loss_mask' in losses and torch.isfinite(losses['loss_mask'])
    assert_student_neck_learns_teacher_frozen(
        model, losses, ['loss_kd_fpn0', 'loss_kd_fpn1', 'loss_kd_fpn2'])


def test_cross_head_refuses_rtmdet_heads_by_name():
    # RTMDetSepBNHead subclasses ATSSHead but runs its own per-level convs.
    cfg = dict(x=dict(mode='cross_head', student='bbox_head',
                      teacher='bbox_head', reused_teacher_head_idx=1,
                      loss_cls=dict(type='KDQualityFocalLoss'),
                      loss_reg=dict(type='mmdet.GIoULoss')))
    with pytest.raises(ValueError, match="is RTMDetSepBNHead, not a "
                       'GFLHead, ATSSHead, RetinaHead or FCOSHead'):
        build_distiller('det', cfg, student=tiny_rtmdet(0.125, 16),
                        teacher=tiny_rtmdet(0.125, 16))
