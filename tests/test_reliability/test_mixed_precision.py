"""Every registered loss (and connectors) in bf16 autocast on CPU: the
distillation terms are computed in float32, finite, with finite grads and
close to the float32 values.

mmengine's ``AmpOptimWrapper`` (what ``tools/train.py --amp`` selects)
needs a GPU/NPU, so on CPU the distiller's loss runs inside
``torch.autocast('cpu', dtype=torch.bfloat16)``, the region that wrapper
opens around ``model(mode='loss')``.
"""
import inspect

import pytest
import torch

import visionkd.models.losses as losses_pkg
from tests.conftest import build_distiller, tiny_retinanet

BOT = dict(student='decode_head.bottleneck', teacher='decode_head.bottleneck')
SEG = dict(student='decode_head.conv_seg', teacher='decode_head.conv_seg')
SEG_TERMS = dict(
    cwd=dict(SEG, loss=dict(type='ChannelWiseDivergence', tau=4.0)),
    kl=dict(SEG, loss=dict(type='KLDivergence', tau=4.0)),
    pixel=dict(SEG, loss=dict(type='PixelWiseKDLoss')),
    dist=dict(SEG, loss=dict(type='DISTLoss')),
    pair=dict(BOT, loss=dict(type='PairWiseAffinityLoss')),
    ifvd=dict(BOT, loss=dict(type='IFVDLoss', num_classes=19)),
    bpkd=dict(SEG, loss=dict(type='BPKDLoss')),
    cirkd_mb=dict(BOT, loss=dict(type='CIRKDMiniBatchLoss')),
    cirkd_mem=dict(BOT, loss=dict(
        type='CIRKDMemoryLoss', num_classes=19, pixel_memory_size=64,
        region_memory_size=8, pixel_contrast_size=32,
        region_contrast_size=8)),
    mgd=dict(BOT, loss=dict(type='MGDLoss')),
    af_dcd=dict(BOT, loss=dict(type='AfDCDLoss', num_groups=2, pool_size=0,
                               patch_size=(2, 2))),
    mse=dict(BOT, connector=[dict(type='ConvConnector'),
                             dict(type='ResizeConnector')],
             loss=dict(type='FeatureMSELoss')),
    at=dict(BOT, loss=dict(type='ATLoss')),
    pkd=dict(BOT, connector=dict(type='ConvConnector'),
             loss=dict(type='PKDLoss')))
NECK = dict(student='neck', teacher='neck', levels=[0, 1])
DET_TERMS = dict(
    fgd=dict(NECK, loss=dict(type='FGDLoss')),
    fgfi=dict(NECK, loss=dict(type='FGFILoss')),
    defeat=dict(NECK, loss=dict(type='DeFeatLoss', strides=[8, 16])))
#: value depends on a memory bank the first pass updated
STATEFUL = {'cirkd_mem'}


def test_every_registered_loss_is_covered():
    registered = {
        name for name in losses_pkg.__all__
        if inspect.isclass(getattr(losses_pkg, name))
        and issubclass(getattr(losses_pkg, name), torch.nn.Module)
    }
    used = {t['loss']['type'] for t in {**SEG_TERMS, **DET_TERMS}.values()}
    # RoIKDLoss needs a two-stage model (whose CPU NMS has no bf16 kernel):
    # covered through its head term by test_roi_term_loss_fp32_under_bf16
    used.add('RoIKDLoss')
    # BCKD's losses run through mode='bckd' on GFL heads: covered by
    # test_bckd_term.py::test_bckd_term_fp32_under_bf16
    used.update(('BCKDClsLoss', 'BCKDRegLoss'))
    # CrossKD's losses run through mode='cross_head' on GFL heads: covered
    # by test_cross_head_term.py::test_cross_head_losses_fp32_under_bf16
    used.update(('KDQualityFocalLoss', 'KDKLDivLoss'))
    # KD-DETR's losses run through mode='detr_query' (DETR decoders):
    # covered by test_kd_detr_loss.py::test_fp32_under_bf16_through_the_term
    used.update(('KDDETRClsLoss', 'KDDETRBoxLoss'))
    # DETRDistill's losses run through mode='detr_distill': covered by
    # test_detr_distill_loss.py::test_fp32_under_bf16_through_the_term
    used.update(('DETRDistillMatchLoss', 'DETRDistillFeatureLoss'))
    assert registered <= used, registered - used


def _two_stage_stub() -> torch.nn.Module:
    """A model whose ``roi_head`` looks like a 4-class mmdet RoI head."""
    head = torch.nn.Module()
    head.bbox_roi_extractor = torch.nn.Identity()
    head.bbox_head = torch.nn.Module()
    head.bbox_head.num_classes = 4
    head._bbox_forward = None
    model = torch.nn.Module()
    model.roi_head = head
    model.with_neck = True
    return model


def test_roi_term_loss_fp32_under_bf16():
    """mode='roi': bf16 head outputs, the RoI KD loss computed in fp32."""
    from tests.test_models.test_distillers.helpers import (
        StubRecords,
        build_term,
    )
    torch.manual_seed(0)
    term = build_term('roi', dict(
        mode='roi', student='roi_head', teacher='roi_head',
        loss=dict(type='RoIKDLoss', tau=2.0)), [], [torch.zeros(1)],
        student=_two_stage_stub(), teacher=_two_stage_stub())
    n, c = 8, 4
    cls_s = torch.randn(n, c + 1, requires_grad=True)
    box_s = torch.randn(n, 4 * c, requires_grad=True)
    cls_t, box_t = torch.randn(n, c + 1), torch.randn(n, 4 * c)
    labels = torch.arange(n) % (c + 1)
    term.teacher_outputs = lambda feats, rois: dict(
        cls_score=cls_t.bfloat16(), bbox_pred=box_t.bfloat16())

    def call(cast):
        f = (lambda x: x.bfloat16()) if cast else (lambda x: x)
        return [dict(rois=torch.zeros(n, 5), cls_score=f(cls_s),
                     bbox_pred=f(box_s),
                     _return=dict(bbox_targets=(labels, )))]

    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = term(StubRecords(call(True), [torch.zeros(1)]))['loss_kd_roi']
    assert out.dtype == torch.float32 and torch.isfinite(out)
    term.teacher_outputs = lambda feats, rois: dict(
        cls_score=cls_t.bfloat16().float(),
        bbox_pred=box_t.bfloat16().float())
    ref = term(StubRecords(
        [dict(call(False)[0], cls_score=cls_s.bfloat16().float(),
              bbox_pred=box_s.bfloat16().float())],
        [torch.zeros(1)]))['loss_kd_roi']
    torch.testing.assert_close(out, ref)
    term.scale = 0.5  # what DistillLossWeightScheduleHook sets
    half = term(StubRecords(
        [dict(call(False)[0], cls_score=cls_s.bfloat16().float(),
              bbox_pred=box_s.bfloat16().float())],
        [torch.zeros(1)]))['loss_kd_roi']
    torch.testing.assert_close(half, ref * 0.5)
    out.backward()
    assert cls_s.grad is not None and torch.isfinite(cls_s.grad).all()


def run(model, data, autocast: bool):
    torch.manual_seed(0)  # same dropout / MGD masks in both passes
    model.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        losses = model(**data, mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd_')}
    return kd, losses


@pytest.mark.parametrize('kind', ['seg', 'det'])
def test_bf16_autocast_steps(kind, seg_batch, det_batch):
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    if kind == 'seg':
        model = build_distiller('seg', SEG_TERMS)
        batch = seg_batch
    else:
        # RetinaNet: mmcv's CPU NMS (Faster R-CNN's RPN in training) has
        # no bf16 kernel; on GPU, mmdet's fp16 AMP covers two-stage models
        model = build_distiller('det', DET_TERMS,
                                student=tiny_retinanet(32),
                                teacher=tiny_retinanet(64))
        batch = det_batch
    model.train()
    data = model.data_preprocessor(batch, True)
    ref, _ = run(model, data, autocast=False)
    optim = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=1e-3, momentum=0.9)))
    for step in range(2):
        kd, losses = run(model, data, autocast=True)
        assert set(kd) == set(ref)
        for key, value in kd.items():
            assert value.dtype == torch.float32, key
            assert torch.isfinite(value), key
            name = key[len('loss_kd_'):].rsplit('_l', 1)[0]
            if step == 0 and name not in STATEFUL:
                # bf16 features, fp32 loss math: within bf16's precision
                torch.testing.assert_close(value, ref[key], rtol=0.1,
                                           atol=1e-4, msg=key)
        total, _ = model.parse_losses(losses)
        optim.update_params(total)
        for name, p in model.named_parameters():
            assert p.dtype == torch.float32
            assert torch.isfinite(p).all(), name
