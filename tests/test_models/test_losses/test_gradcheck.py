"""Every registered loss is plain tensor math in the dtype it is given.

* float32 in, float32 out; float64 in (module ``.double()``), float64 out,
  in training mode too (CIRKD's memory update);
* ``torch.autograd.gradcheck`` in float64: the gradient w.r.t. the student
  is the derivative of the value (the teacher comes without grad, as from
  the distillation term).

Inputs are the generic cases of ``test_losses.py`` (constructor arguments,
ground truth) on smaller maps: gradcheck runs the loss twice per student
element. A new loss gets its entry in ``LOSS_CASES`` and is checked here
as well.
"""
import pytest
import torch

from tests.test_models.test_losses.test_losses import (
    LOSS_CASES,
    LOSS_NAMES,
    build,
    call,
)
from visionkd.registry import MODELS

#: Losses whose gradient is by design not the derivative of their value:
#: PairWiseAffinityLoss divides the student's node features by their
#: *detached* norm (the official stop-gradient); see ``_freeze_norm``.
STOP_GRADIENT = {'PairWiseAffinityLoss'}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on these tiny tensors a thread pool only adds
    hand-offs, which cost milliseconds per op on a busy machine (and
    gradcheck runs a few hundred forwards per loss)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_shape(name):
    """The case's shape with (H, W) = (4, 5): 160 student elements."""
    shape = LOSS_CASES[name][1]
    return shape[:2] + (4, 5) if len(shape) == 4 else shape


def make_loss(name, dtype):
    """The loss in ``dtype``; parameters drawn at random (seeded).

    The official inits hide paths from the check (FGD's zero GcBlock convs
    make the global context a constant), so every parameter is redrawn.
    """
    torch.manual_seed(0)
    loss = build(name).to(dtype)
    with torch.no_grad():
        for p in loss.parameters():
            p.normal_(std=0.5)
    return loss


def make_inputs(name, dtype, shape=None, requires_grad=False):
    gen = torch.Generator().manual_seed(1)
    shape = shape or small_shape(name)
    s = torch.randn(shape, generator=gen, dtype=dtype)
    t = torch.randn(shape, generator=gen, dtype=dtype)
    return s.requires_grad_(requires_grad), t


def seeded(name, loss, t):
    """``s -> loss(s, t)`` with the RNG reset on every call.

    MGD draws a random mask and CIRKDMemoryLoss samples its memory: the
    same draw on every evaluation makes the loss a function of ``s``.
    """

    def fn(s):
        torch.manual_seed(2)
        return call(name, loss, s, t)

    return fn


def _freeze_norm(loss, s):
    """PairWiseAffinityLoss with the student's node norm held constant.

    The loss normalises the max-pooled node features by their detached L2
    norm, so its gradient is the derivative of the loss with that norm
    fixed at the evaluated point; gradcheck perturbs the student, which
    would change the norm. This takes the norm at ``s`` once and keeps it
    (the teacher, with other channels, is normalised as usual).
    """
    original = loss.similarity
    with torch.no_grad():
        pooled = loss.pool(s, loss.kernel_size(*s.shape[2:]))
        norm_S = pooled.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-8

    def similarity(feat):
        if feat.shape[1] != s.shape[1]:
            return original(feat)
        feat = (feat / norm_S).flatten(2)
        return torch.einsum('icm,icn->imn', feat, feat)

    loss.similarity = similarity  # instance attribute shadows the method


@pytest.mark.parametrize('name', LOSS_NAMES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_keeps_dtype(name, dtype):
    loss = make_loss(name, dtype).train()
    s, t = make_inputs(name, dtype, requires_grad=True)
    value = call(name, loss, s, t)
    assert value.dtype == dtype
    value.backward()
    assert s.grad.dtype == dtype and torch.isfinite(s.grad).all()
    # a second call: CIRKDMemoryLoss now reads what it enqueued
    assert call(name, loss, s, t).dtype == dtype


#: Losses without parameters; those with parameters (adapters, GcBlocks,
#: generators) compute in their parameters' dtype, like any module, and are
#: converted with them (``loss.double()``).
PARAMETER_FREE = [n for n in LOSS_NAMES if not list(build(n).parameters())]


@pytest.mark.parametrize('name', PARAMETER_FREE)
def test_float64_input_needs_no_conversion(name):
    """A float32-built parameter-free loss computes in float64 when given
    float64 (CIRKDMemoryLoss's float32 memory is cast at use)."""
    loss = make_loss(name, torch.float32).train()
    s, t = make_inputs(name, torch.float64)
    assert call(name, loss, s, t).dtype == torch.float64


@pytest.mark.parametrize('name', LOSS_NAMES)
def test_gradcheck_float64(name):
    loss = make_loss(name, torch.float64)
    # CIRKDMemoryLoss enqueues the teacher in training mode, which would
    # change the function between evaluations; eval mode only reads it.
    loss.eval()
    if name in STOP_GRADIENT:
        # channels may differ; the teacher's tell its calls apart
        shape = small_shape(name)
        s, _ = make_inputs(name, torch.float64, requires_grad=True)
        _, t = make_inputs(name, torch.float64, (shape[0], shape[1] - 1) +
                           shape[2:])
        _freeze_norm(loss, s)
    else:
        s, t = make_inputs(name, torch.float64, requires_grad=True)
    fn = seeded(name, loss, t)
    value = fn(s)
    assert value.dtype == torch.float64
    (grad, ) = torch.autograd.grad(value, s)
    scale = grad.abs().max()
    assert scale > 0, 'the student gets no gradient: nothing to check'
    # Gradients normalised to a max of 1, so that gradcheck's absolute
    # tolerance means the same for every loss (FGD's weights are 1e-3 to
    # 5e-6, MGD's 2e-5).
    assert torch.autograd.gradcheck(lambda x: fn(x) / scale, (s, ))


def test_gradcheck_roi_kd_box_deltas():
    """RoIKDLoss's box imitation (off in the generic case), float64."""
    gen = torch.Generator().manual_seed(3)
    kw = dict(generator=gen, dtype=torch.float64)
    cls_T, box_T = torch.randn(6, 4, **kw), torch.randn(6, 12, **kw)
    cls_S = torch.randn(6, 4, **kw).requires_grad_(True)
    box_S = torch.randn(6, 12, **kw).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    loss = MODELS.build(dict(type='RoIKDLoss', tau=2.0, loss_weight_bbox=1.0))
    value = loss(cls_S, cls_T, labels, box_S, box_T)
    assert value.dtype == torch.float64
    assert torch.autograd.gradcheck(
        lambda c, b: loss(c, cls_T, labels, b, box_T), (cls_S, box_S))


@pytest.mark.parametrize('name', ['BCKDClsLoss', 'BCKDRegLoss'])
def test_gradcheck_bckd_weighted(name):
    """BCKD losses with per-location weights and avg_factor, float64."""
    gen = torch.Generator().manual_seed(4)
    kw = dict(generator=gen, dtype=torch.float64)
    s = torch.randn(6, 12, **kw).requires_grad_(True)
    t, w = torch.randn(6, 12, **kw), torch.rand(6, **kw)
    loss = MODELS.build(dict(type=name, loss_weight=2.0))
    assert torch.autograd.gradcheck(
        lambda x: loss(x, t, weight=w, avg_factor=3.0), (s, ))


@pytest.mark.parametrize('name', ['KDQualityFocalLoss', 'KDKLDivLoss'])
def test_gradcheck_crosskd_weighted(name):
    """CrossKD losses with per-row weights and avg_factor, float64."""
    gen = torch.Generator().manual_seed(5)
    kw = dict(generator=gen, dtype=torch.float64)
    s = torch.randn(6, 5, **kw).requires_grad_(True)
    t, w = torch.randn(6, 5, **kw), torch.rand(6, **kw)
    loss = MODELS.build(dict(type=name, loss_weight=2.0))
    assert torch.autograd.gradcheck(
        lambda x: loss(x, t, weight=w, avg_factor=3.0), (s, ))
