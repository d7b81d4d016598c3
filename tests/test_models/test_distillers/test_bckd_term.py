"""mode='bckd' (BCKD, Yang et al. ICCV 2023) on tiny GFL detectors."""
import re

import pytest
import torch
from mmengine.logging import MessageHub

from tests.conftest import build_distiller, tiny_faster_rcnn
from tests.test_models.test_distillers.helpers import StubRecords
from tests.test_models.test_distillers.test_head_terms import (
    preprocess,
    tiny_gfl,
)
from tests.test_models.test_losses.test_bckd_loss import (
    official_cls_kd,
    official_reg_kd,
)

BCKD = dict(bckd=dict(mode='bckd', student='bbox_head', teacher='bbox_head'))


@pytest.fixture(scope='module')
def bckd_distiller():
    torch.manual_seed(0)
    return build_distiller('det', BCKD, student=tiny_gfl(64),
                           teacher=tiny_gfl(64))


@pytest.fixture
def bckd_model(bckd_distiller):
    bckd_distiller.zero_grad(set_to_none=True)
    yield bckd_distiller.train()
    bckd_distiller.zero_grad(set_to_none=True)


def direct_bckd(model, data):
    """The official per-level formulas on the heads' outputs, with the
    student head's own ATSS targets."""
    head = model.student.bbox_head
    samples = data['data_samples']
    gts = [s.gt_instances for s in samples]
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        cls_s, box_s = head(model.student.extract_feat(data['inputs']))
        cls_t, box_t = model.teacher.bbox_head(
            model.teacher.extract_feat(data['inputs']))
        anchors, valid = head.get_anchors(
            [c.shape[-2:] for c in cls_s], metas, device='cpu')
        anchors, labels, weights, _, _, avg = head.get_targets(
            anchors, valid, gts, metas)
    avg = max(float(avg), 1.0)
    out, bins = {}, 4 * (head.reg_max + 1)
    for lvl, stride in enumerate(head.prior_generator.strides):
        c = head.num_classes
        s = cls_s[lvl].permute(0, 2, 3, 1).reshape(-1, c)
        t = cls_t[lvl].permute(0, 2, 3, 1).reshape(-1, c)
        bs = box_s[lvl].permute(0, 2, 3, 1).reshape(-1, bins)
        bt = box_t[lvl].permute(0, 2, 3, 1).reshape(-1, bins)
        lab, lw = labels[lvl].reshape(-1), weights[lvl].reshape(-1)
        if not (lab < c).any():
            out[lvl] = (0.0, 0.0)
            continue
        points = head.anchor_center(anchors[lvl].reshape(-1, 4)) / stride[0]
        gap = (t.sigmoid() - s.sigmoid()).abs().max(dim=1)[0] * lw
        out[lvl] = (official_cls_kd(s, t, lw, avg).item(),
                    4.0 * official_reg_kd(bs, bt, points, gap, avg).item())
    return out


def test_bckd_value_matches_a_direct_computation(det_batch, bckd_model):
    model = bckd_model
    data = preprocess(model, det_batch)
    losses = model(**data, mode='loss')
    ref = direct_bckd(model, data)
    assert len(ref) == 5 and any(v[0] > 0 and v[1] > 0 for v in ref.values())
    for lvl, (cls_ref, reg_ref) in ref.items():
        cls = losses[f'loss_kd_bckd_cls_l{lvl}'].item()
        reg = losses[f'loss_kd_bckd_reg_l{lvl}'].item()
        assert cls == pytest.approx(cls_ref, rel=1e-4, abs=1e-7)
        assert reg == pytest.approx(reg_ref, rel=1e-4, abs=1e-7)


def test_bckd_grads_reach_student_head_never_teacher(det_batch, bckd_model):
    model = bckd_model
    losses = model(**preprocess(model, det_batch), mode='loss')
    for part, conv in (('cls', 'gfl_cls'), ('reg', 'gfl_reg')):
        model.zero_grad(set_to_none=True)
        kd = sum(v for k, v in losses.items()
                 if k.startswith(f'loss_kd_bckd_{part}'))
        kd.backward(retain_graph=True)
        head = model.student.bbox_head
        assert getattr(head, conv).weight.grad.abs().sum() > 0
        assert model.student.neck.fpn_convs[0].conv.weight.grad is not None
        assert all(p.grad is None for p in model.teacher.parameters())


def test_bckd_keys_and_switching_one_loss_off():
    torch.manual_seed(0)
    model = build_distiller('det', dict(bckd=dict(
        BCKD['bckd'], loss_cls=None,
        loss_reg=dict(type='BCKDRegLoss', loss_weight=2.0))),
        student=tiny_gfl(64), teacher=tiny_gfl(64))
    term = model.distill_terms['bckd']
    assert term.loss_keys == [f'loss_kd_bckd_reg_l{i}' for i in range(5)]
    assert term.loss_cls is None and term.loss_reg.loss_weight == 2.0


def test_bckd_mode_validation():
    with pytest.raises(ValueError, match=r"'bckd'.*not a GFLHead"):
        build_distiller('det', BCKD, teacher=tiny_faster_rcnn(64),
                        student=tiny_gfl(64))
    with pytest.raises(ValueError, match=r"'bckd'.*num_classes"):
        build_distiller('det', BCKD, student=tiny_gfl(64),
                        teacher=tiny_gfl(64, num_classes=4))
    teacher = tiny_gfl(64)
    teacher['bbox_head']['reg_max'] = 8
    with pytest.raises(ValueError, match=r"'bckd'.*reg_max \(16 vs 8\)"):
        build_distiller('det', BCKD, student=tiny_gfl(64), teacher=teacher)
    with pytest.raises(ValueError, match='nothing to distil'):
        build_distiller('det', dict(bckd=dict(
            BCKD['bckd'], loss_cls=None, loss_reg=None)),
            student=tiny_gfl(64), teacher=tiny_gfl(64))
    with pytest.raises(KeyError, match="unknown key.*'loss'"):
        build_distiller('det', dict(bckd=dict(
            BCKD['bckd'], loss=dict(type='BCKDClsLoss'))),
            student=tiny_gfl(64), teacher=tiny_gfl(64))


def test_nan_in_bckd_stops_naming_the_term(det_batch, bckd_model):
    model = bckd_model
    handle = model.distill_terms['bckd'].loss_reg.register_forward_hook(
        lambda mod, args, out: out * float('nan'))
    MessageHub.get_instance('test_bckd_nan').update_info('iter', 0)
    try:
        with pytest.raises(FloatingPointError) as info:
            model(**preprocess(model, det_batch), mode='loss')
    finally:
        handle.remove()
    msg = str(info.value)
    assert msg.startswith("distillation term(s) ['bckd'] not finite"), msg
    bad = re.findall(r'(loss_kd_\w+) = nan', msg)
    assert bad and all(re.fullmatch(r'loss_kd_bckd_reg_l\d', k)
                       for k in bad), msg


def _level_calls(n_levels=2, c=3, bins=68, cast=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    calls, cls_t, box_t = [], [], []
    for lvl in range(n_levels):
        h = 4 // (lvl + 1)
        labels = torch.full((2, h * h), c)
        labels[0, lvl] = lvl % c
        calls.append(dict(
            cls_score=torch.randn(2, c, h, h, generator=gen),
            bbox_pred=torch.randn(2, bins, h, h, generator=gen),
            labels=labels, label_weights=torch.ones(2, h * h),
            avg_factor=2.0))
        cls_t.append(torch.randn(2, c, h, h, generator=gen))
        box_t.append(torch.randn(2, bins, h, h, generator=gen))
    return calls, cls_t, box_t


def test_bckd_term_fp32_under_bf16(bckd_distiller):
    """bf16 head outputs under autocast: both losses computed in fp32."""
    term = bckd_distiller.distill_terms['bckd']
    calls, cls_t, box_t = _level_calls()
    bf = [dict(k, cls_score=k['cls_score'].bfloat16().requires_grad_(),
               bbox_pred=k['bbox_pred'].bfloat16().requires_grad_())
          for k in calls]
    teacher = [dict(_return=([t.bfloat16() for t in cls_t],
                             [t.bfloat16() for t in box_t]))]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = term(StubRecords(bf, teacher))
    up = [dict(k, cls_score=k['cls_score'].float(),
               bbox_pred=k['bbox_pred'].float()) for k in bf]
    ref = term(StubRecords(up, [dict(_return=(
        [t.bfloat16().float() for t in cls_t],
        [t.bfloat16().float() for t in box_t]))]))
    assert set(out) == {f'loss_kd_bckd_{p}_l{i}' for p in ('cls', 'reg')
                        for i in range(2)}
    for key, value in out.items():
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, ref[key])
    sum(out.values()).backward()
    assert all(torch.isfinite(k['cls_score'].grad).all() for k in bf)
