"""DETRDistill's matched prediction loss and query-prior feature loss."""
import itertools
import math

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment

from visionkd.models.losses import DETRDistillFeatureLoss, DETRDistillMatchLoss
from visionkd.models.losses.detr_distill_loss import (
    hungarian_match,
    pairwise_giou,
    pairwise_iou,
)


def _brute_force(cost: np.ndarray):
    """The least-cost one-to-one assignment by trying every one."""
    r, k = cost.shape
    best = None
    if r <= k:
        for cols in itertools.permutations(range(k), r):
            total = cost[range(r), cols].sum()
            if best is None or total < best[0]:
                best = (total, list(range(r)), list(cols))
    else:
        for rows in itertools.permutations(range(r), k):
            total = cost[rows, range(k)].sum()
            if best is None or total < best[0]:
                pairs = sorted(zip(rows, range(k)))
                best = (total, [a for a, _ in pairs], [b for _, b in pairs])
    return best


@pytest.mark.parametrize('shape', [(4, 4), (3, 5), (5, 3)])
def test_hungarian_match_equals_scipy_and_brute_force(shape):
    torch.manual_seed(0)
    cost = torch.rand(*shape)
    ((rows, cols), ) = hungarian_match(cost)
    want_r, want_c = linear_sum_assignment(cost.numpy())
    assert rows.tolist() == want_r.tolist()
    assert cols.tolist() == want_c.tolist()
    total, r, c = _brute_force(cost.numpy())
    assert rows.tolist() == r and cols.tolist() == c
    assert math.isclose(cost[rows, cols].sum().item(), total, rel_tol=1e-6)
    # a batch: one assignment per matrix
    batch = hungarian_match(torch.stack([cost, cost.flip(0)]))
    assert len(batch) == 2 and batch[0][1].tolist() == want_c.tolist()


def _bce(x: float, p: float) -> float:
    s = 1 / (1 + math.exp(-x))
    return -(p * math.log(s) + (1 - p) * math.log(1 - s))


def _giou(a, b) -> float:
    """GIoU of two xyxy boxes, by hand."""
    iw = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) \
        - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * \
        (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def _xyxy(b):
    return [b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2,
            b[1] + b[3] / 2]


def test_match_cost_is_the_released_cost_by_hand():
    """C_ij = sum_c BCE(s_ic, p_jc) + 5 L1 - 2 GIoU, entry by entry; the
    matching of the loss is scipy's on it."""
    torch.manual_seed(1)
    cls_S, cls_T = torch.randn(1, 3, 2), torch.randn(1, 4, 2)
    box_S = torch.rand(1, 3, 4) * 0.3 + 0.2
    box_T = torch.rand(1, 4, 4) * 0.3 + 0.2
    loss = DETRDistillMatchLoss()
    cost = loss.match_cost(cls_S[0], box_S[0], cls_T[0].sigmoid(),
                           torch.stack([torch.tensor(_xyxy(b.tolist()))
                                        for b in box_T[0]]))
    for i, j in itertools.product(range(3), range(4)):
        p = cls_T[0, j].sigmoid().tolist()
        want = sum(_bce(cls_S[0, i, c].item(), p[c]) for c in range(2))
        want += 5 * (box_S[0, i] - box_T[0, j]).abs().sum().item()
        want -= 2 * _giou(_xyxy(box_S[0, i].tolist()),
                          _xyxy(box_T[0, j].tolist()))
        assert math.isclose(cost[i, j].item(), want, rel_tol=1e-5), (i, j)
    ((rows, cols), ) = loss.match(cls_S, box_S, cls_T, box_T)
    want_r, want_c = linear_sum_assignment(cost.numpy())
    assert rows.tolist() == want_r.tolist()
    assert cols.tolist() == want_c.tolist()


def test_match_loss_hand_value():
    """One query, one class: BCE(0, 1/2) = log 2; L1 |0.2 - 0.4| = 0.2,
    x5; GIoU of a box and its double-width copy is 1/2, (1 - 1/2) x2."""
    cls = torch.zeros(1, 1, 1)
    s_box = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    t_box = torch.tensor([[[0.5, 0.5, 0.4, 0.2]]])
    c, l1, g = DETRDistillMatchLoss()(cls, s_box, cls, t_box)
    assert math.isclose(c.item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(l1.item(), 1.0, rel_tol=1e-5)
    assert math.isclose(g.item(), 1.0, rel_tol=1e-5)
    c2, l2, g2 = DETRDistillMatchLoss(loss_weight=0.5, loss_weight_l1=1.0)(
        cls, s_box, cls, t_box)
    assert math.isclose(l2.item(), 0.1, rel_tol=1e-5)
    torch.testing.assert_close((c2, g2), (c / 2, g / 2))


def test_match_loss_of_the_teacher_itself():
    """A student equal to the teacher (boxes inside the image): matched to
    itself, no box loss; the class loss is the teacher's mean entropy."""
    torch.manual_seed(2)
    cls = torch.randn(2, 5, 3)
    box = torch.rand(2, 5, 4) * 0.2 + 0.3
    loss = DETRDistillMatchLoss()
    for rows, cols in loss.match(cls, box, cls, box):
        assert rows.tolist() == cols.tolist() == list(range(5))
    c, l1, g = loss(cls, box, cls, box)
    # (the teacher's boxes go through xyxy and back: rounding only)
    assert abs(l1.item()) < 1e-5 and abs(g.item()) < 1e-5
    p = cls.sigmoid()
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).sum() / 10
    torch.testing.assert_close(c, entropy)


def test_teacher_boxes_are_clipped_to_the_image():
    """A teacher box past the border is a target clipped to [0, 1]."""
    cls = torch.zeros(1, 1, 1)
    t_box = torch.tensor([[[0.9, 0.5, 0.4, 0.2]]])  # x2 = 1.1
    s_box = torch.tensor([[[0.85, 0.5, 0.3, 0.2]]])  # the clipped box
    _, l1, g = DETRDistillMatchLoss()(cls, s_box, cls, t_box)
    assert l1.item() < 1e-5 and abs(g.item()) < 1e-5


def test_unmatched_student_queries_get_no_loss_and_counts_normalise():
    """Two student queries, one teacher query: one pair, M = 1."""
    cls_T = torch.zeros(1, 1, 1)
    box_T = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    cls_S = torch.tensor([[[0.], [5.]]])
    box_S = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    c, l1, g = DETRDistillMatchLoss()(cls_S, box_S, cls_T, box_T)
    assert math.isclose(c.item(), math.log(2), rel_tol=1e-6)
    assert abs(l1.item()) < 1e-5 and abs(g.item()) < 1e-5


def test_match_loss_gradients_reach_the_student_only():
    torch.manual_seed(3)
    cls_S = torch.randn(2, 4, 3, requires_grad=True)
    box_S = (torch.rand(2, 4, 4) * 0.3 + 0.2).requires_grad_()
    cls_T = torch.randn(2, 4, 3, requires_grad=True)
    box_T = (torch.rand(2, 4, 4) * 0.3 + 0.2).requires_grad_()
    sum(DETRDistillMatchLoss()(cls_S, box_S, cls_T, box_T)).backward()
    assert cls_S.grad.abs().sum() > 0 and box_S.grad.abs().sum() > 0
    assert cls_T.grad is None and box_T.grad is None


def test_pairwise_ious_by_hand():
    a = torch.tensor([[0., 0., 2., 2.]])
    b = torch.tensor([[1., 1., 3., 3.], [4., 4., 5., 5.]])
    torch.testing.assert_close(pairwise_iou(a, b),
                               torch.tensor([[1 / 7, 0.]]))
    want = [_giou(a[0].tolist(), x.tolist()) for x in b]
    torch.testing.assert_close(pairwise_giou(a[:, None], b[None]),
                               torch.tensor([want]))


def _sample(boxes, shape=(10, 20)):
    s = DetDataSample(metainfo=dict(img_shape=shape))
    s.gt_instances = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4),
                                  labels=torch.zeros(len(boxes),
                                                     dtype=torch.long))
    return s


def _feature_case():
    """One image, one query (hidden (1, 0)), one class (logit 0: score
    1/2), a 2-channel 1x2 map whose first position is the query's
    direction."""
    f_T = torch.tensor([[[[1., 0.]], [[0., 1.]]]])  # (1, 2, 1, 2)
    hidden = torch.tensor([[[3., 0.]]])
    cls = torch.zeros(1, 1, 1)
    box = torch.tensor([[[0.5, 0.5, 0.5, 0.5]]])  # image 20 x 10 pixels
    return f_T, hidden, cls, box


def test_feature_loss_hand_value():
    """GT = the teacher's box: quality 1/2 x IoU 1; mask [1/2, 0.01] / (1/2)
    = [1, 0.02]; a zero student gives mean((mask * F_T)^2) over 4."""
    f_T, hidden, cls, box = _feature_case()
    gt = [[5., 2.5, 15., 7.5]]
    loss = DETRDistillFeatureLoss()
    got = loss([torch.zeros_like(f_T)], [f_T], hidden, cls, box,
               [_sample(gt)])
    assert math.isclose(got.item(), (1 + 0.02 ** 2) / 4, rel_tol=1e-5)
    # a GT box overlapping half: quality 1/2 x 1/3, mask [1, 0.06]
    half = [[10., 2.5, 20., 7.5]]
    got = loss([torch.zeros_like(f_T)], [f_T], hidden, cls, box,
               [_sample(half)])
    assert math.isclose(got.item(), (1 + 0.06 ** 2) / 4, rel_tol=1e-5)
    # no ground truth: the score alone, as with the GT box equal
    none = loss([torch.zeros_like(f_T)], [f_T], hidden, cls, box, None)
    assert math.isclose(none.item(), (1 + 0.02 ** 2) / 4, rel_tol=1e-5)


def test_feature_loss_zero_for_the_teacher_and_grads_to_student_only():
    torch.manual_seed(4)
    f_T = [torch.randn(2, 8, 4, 5, requires_grad=True),
           torch.randn(2, 8, 2, 3, requires_grad=True)]
    hidden = torch.randn(2, 6, 8)
    cls, box = torch.randn(2, 6, 3), torch.rand(2, 6, 4) * 0.3 + 0.2
    loss = DETRDistillFeatureLoss(topk=5)
    same = loss([f.detach().clone() for f in f_T], f_T, hidden, cls, box)
    assert same.item() == 0
    f_S = [torch.randn_like(f, requires_grad=True) for f in f_T]
    loss(f_S, f_T, hidden, cls, box).backward()
    assert all(f.grad.abs().sum() > 0 for f in f_S)
    assert all(f.grad is None for f in f_T)


def test_feature_topk_is_capped_and_picks_the_best_pairs():
    hidden = torch.eye(3)[None]  # query q -> direction q
    cls = torch.tensor([[[-5.], [3.], [0.]]])
    box = torch.rand(1, 3, 4)
    q, w = DETRDistillFeatureLoss(topk=100).query_priors(hidden, cls, box,
                                                          None)
    assert q.shape == (1, 3, 3)
    q, w = DETRDistillFeatureLoss(topk=1).query_priors(hidden, cls, box,
                                                        None)
    torch.testing.assert_close(q, torch.tensor([[[0., 1., 0.]]]))
    torch.testing.assert_close(w, torch.tensor([[3.]]).sigmoid())


def test_dtype_is_kept_and_shapes_are_checked():
    torch.manual_seed(5)
    cls = torch.randn(1, 3, 2, dtype=torch.float64)
    box = torch.rand(1, 3, 4, dtype=torch.float64) * 0.3 + 0.2
    assert all(v.dtype == torch.float64
               for v in DETRDistillMatchLoss()(cls, box, cls, box))
    f = [torch.randn(1, 4, 2, 2, dtype=torch.float64)]
    hidden = torch.randn(1, 3, 4, dtype=torch.float64)
    assert DETRDistillFeatureLoss()(f, f, hidden, cls, box).dtype == \
        torch.float64
    with pytest.raises(ValueError, match='same shapes per level'):
        DETRDistillFeatureLoss()(f, [f[0][:, :2]], hidden, cls, box)
    with pytest.raises(ValueError, match=r'\(N, Q, C\) and boxes'):
        DETRDistillMatchLoss()(cls, box[..., :2], cls, box)
    with pytest.raises(ValueError, match='topk must be >= 1'):
        DETRDistillFeatureLoss(topk=0)


def test_fp32_under_bf16_through_the_term():
    """mode='detr_distill' calls both losses through ``run_loss``: bf16
    inputs under autocast give float32 values close to the float32 losses
    on the same (rounded) inputs, with finite student gradients."""
    from visionkd.models.distillers.terms.base_term import BaseDistillTerm
    torch.manual_seed(6)
    cls_S = torch.randn(2, 5, 3).bfloat16().requires_grad_()
    box_S = (torch.rand(2, 5, 4) * 0.3 + 0.3).bfloat16().requires_grad_()
    cls_T = torch.randn(2, 5, 3).bfloat16()
    box_T = (torch.rand(2, 5, 4) * 0.3 + 0.3).bfloat16()
    f_S = [torch.randn(2, 4, 3, 3).bfloat16().requires_grad_()]
    f_T = [torch.randn(2, 4, 3, 3).bfloat16()]
    hidden = torch.randn(2, 5, 4).bfloat16()
    match, feat = DETRDistillMatchLoss(), DETRDistillFeatureLoss(topk=4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = BaseDistillTerm.run_loss(match, cls_S, box_S, cls_T, box_T)
        got_f = BaseDistillTerm.run_loss(feat, f_S, f_T, hidden, cls_T,
                                         box_T)
    want = match(cls_S.detach().float(), box_S.detach().float(),
                 cls_T.float(), box_T.float())
    want_f = feat([f_S[0].detach().float()], [f_T[0].float()],
                  hidden.float(), cls_T.float(), box_T.float())
    for g, w in zip((*got, got_f), (*want, want_f)):
        assert g.dtype == torch.float32 and torch.isfinite(g)
        torch.testing.assert_close(g, w)
    (sum(got) + got_f).backward()
    for x in (cls_S, box_S, f_S[0]):
        assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
