"""CrossKD (mode='cross_head'): student head features through the teacher's
GFL (ATSS, RetinaNet, FCOS) head, distilled towards the teacher's own
predictions."""
import copy

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_distiller, tiny_faster_rcnn

IDX = 1  # crossing after the first of two stacked convs
CROSSKD = dict(crosskd=dict(
    mode='cross_head', student='bbox_head', teacher='bbox_head',
    reused_teacher_head_idx=IDX,
    loss_cls=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0),
    loss_reg=dict(type='KDKLDivLoss', T=1.0, class_reduction='sum',
                  loss_weight=4.0)))
LEVELS = 5


def gfl(fpn_channels=32, feat_channels=64, stacked_convs=2, num_classes=3,
        **head):
    """A GFL R18-FPN spec with a two-conv head, no pretraining."""
    return dict(
        config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        backbone=dict(depth=18, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, feat_channels=feat_channels,
                       stacked_convs=stacked_convs, num_classes=num_classes,
                       **head))


def dense(config, fpn_channels=32, stacked_convs=2):
    """An R18-FPN spec of another mmdet dense detector, two-conv head."""
    return dict(
        config=config,
        backbone=dict(depth=18, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, feat_channels=64,
                       stacked_convs=stacked_convs, num_classes=3))


def retina(fpn_channels):
    return dense('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
                 fpn_channels)


def atss(fpn_channels):
    return dense('mmdet::atss/atss_r50_fpn_1x_coco.py', fpn_channels)


FCOS = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'


@pytest.fixture(scope='module')
def distiller():
    torch.manual_seed(0)
    model = build_distiller('det', CROSSKD, student=gfl(32),
                            teacher=gfl(64))
    # the teacher's GN affine parameters and Scales off their defaults, so
    # that a mix-up of student/teacher modules would show in the values
    with torch.no_grad():
        for name, p in model.teacher.bbox_head.named_parameters():
            if 'gn' in name or 'scales' in name:
                p.add_(torch.rand_like(p) * 0.5)
    return model


@pytest.fixture
def model(distiller):
    distiller.zero_grad(set_to_none=True)
    yield distiller.train()
    distiller.zero_grad(set_to_none=True)


def run(model, batch):
    """KD losses of one step and the student head's FPN input."""
    seen = []
    handle = model.student.bbox_head.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0]))
    data = model.data_preprocessor(batch, True)
    try:
        losses = model(**data, mode='loss')
    finally:
        handle.remove()
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd_')}
    return kd, seen[0], data


def run_with_scaled(model, batch, weight: torch.Tensor) -> dict:
    """KD losses of one step with ``weight`` scaled by -3 (then restored)."""
    with torch.no_grad():
        saved = weight.clone()
        weight.mul_(-3.0)
    try:
        return run(model, batch)[0]
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def official_align(s, t):
    """The official per-channel alignment, written as in the paper's code:
    (C, N*H*W) statistics."""
    n, c, h, w = s.shape
    s2 = s.permute(1, 0, 2, 3).reshape(c, -1)
    t2 = t.permute(1, 0, 2, 3).reshape(c, -1)
    out = (s2 - s2.mean(-1, keepdim=True)) / (s2.std(-1, keepdim=True) +
                                              1e-6)
    out = out * t2.std(-1, keepdim=True) + t2.mean(-1, keepdim=True)
    return out.reshape(c, n, h, w).permute(1, 0, 2, 3)


def held(conv_module, x):
    """What the official code holds after a head conv: the ConvModule's
    output *with* its ReLU (the official code keeps the tensor before
    calling the activation, which is in place, so it is activated too)."""
    return conv_module(x)


def crossed_branch_feats(s_head, t_head, xs, xt):
    """[cls, reg] features of one level crossed by hand after the first
    head conv: the student's held output aligned to the teacher's, the
    ReLU applied once more, then the teacher's second conv."""
    feats = []
    for branch in ('cls_convs', 'reg_convs'):
        s_convs, t_convs = getattr(s_head, branch), getattr(t_head, branch)
        f = F.relu(official_align(held(s_convs[0], xs), held(t_convs[0], xt)))
        feats.append(t_convs[1](f))
    return feats


def direct_crossed(model, x_S, x_T):
    """Crossed predictions, computed by hand through the teacher's head."""
    s_head, t_head = model.student.bbox_head, model.teacher.bbox_head
    out = []
    for lvl, (xs, xt) in enumerate(zip(x_S, x_T)):
        feats = crossed_branch_feats(s_head, t_head, xs, xt)
        out.append((t_head.gfl_cls(feats[0]),
                    t_head.scales[lvl](t_head.gfl_reg(feats[1]))))
    return out


def direct_kd(crossed, teacher_out, num_pos, num_classes=3, bins=17):
    """CrossKD's losses written out: QFL towards sigmoid(teacher) / num_pos;
    bin-summed KL weighted by sigmoid(max teacher logit), *4 (loss_weight)
    / 4 (sides) / the sum of those weights over all levels."""
    cls_total, reg_num, reg_den = 0., 0., 0.
    for (cls_x, box_x), cls_t, box_t in zip(crossed, *teacher_out):
        cls_x = cls_x.permute(0, 2, 3, 1).reshape(-1, num_classes)
        cls_t = cls_t.permute(0, 2, 3, 1).reshape(-1, num_classes)
        p_t, p_x = cls_t.sigmoid(), cls_x.sigmoid()
        bce = -(p_t * p_x.log() + (1 - p_t) * (1 - p_x).log())
        cls_total = cls_total + (bce * (p_x - p_t).abs()).sum() / num_pos
        box_x = box_x.permute(0, 2, 3, 1).reshape(-1, 4, bins)
        box_t = box_t.permute(0, 2, 3, 1).reshape(-1, 4, bins)
        q_t = box_t.softmax(-1)
        kl = (q_t * (q_t.log() - box_x.log_softmax(-1))).sum(-1)  # (A, 4)
        w = cls_t.max(1)[0].sigmoid()
        reg_num = reg_num + 4.0 * (kl * w[:, None]).sum() / 4
        reg_den = reg_den + w.sum()
    return cls_total, reg_num / reg_den


def test_keys_and_no_teacher_in_state_dict(model, det_batch):
    term = model.distill_terms['crosskd']
    assert term.loss_keys == [f'loss_kd_crosskd_{k}_l{i}'
                              for i in range(LEVELS) for k in ('cls', 'reg')]
    assert term.teacher_head is model.teacher.bbox_head
    assert term.student_head is model.student.bbox_head
    assert list(term.state_dict()) == []
    assert not any(k.startswith('distill_terms') for k in model.state_dict())
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_total_kd_matches_a_direct_computation(model, det_batch):
    kd, x_S, data = run(model, det_batch)
    assert set(kd) == set(model.distill_terms['crosskd'].loss_keys)
    with torch.no_grad():
        x_T = model.teacher.extract_feat(data['inputs'])
        teacher_out = model.teacher.bbox_head(x_T)
        crossed = direct_crossed(model, x_S, x_T)
        # the student's ATSS assignment (equal-size images: every anchor
        # is valid, label weights all 1)
        head = model.student.bbox_head
        metas = [s.metainfo for s in data['data_samples']]
        gts = [s.gt_instances for s in data['data_samples']]
        anchors, valid = head.get_anchors(
            [c.shape[-2:] for c in teacher_out[0]], metas, device='cpu')
        targets = head.get_targets(anchors, valid, gts, metas)
        assert all(bool((lw == 1).all()) for lw in targets[2])
        num_pos = float(targets[5])
        assert num_pos > 0
        cls_ref, reg_ref = direct_kd(crossed, teacher_out, num_pos)
    cls = sum(kd[f'loss_kd_crosskd_cls_l{i}'] for i in range(LEVELS))
    reg = sum(kd[f'loss_kd_crosskd_reg_l{i}'] for i in range(LEVELS))
    assert cls.item() > 0 and reg.item() > 0
    torch.testing.assert_close(cls.detach(), cls_ref, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(reg.detach(), reg_ref, rtol=1e-4, atol=1e-7)


def test_crossed_path_uses_the_teacher_head_weights(model, det_batch):
    """Changing a teacher conv *after* the crossing point changes the
    crossed loss; the student's own conv there plays no part."""
    ref, _, _ = run(model, det_batch)
    key = 'loss_kd_crosskd_cls_l0'
    student_conv = model.student.bbox_head.cls_convs[IDX].conv.weight
    teacher_conv = model.teacher.bbox_head.cls_convs[IDX].conv.weight
    same = run_with_scaled(model, det_batch, student_conv)
    torch.testing.assert_close(same[key], ref[key])
    changed = run_with_scaled(model, det_batch, teacher_conv)
    assert not torch.allclose(changed[key], ref[key])


def test_grads_reach_student_before_crossing_never_teacher(model,
                                                           det_batch):
    from mmengine.optim import build_optim_wrapper
    kd, _, _ = run(model, det_batch)
    sum(kd.values()).backward()
    s = model.student
    head = s.bbox_head
    for convs in (head.cls_convs, head.reg_convs):
        assert convs[0].conv.weight.grad.abs().sum() > 0
        # after the crossing point the student's own conv is not used
        assert convs[IDX].conv.weight.grad is None
    assert head.gfl_cls.weight.grad is None
    assert s.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert s.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    before = copy.deepcopy(model.teacher.state_dict())
    optim = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    optim.step()
    for k, v in model.teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    assert all(p.grad is None for p in model.teacher.parameters())


def test_crossing_at_zero_and_at_the_last_conv_runs():
    """idx=0: the FPN features themselves are aligned (same in_channels);
    idx=stacked_convs: only the teacher's predictors are reused."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    batch = demo_mm_inputs(batch_size=1, image_shapes=(3, 64, 64),
                           num_items=[2], num_classes=3)
    for idx in (0, 2):
        terms = copy.deepcopy(CROSSKD)
        terms['crosskd']['reused_teacher_head_idx'] = idx
        m = build_distiller('det', terms, student=gfl(32, 64),
                            teacher=gfl(32, 64)).train()
        kd, _, _ = run(m, batch)
        total = sum(kd.values())
        assert torch.isfinite(total) and total.item() > 0
        total.backward()
        assert all(p.grad is None for p in m.teacher.parameters())


@pytest.mark.parametrize('student, teacher, cfg, match', [
    (gfl(32), gfl(64, stacked_convs=3), {}, 'differ in stacked_convs'),
    (gfl(32), gfl(64, num_classes=4), {}, 'differ in num_classes'),
    (gfl(32), gfl(64, reg_max=8), {}, 'differ in reg_max'),
    (gfl(32), gfl(64, feat_channels=32), {}, 'have 64 channels'),
    (gfl(32), gfl(64), dict(reused_teacher_head_idx=3),
     r'int in \[0, 2\]'),
    (gfl(32), gfl(64), dict(reused_teacher_head_idx=0), 'have 32 channels'),
    (gfl(32), retina(64), {}, 'GFLHead and RetinaHead; give both the same'),
    (retina(32), retina(64),
     dict(loss_center=dict(type='mmdet.CrossEntropyLoss')),
     'loss_center is the centerness KD of ATSS heads'),
    (gfl(32), tiny_faster_rcnn(64), {},
     "the teacher has no layer 'bbox_head'"),
    (tiny_faster_rcnn(32), tiny_faster_rcnn(64),
     dict(student='rpn_head', teacher='rpn_head'),
     'is RPNHead, not a GFLHead, ATSSHead, RetinaHead or FCOSHead'),
    (dense(FCOS), retina(64), {}, 'FCOSHead and RetinaHead; give both'),
    (dense(FCOS), dense(FCOS),
     dict(loss_center=dict(type='mmdet.CrossEntropyLoss')),
     'loss_center is the centerness KD of ATSS heads'),
])
def test_heads_that_cannot_be_crossed(student, teacher, cfg, match):
    terms = dict(crosskd=dict(CROSSKD['crosskd'], **cfg))
    with pytest.raises(ValueError, match=match) as err:
        build_distiller('det', terms, student=student, teacher=teacher)
    assert "'crosskd'" in str(err.value)


def test_config_errors():
    bad = dict(CROSSKD['crosskd'])
    bad.pop('loss_reg')
    with pytest.raises(KeyError, match='needs `loss_reg`'):
        build_distiller('det', dict(crosskd=bad), student=gfl(32),
                        teacher=gfl(64))
    with pytest.raises(KeyError, match='unknown key'):
        build_distiller('det', dict(crosskd=dict(CROSSKD['crosskd'],
                                                 reused_idx=1)),
                        student=gfl(32), teacher=gfl(64))


def test_cross_head_losses_fp32_under_bf16(model, det_batch):
    """Under bf16 autocast the crossed path runs in bf16, the CrossKD losses
    in float32, finite, close to the float32 values, with finite grads."""
    ref, _, _ = run(model, det_batch)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        kd, _, _ = run(model, det_batch)
    assert set(kd) == set(ref)
    for key, value in kd.items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value), key
        torch.testing.assert_close(value, ref[key], rtol=0.15, atol=1e-3,
                                   msg=key)
    sum(kd.values()).backward()
    grad = model.student.bbox_head.cls_convs[0].conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert all(p.grad is None for p in model.teacher.parameters())


def direct_predictions(family, t_head, lvl, feats):
    if family == 'atss':
        return (t_head.atss_cls(feats[0]),
                t_head.scales[lvl](t_head.atss_reg(feats[1])),
                t_head.atss_centerness(feats[1]))
    return t_head.retina_cls(feats[0]), t_head.retina_reg(feats[1])


def flat(x, k):
    return x.permute(0, 2, 3, 1).reshape(-1, k)


@pytest.mark.parametrize('family', ['retina', 'atss'])
def test_anchor_heads_match_a_direct_computation(family, det_batch):
    """RetinaNet / ATSS: QFL on the crossed class scores (label weights of
    the student's assignment), GIoU between the boxes the crossed and the
    teacher's deltas decode to, weighted by sigmoid(max teacher logit),
    ATSS: sigmoid BCE towards the teacher's centerness at the positives;
    all / the positive count."""
    from mmdet.structures.bbox import bbox_overlaps
    torch.manual_seed(0)
    spec = retina if family == 'retina' else atss
    terms = dict(crosskd=dict(CROSSKD['crosskd'], loss_reg=dict(
        type='mmdet.GIoULoss', loss_weight=1.0)))
    if family == 'atss':
        terms['crosskd']['loss_center'] = dict(
            type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)
    model = build_distiller('det', terms, student=spec(32),
                            teacher=spec(64)).train()
    kd, x_S, data = run(model, det_batch)
    s_head, t_head = model.student.bbox_head, model.teacher.bbox_head
    with torch.no_grad():
        x_T = model.teacher.extract_feat(data['inputs'])
        preds_T = t_head(x_T)
        metas = [s.metainfo for s in data['data_samples']]
        gts = [s.gt_instances for s in data['data_samples']]
        anchors, valid = s_head.get_anchors(
            [c.shape[-2:] for c in preds_T[0]], metas, device='cpu')
        targets = s_head.get_targets(anchors, valid, gts, metas)
        if family == 'atss':  # anchors per level first (N, A, 4)
            anchors = [[a[i] for a in targets[0]] for i in range(2)]
            targets = targets[1:]
        labels, lws, num_pos = targets[0], targets[1], float(targets[4])
        assert num_pos > 0
        ref = dict(cls=0., reg=0., center=0.)
        for lvl in range(LEVELS):
            feats = crossed_branch_feats(s_head, t_head, x_S[lvl],
                                         x_T[lvl])
            pred_X = direct_predictions(family, t_head, lvl, feats)
            cls_x, cls_t = flat(pred_X[0], 3), flat(preds_T[0][lvl], 3)
            lw = lws[lvl].reshape(-1)
            p_t, p_x = cls_t.sigmoid(), cls_x.sigmoid()
            bce = -(p_t * p_x.log() + (1 - p_t) * (1 - p_x).log())
            ref['cls'] += (bce * (p_x - p_t).abs() * lw[:, None]).sum()
            a = torch.cat([img[lvl] for img in anchors])
            giou = bbox_overlaps(
                s_head.bbox_coder.decode(a, flat(pred_X[1], 4)),
                s_head.bbox_coder.decode(a, flat(preds_T[1][lvl], 4)),
                mode='giou', is_aligned=True, eps=1e-6)
            w = cls_t.max(1)[0].sigmoid() * (lw > 0)
            ref['reg'] += (w * (1 - giou)).sum()
            if family == 'atss':
                pos = labels[lvl].reshape(-1) < 3
                c_x = flat(pred_X[2], 1)[pos, 0]
                q_t = flat(preds_T[2][lvl], 1)[pos, 0].sigmoid()
                ref['center'] += F.binary_cross_entropy_with_logits(
                    c_x, q_t, reduction='sum')
    kinds = ('cls', 'reg', 'center') if family == 'atss' else ('cls', 'reg')
    assert set(kd) == {f'loss_kd_crosskd_{k}_l{i}' for k in kinds
                       for i in range(LEVELS)}
    for kind in kinds:
        ours = sum(kd[f'loss_kd_crosskd_{kind}_l{i}'] for i in range(LEVELS))
        assert ours.item() > 0, kind
        torch.testing.assert_close(ours.detach(), ref[kind] / num_pos,
                                   rtol=1e-4, atol=1e-7, msg=kind)
    sum(kd.values()).backward()
    assert s_head.cls_convs[0].conv.weight.grad.abs().sum() > 0
    assert s_head.reg_convs[0].conv.weight.grad.abs().sum() > 0
    assert s_head.cls_convs[1].conv.weight.grad is None
    assert all(p.grad is None for p in model.teacher.parameters())


def fcos(fpn_channels, **head):
    """A tiny FCOS (caffe R18-FPN, GN head with two convs)."""
    spec = dense(FCOS, fpn_channels)
    spec['bbox_head'].update(head)
    return spec


FCOS_KD = dict(crosskd=dict(
    CROSSKD['crosskd'],
    loss_cls=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=0.4),
    loss_reg=dict(type='mmdet.IoULoss', loss_weight=0.75)))


def direct_fcos_predictions(t_head, lvl, feats):
    """The teacher FCOS head's predictors written out (as forward_single)."""
    box = t_head.scales[lvl](t_head.conv_reg(feats[1])).float()
    if t_head.norm_on_bbox:
        box = box.clamp(min=0)
        if not t_head.training:
            box = box * t_head.strides[lvl]
    else:
        box = box.exp()
    return t_head.conv_cls(feats[0]), box


def direct_fcos_denorm(s_head, preds_T, data):
    """Points, and the sum of the student's centerness targets at its
    positives (the official FCOS avg_factor)."""
    gts = [s.gt_instances for s in data['data_samples']]
    points = s_head.prior_generator.grid_priors(
        [c.shape[-2:] for c in preds_T[0]], dtype=torch.float32,
        device='cpu')
    labels, targets = s_head.get_targets(points, gts)
    labels, targets = torch.cat(labels), torch.cat(targets)
    t = targets[labels < 3]
    lr, tb = t[:, [0, 2]], t[:, [1, 3]]
    ctr = ((lr.min(-1)[0] / lr.max(-1)[0]) *
           (tb.min(-1)[0] / tb.max(-1)[0])).sqrt()
    return points, ctr.sum().item()


@pytest.mark.parametrize('head', [
    {}, dict(norm_on_bbox=True, centerness_on_reg=True)])
def test_fcos_matches_a_direct_computation(head, det_batch):
    """FCOS (official CrossKDFCOS): QFL on the crossed class scores at every
    location (x0.4), IoU loss (log, x0.75) between the boxes the crossed and
    the teacher's distances decode to on every point, weighted by
    sigmoid(max teacher logit); both / the sum of the student's centerness
    targets at its positives; no centerness KD."""
    from mmdet.structures.bbox import bbox_overlaps
    torch.manual_seed(0)
    model = build_distiller('det', FCOS_KD, student=fcos(32, **head),
                            teacher=fcos(64, **head)).train()
    with torch.no_grad():  # teacher Scales off 1: a mix-up would show
        for scale in model.teacher.bbox_head.scales:
            scale.scale.add_(torch.rand(()) * 0.5)
    kd, x_S, data = run(model, det_batch)
    s_head, t_head = model.student.bbox_head, model.teacher.bbox_head
    with torch.no_grad():
        x_T = model.teacher.extract_feat(data['inputs'])
        preds_T = t_head(x_T)
        points, denorm = direct_fcos_denorm(s_head, preds_T, data)
        assert denorm > 0
        ref = dict(cls=0., reg=0.)
        n = x_S[0].size(0)
        for lvl in range(LEVELS):
            feats = crossed_branch_feats(s_head, t_head, x_S[lvl],
                                         x_T[lvl])
            cls_x, box_x = direct_fcos_predictions(t_head, lvl, feats)
            cls_x, cls_t = flat(cls_x, 3), flat(preds_T[0][lvl], 3)
            p_t, p_x = cls_t.sigmoid(), cls_x.sigmoid()
            bce = -(p_t * p_x.log() + (1 - p_t) * (1 - p_x).log())
            ref['cls'] += 0.4 * (bce * (p_x - p_t).abs()).sum()
            pts = points[lvl].repeat(n, 1)
            iou = bbox_overlaps(
                s_head.bbox_coder.decode(pts, flat(box_x, 4)),
                s_head.bbox_coder.decode(pts, flat(preds_T[1][lvl], 4)),
                is_aligned=True).clamp(min=1e-6)
            w = cls_t.max(1)[0].sigmoid()
            ref['reg'] += 0.75 * (w * -iou.log()).sum()
    assert set(kd) == {f'loss_kd_crosskd_{k}_l{i}' for k in ('cls', 'reg')
                       for i in range(LEVELS)}
    for kind in ('cls', 'reg'):
        ours = sum(kd[f'loss_kd_crosskd_{kind}_l{i}'] for i in range(LEVELS))
        assert ours.item() > 0, kind
        torch.testing.assert_close(ours.detach(), ref[kind] / denorm,
                                   rtol=1e-4, atol=1e-7, msg=kind)
    sum(kd.values()).backward()
    assert s_head.cls_convs[0].conv.weight.grad.abs().sum() > 0
    assert s_head.reg_convs[0].conv.weight.grad.abs().sum() > 0
    assert model.student.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    for name in ('cls_convs.1.conv', 'reg_convs.1.conv', 'conv_cls',
                 'conv_reg', 'conv_centerness'):
        mod = dict(s_head.named_modules())[name]
        assert mod.weight.grad is None, name
    assert all(p.grad is None for p in model.teacher.parameters())


def test_fcos_crossed_path_uses_the_teacher_predictors(det_batch):
    """Changing the teacher's conv_reg changes the crossed box loss; the
    student's own conv_reg plays no part."""
    torch.manual_seed(0)
    model = build_distiller('det', FCOS_KD, student=fcos(32),
                            teacher=fcos(64)).train()
    key = 'loss_kd_crosskd_reg_l0'
    ref, _, _ = run(model, det_batch)
    for head, same in ((model.student.bbox_head, True),
                       (model.teacher.bbox_head, False)):
        out = run_with_scaled(model, det_batch, head.conv_reg.weight)
        assert torch.allclose(out[key], ref[key]) is same
