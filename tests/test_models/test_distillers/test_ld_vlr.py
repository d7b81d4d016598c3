"""LD's valuable localization region (mode='ld', ``loss_vlr``): the VLR
assigner on a hand-made example, the loss against a direct computation,
gradients, and the student's own task loss left untouched."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_distiller
from tests.test_models.test_distillers.test_head_terms import (
    LD_KD,
    preprocess,
    tiny_gfl,
)
from visionkd.models.task_modules import LDVLRAssigner, diou_matrix

KL = 'mmdet.KnowledgeDistillationKLDivLoss'
LD_VLR = dict(ld=dict(LD_KD['ld'],
                      loss_vlr=dict(type=KL, loss_weight=0.25, T=10)))


def row_of_anchors():
    """Five 10x10 anchors on one level, centres x = 0, 5, 10, 15, 20."""
    cx = torch.tensor([0., 5., 10., 15., 20.])
    return torch.stack([cx - 5, cx.new_full((5, ), -5.), cx + 5,
                        cx.new_full((5, ), 5.)], dim=1)


def test_vlr_on_a_hand_made_example():
    """One GT box equal to anchor 1. Hand computation:

    IoUs with the GT: [1/3, 1, 1/3, 0, 0]; the topk=3 anchors nearest to its
    centre are 1, 0, 2, so the ATSS threshold is mean + std of
    (1, 1/3, 1/3) = 5/9 + sqrt(12)/9. DIoU of anchors 0 and 2:
    1/3 - 5^2 / (15^2 + 10^2) = 1/3 - 1/13, inside [0.25 thr, thr);
    anchor 1 (DIoU 1 >= thr, the ATSS positive) and anchors 3, 4
    (DIoU < 0) are out. VLR weights: the IoU, 1/3, at anchors 0 and 2.
    """
    anchors = row_of_anchors()
    gt = torch.tensor([[0., -5., 10., 5.]])
    thr = 5 / 9 + math.sqrt(12) / 9
    diou = diou_matrix(anchors, gt)[:, 0]
    torch.testing.assert_close(diou[[0, 2]],
                               torch.full((2, ), 1 / 3 - 1 / 13))
    assigner = LDVLRAssigner(topk=3)
    iou = assigner.assign(anchors, [5], gt)
    hand_iou = torch.tensor([[1 / 3], [1.], [1 / 3], [0.], [0.]])
    torch.testing.assert_close(
        assigner.thresholds(anchors, [5], gt, hand_iou), torch.tensor([thr]))
    torch.testing.assert_close(iou, torch.tensor([1 / 3, 0, 1 / 3, 0, 0]))
    # the lower bound: 0.3 * thr = 0.282 > 1/3 - 1/13 = 0.256 -> empty
    assert LDVLRAssigner(topk=3, lower_ratio=0.3).assign(
        anchors, [5], gt).eq(0).all()
    # no GT -> no VLR
    assert assigner.assign(anchors, [5], gt[:0]).eq(0).all()


def test_vlr_thresholds_use_topk_per_level_and_ignore():
    """Two levels of the same anchors: topk=1 takes anchor 1 of each level
    (IoU 1 twice, std 0, thr 1): anchors 0, 2 of both levels are in the VLR.
    An ignored box covering anchor 1 (IoF 1 > 0.9; anchors 0, 2: 0.5) takes
    it out of the candidates: anchor 0 or 2 (IoU 1/3) is nearest on each
    level, the threshold drops to 1/3."""
    anchors = torch.cat([row_of_anchors()] * 2)
    gt = torch.tensor([[0., -5., 10., 5.]])
    w = LDVLRAssigner(topk=1).assign(anchors, [5, 5], gt)
    torch.testing.assert_close(w, torch.tensor([1 / 3, 0, 1 / 3, 0, 0] * 2))
    assigner = LDVLRAssigner(topk=1, ignore_iof_thr=0.9)
    ignore = gt.clone()
    iou = torch.tensor([[1 / 3], [1.], [1 / 3], [0.], [0.]] * 2)
    thr = assigner.thresholds(anchors, [5, 5], gt, iou, ignore)
    torch.testing.assert_close(thr, torch.tensor([1 / 3]))


@pytest.fixture(scope='module')
def vlr_distiller():
    torch.manual_seed(0)
    return build_distiller('det', LD_VLR, student=tiny_gfl(64),
                           teacher=tiny_gfl(64))


@pytest.fixture
def vlr_model(vlr_distiller):
    vlr_distiller.zero_grad(set_to_none=True)
    yield vlr_distiller.train()
    vlr_distiller.zero_grad(set_to_none=True)


def direct_vlr(model, data, T=10.0, loss_weight=0.25):
    """KL(teacher || student) of the box distributions at the VLR
    locations, weighted by the VLR IoU, / 16, per level."""
    head = model.student.bbox_head
    with torch.no_grad():
        _, box_S = head(model.student.extract_feat(data['inputs']))
        _, box_T = model.teacher.bbox_head(
            model.teacher.extract_feat(data['inputs']))
    sizes = [b.shape[-2:] for b in box_S]
    priors = head.prior_generator.grid_priors(sizes, device=box_S[0].device)
    num = [p.size(0) for p in priors]
    assigner = LDVLRAssigner(topk=head.assigner.topk)
    weights = [assigner.assign(torch.cat(priors), num, s.gt_instances.bboxes)
               .split(num) for s in data['data_samples']]
    out = []
    for lvl, (s, t) in enumerate(zip(box_S, box_T)):
        bins = head.reg_max + 1
        s = s.permute(0, 2, 3, 1).reshape(-1, 4, bins)
        t = t.permute(0, 2, 3, 1).reshape(-1, 4, bins)
        w = torch.cat([wi[lvl] for wi in weights])
        kl = (F.softmax(t / T, -1) * (F.log_softmax(t / T, -1) -
                                     F.log_softmax(s / T, -1))).mean(-1)
        out.append(loss_weight * (kl * T * T * w[:, None]).sum() / 16)
    return out


def test_vlr_loss_matches_a_direct_computation(det_batch, vlr_model):
    model = vlr_model
    data = preprocess(model, det_batch)
    losses = model(**data, mode='loss')
    term = model.distill_terms['ld']
    keys = [f'loss_kd_ld_vlr_l{i}' for i in range(5)]
    assert set(keys) <= set(term.loss_keys) and set(keys) <= set(losses)
    ref = direct_vlr(model, data)
    assert sum(r.item() for r in ref) > 0
    for k, r in zip(keys, ref):
        torch.testing.assert_close(losses[k].detach(), r, rtol=1e-4,
                                   atol=1e-7)
    # the student's own task losses are those of the student alone
    with torch.no_grad():
        own = model.student.loss(data['inputs'], data['data_samples'])
    for k, v in own.items():
        for a, b in zip(v, losses[k]):
            torch.testing.assert_close(a, b.detach())


def test_vlr_grads_reach_student_never_teacher(det_batch, vlr_model):
    model = vlr_model
    losses = model(**preprocess(model, det_batch), mode='loss')
    sum(v for k, v in losses.items() if '_vlr_' in k).backward()
    head = model.student.bbox_head
    assert head.gfl_reg.weight.grad.abs().sum() > 0
    layer4 = model.student.backbone.layer4[0].conv1.weight
    assert layer4.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_vlr_needs_an_atss_student():
    student = copy.deepcopy(tiny_gfl(64))
    student['train_cfg'] = dict(
        assigner=dict(_delete_=True, type='MaxIoUAssigner', pos_iou_thr=0.5,
                      neg_iou_thr=0.4, min_pos_iou=0),
        allowed_border=-1, pos_weight=-1, debug=False)
    with pytest.raises(ValueError, match='ATSSAssigner'):
        build_distiller('det', LD_VLR, student=student, teacher=tiny_gfl(64))


def test_nan_in_the_vlr_loss_names_the_term(det_batch, vlr_model):
    from mmengine.logging import MessageHub
    model = vlr_model
    term = model.distill_terms['ld']
    handle = term.loss_vlr.register_forward_hook(
        lambda mod, args, out: out * float('nan'))
    MessageHub.get_instance('test_ld_vlr_nan').update_info('iter', 0)
    try:
        with pytest.raises(FloatingPointError) as info:
            model(**preprocess(model, det_batch), mode='loss')
    finally:
        handle.remove()
    msg = str(info.value)
    assert msg.startswith("distillation term(s) ['ld'] not finite"), msg
    assert 'loss_kd_ld_vlr_l' in msg
