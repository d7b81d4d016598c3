"""RoIKDLoss on hand-checkable RoIs."""
import math

import pytest
import torch

from visionkd.registry import MODELS

# Two classes + background (index 2). Student logits are all zero (uniform).
S = torch.zeros(3, 3)
T = torch.tensor([[math.log(2.), 0., 0.],     # fg, p_T = [1/2, 1/4, 1/4]
                  [0., 0., 0.],               # bg, p_T uniform -> KL 0
                  [0., 0., math.log(4.)]])    # bg, p_T = [1/6, 1/6, 2/3]
LABELS = torch.tensor([0, 2, 2])
KL_FG = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
KL_BG = math.log(2.) / 3


def build(**kwargs):
    return MODELS.build(dict(type='RoIKDLoss', **kwargs))


def test_hand_value_with_fg_bg_split():
    loss = build(tau=1.0, loss_weight_fg=2.0, loss_weight_bg=3.0)
    # fg mean over 1 RoI, bg mean over 2 RoIs
    expected = 2.0 * KL_FG + 3.0 * (0 + KL_BG) / 2
    assert loss(S, T, LABELS).item() == pytest.approx(expected, rel=1e-5)


def test_each_part_uses_only_its_rois():
    fg_only = build(loss_weight_fg=1.0, loss_weight_bg=0.0)
    bg_only = build(loss_weight_fg=0.0, loss_weight_bg=1.0)
    assert fg_only(S, T, LABELS).item() == pytest.approx(KL_FG, rel=1e-5)
    assert bg_only(S, T, LABELS).item() == pytest.approx(KL_BG / 2, rel=1e-5)
    # no background RoI: the background part is 0, not NaN
    value = bg_only(S[:1], T[:1], LABELS[:1])
    assert value.item() == 0.0
    # labels=None: every RoI is foreground
    assert fg_only(S, T).item() == pytest.approx(
        (KL_FG + 0 + KL_BG) / 3, rel=1e-5)


def test_temperature_scales_by_tau_squared():
    # logits scaled by tau give the same distributions; tau^2 factor stays
    loss = build(tau=2.0)
    assert loss(2 * S, 2 * T, LABELS).item() == pytest.approx(
        4 * (KL_FG + KL_BG / 2), rel=1e-5)


def test_bbox_imitation_on_gt_class_of_fg_rois():
    loss = build(loss_weight_fg=0.0, loss_weight_bg=0.0, loss_weight_bbox=1.)
    d_S = torch.zeros(3, 8)  # class-specific deltas, 2 classes
    d_T = torch.zeros(3, 8)
    d_T[0, 0:4] = torch.tensor([1., 2., 3., 4.])  # class 0 of the fg RoI
    d_T[0, 4:8] = 100.  # other class: ignored
    d_T[1:] = 50.  # background RoIs: ignored
    assert loss(S, T, LABELS, d_S, d_T).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match='bbox_pred'):
        loss(S, T, LABELS)


def test_student_gradients():
    # teacher outputs come without grad (the RoI term runs the teacher's
    # head under no_grad)
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3)
    d_s = torch.randn(4, 8, requires_grad=True)
    d_t = torch.randn(4, 8)
    build(loss_weight_bbox=1.0)(s, t, torch.tensor([0, 1, 2, 2]), d_s,
                                d_t).backward()
    assert s.grad.abs().sum() > 0 and d_s.grad.abs().sum() > 0
