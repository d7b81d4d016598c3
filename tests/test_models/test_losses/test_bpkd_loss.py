"""BPKD (BPKDLoss): GT masks by hand, hand-computed values, gradients,
ignore pixels, dtype."""
import math
from types import SimpleNamespace

import pytest
import torch

from visionkd.models.losses import BPKDLoss
from visionkd.models.losses.bpkd_loss import bpkd_gt_masks
from visionkd.registry import MODELS
from visionkd.utils import count_aten_calls

#: KL((3/4, 1/4) || (1/2, 1/2))
KL_EDGE = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
#: KL((1/2, 1/6, 1/6, 1/6) || uniform over 4)
KL_BODY = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)


def as_samples(labels):
    """Duck-typed SegDataSamples from an (N, H, W) label tensor."""
    return [SimpleNamespace(gt_sem_seg=SimpleNamespace(data=lbl[None]))
            for lbl in labels.long()]


def row_case():
    """GT ``[0, 0, 1, 1]`` (one row), student 0, teacher class 0 = log 3
    at the first two pixels: edge = pixels 1, 2 of both classes (3x3)."""
    labels = torch.tensor([[[0, 0, 1, 1]]])
    s = torch.zeros(1, 2, 1, 4)
    t = torch.zeros(1, 2, 1, 4)
    t[0, 0, 0, :2] = math.log(3.0)
    return s, t, labels


def test_masks_by_hand_with_an_ignored_pixel():
    labels = torch.tensor([[[255, 0, 1, 1],
                            [0, 0, 1, 1],
                            [0, 0, 1, 1],
                            [0, 0, 1, 1]]])
    edge, body = bpkd_gt_masks(labels, 2, (4, 4), edge_kernel_size=3)
    # class 0: the 3x3 band around the 0|1 border, plus (1, 0) whose
    # window meets the ignored pixel; the ignored pixel itself is dropped
    edge_0 = [[0, 1, 1, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    edge_1 = [[0, 1, 1, 0]] * 4
    body_0 = [[0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1]]
    body_1 = [[0, 0, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1]]
    assert edge.shape == body.shape == (1, 2, 4, 4)
    assert edge.dtype == torch.float32
    assert edge[0].tolist() == [edge_0, edge_1]
    assert body[0].tolist() == [body_0, body_1]


def test_masks_are_average_pooled_to_the_logits():
    # 2 x 8 GT -> (1, 4) logits: 2x2 cells; ignored pixel at (0, 7)
    labels = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]]).repeat(2, 1)[None]
    labels[0, 0, 7] = 255
    edge, body = bpkd_gt_masks(labels, 2, (1, 4), edge_kernel_size=3)
    # class 1 gets edge at (0, 6), (1, 6), (1, 7) next to the ignored pixel
    assert edge[0, :, 0].tolist() == [[0, .5, .5, 0], [0, .5, .5, .75]]
    assert body[0, :, 0].tolist() == [[1, .5, .5, .75], [1, .5, .5, 0]]


def test_uniform_gt_has_no_edge_and_the_border_is_no_edge():
    edge, body = bpkd_gt_masks(torch.zeros(1, 5, 6, dtype=torch.long), 3,
                               (5, 6))
    assert edge.sum() == 0
    assert body[0, 0].eq(1).all() and body[0, 1:].eq(1).all()


def test_hand_value_and_its_parts():
    s, t, labels = row_case()
    loss = BPKDLoss(edge_kernel_size=3)
    edge, body = loss.masks(as_samples(labels), t)
    # L_E: phi = KL_EDGE at pixel 1 (0 elsewhere); per class * alpha=2 / 2
    # edge pixels; two classes
    assert loss.edge_loss(s, t, edge).item() == pytest.approx(2 * KL_EDGE)
    # L_B: class 0's body logits (log 3, 0, 0, 0) vs zeros; class 1 zero;
    # mean over N * C = 2
    assert loss.body_loss(s, t, body).item() == pytest.approx(KL_BODY / 2)
    value = loss(s, t, as_samples(labels))
    assert value.item() == pytest.approx(50 * 2 * KL_EDGE + 20 * KL_BODY / 2,
                                         rel=1e-5)


def test_weights_alpha_and_tau():
    s, t, labels = row_case()
    samples = as_samples(labels)
    edge_only = BPKDLoss(lambda_body=0.0, lambda_edge=1.0, edge_kernel_size=3)
    assert edge_only(s, t, samples).item() == pytest.approx(2 * KL_EDGE)
    per_class = BPKDLoss(lambda_body=0.0, lambda_edge=1.0, alpha=(1.0, 0.0),
                         edge_kernel_size=3)
    assert per_class(s, t, samples).item() == pytest.approx(KL_EDGE / 2)
    body_only = BPKDLoss(lambda_body=1.0, lambda_edge=0.0, edge_kernel_size=3)
    assert body_only(s, t, samples).item() == pytest.approx(KL_BODY / 2)
    # tau=2 on 2 * t: the same distributions, times tau^2
    hot = BPKDLoss(tau=2.0, edge_kernel_size=3, loss_weight=0.5)
    ref = BPKDLoss(edge_kernel_size=3)
    assert hot(s, 2 * t, samples).item() == pytest.approx(
        0.5 * 4 * ref(s, t, samples).item(), rel=1e-5)


def test_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 16, 16))
    labels[:, :2] = 255
    samples = as_samples(labels)
    x = torch.randn(2, 3, 8, 8)
    loss = BPKDLoss()
    assert loss(x, x.clone(), samples).item() == pytest.approx(0, abs=1e-6)
    assert loss(x, torch.randn(2, 3, 8, 8), samples).item() > 0


def test_gradients_reach_the_student_never_the_teacher():
    torch.manual_seed(1)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[:, 0] = 255  # first row ignored
    s = torch.randn(2, 3, 8, 8, requires_grad=True)
    t = torch.randn(2, 3, 8, 8, requires_grad=True)
    BPKDLoss(edge_kernel_size=3)(s, t.detach(), as_samples(labels)).backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert s.grad[:, :, 1:].abs().sum() > 0
    # ignored pixels: both masks 0, the student's logits there get nothing
    assert s.grad[:, :, 0].abs().max() == 0


def test_ignored_pixels_do_not_change_the_value():
    torch.manual_seed(2)
    labels = torch.randint(0, 2, (1, 6, 6))
    labels[0, 2, 3] = 255
    labels[0, 4, 1] = 7  # outside [0, C): ignored as well
    s, t = torch.randn(1, 2, 6, 6), torch.randn(1, 2, 6, 6)
    loss = BPKDLoss(edge_kernel_size=3)
    ref = loss(s, t, as_samples(labels))
    s2, t2 = s.clone(), t.clone()
    for i, j in ((2, 3), (4, 1)):
        s2[0, :, i, j] += 5.0
        t2[0, :, i, j] -= 3.0
    torch.testing.assert_close(loss(s2, t2, as_samples(labels)), ref)
    # 7 and 255 are the same: no class
    labels_255 = labels.masked_fill(labels == 7, 255)
    torch.testing.assert_close(loss(s, t, as_samples(labels_255)), ref)


def test_batch_value_is_the_mean_of_the_images():
    torch.manual_seed(3)
    labels = torch.randint(0, 3, (2, 16, 16))
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    loss = BPKDLoss()
    both = loss(s, t, as_samples(labels))
    each = [loss(s[i:i + 1], t[i:i + 1], as_samples(labels[i:i + 1]))
            for i in range(2)]
    torch.testing.assert_close(both, (each[0] + each[1]) / 2)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_keeps_dtype(dtype):
    torch.manual_seed(4)
    labels = torch.randint(0, 3, (2, 16, 16))
    s = torch.randn(2, 3, 8, 8, dtype=dtype, requires_grad=True)
    t = torch.randn(2, 3, 8, 8, dtype=dtype)
    value = BPKDLoss()(s, t, as_samples(labels))
    assert value.dtype == dtype
    value.backward()
    assert s.grad.dtype == dtype


def test_op_count_does_not_grow_with_batch():
    def count(batch):
        samples = as_samples(torch.randint(0, 3, (batch, 16, 16)))
        s = torch.randn(batch, 3, 4, 4, requires_grad=True)
        t = torch.randn(batch, 3, 4, 4)
        loss = BPKDLoss()
        return count_aten_calls(lambda: loss(s, t, samples))

    assert count(8) == count(2)


def test_registered_and_bad_arguments():
    loss = MODELS.build(dict(type='BPKDLoss'))
    assert (loss.lambda_edge, loss.lambda_body, loss.alpha, loss.tau,
            loss.edge_kernel_size) == (50.0, 20.0, 2.0, 1.0, 7)
    assert BPKDLoss.gt_field == 'gt_sem_seg'
    for kwargs in (dict(tau=0), dict(edge_kernel_size=4),
                   dict(edge_kernel_size=0)):
        with pytest.raises(ValueError):
            BPKDLoss(**kwargs)
    s, t, labels = row_case()
    with pytest.raises(ValueError, match='alpha'):
        BPKDLoss(alpha=(1.0, 2.0, 3.0))(s, t, as_samples(labels))
    with pytest.raises(ValueError, match='channels'):
        BPKDLoss()(s, torch.zeros(1, 3, 1, 4), as_samples(labels))
    with pytest.raises(ValueError, match='ResizeConnector'):
        BPKDLoss()(s, torch.zeros(1, 2, 2, 4), as_samples(labels))
    with pytest.raises(ValueError, match='data_samples'):
        BPKDLoss()(s, t, None)
