"""Focal and Global Knowledge Distillation (FGD) for detectors."""
from contextlib import nullcontext
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from visionkd.registry import MODELS

from .det_gt_utils import check_level_inputs, check_samples, padded_gt_bboxes

__all__ = ['FGDLoss']

_aten = torch.ops.aten
_ALL = (0, 1, 2, 3)  # every dim of a 4-D tensor


class _Config(NamedTuple):
    """The Python numbers of :class:`_FGDLevel`."""
    temp: float
    k: float  # loss_weight / N
    gamma: float
    lam: float
    eps_s: float  # LayerNorm eps of the student's GcBlock
    eps_t: float  # and of the teacher's
    nonneg: bool  # k * (alpha, beta, lambda) >= 0: so are D^2's weights


def _to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x.to(dtype)``, without an ATen call when it is a no-op."""
    return x if x.dtype == dtype else x.to(dtype)


def _l1(x: torch.Tensor) -> torch.Tensor:
    """``sum(|x|)`` of a 4-D tensor, shape (1, 1, 1, 1)."""
    return torch.linalg.vector_norm(x, 1, dim=_ALL, keepdim=True)


def _zero_one(dtype: torch.dtype, device: torch.device
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """0-dim tensors 0 and 1."""
    return tuple(torch.scalar_tensor(v, dtype=dtype, device=device)
                 for v in (0, 1))


def _background(mask_fg: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    """1 where ``mask_fg`` (>= 0) is 0, else 0: ``1 - sign(mask_fg)``."""
    return torch.sub(one, mask_fg.sign())


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Cells of a flat 0/1 mask per image, (N, 1, 1, 1), at least 1."""
    return torch.linalg.vector_norm(mask, 1, dim=3, keepdim=True).clamp_min_(1)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as (N, C, 1, H*W), a view where the layout allows.

    The loss is a sum over positions, so it never needs H and W apart;
    in this layout every reduction keeps its dims and broadcasts as is.
    """
    N, C, H, W = x.shape
    if x.is_contiguous():
        return x.view(N, C, 1, H * W)
    return x.reshape(N, C, 1, H * W)


def _scaled(zero: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * x`` as ``zero + scale * x`` (exact): a Python ``alpha``
    costs no scalar tensor, unlike ``x * scale``."""
    return torch.add(zero, x, alpha=scale)


def _attention(x: torch.Tensor, zero: torch.Tensor,
               temp: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Softmax parts of the attentions of a flat feature (N, C, 1, H*W).

    ``A_S = H * W * probs_s`` with ``probs_s`` (N, 1, 1, H*W) the softmax
    of ``mean_c |x| / temp``, and ``A_C = C * probs_c`` with ``probs_c``
    (N, C, 1, 1) the softmax of ``mean_hw |x| / temp``
    (``vector_norm(x, 1)`` is the sum of ``|x|``).
    """
    C, HW = x.shape[1], x.shape[3]
    spatial = torch.linalg.vector_norm(x, 1, dim=1, keepdim=True)
    channel = torch.linalg.vector_norm(x, 1, dim=3, keepdim=True)
    return (_aten._softmax(_scaled(zero, spatial, 1 / (C * temp)), 3, False),
            _aten._softmax(_scaled(zero, channel, 1 / (HW * temp)), 1,
                           False))


def _attention_vjp(probs: Tuple[torch.Tensor, torch.Tensor],
                   grads: Tuple[torch.Tensor, torch.Tensor],
                   ratio: float) -> torch.Tensor:
    """Backward of :func:`_attention` down to its logits.

    Args:
        probs: ``(probs_s, probs_c)`` of :func:`_attention`.
        grads: The gradients w.r.t. them, same shapes.
        ratio: Factor of the spatial part.

    Returns:
        ``d/d logits_c + ratio * d/d logits_s``, (N, C, 1, H*W); the
        caller multiplies it by ``sign(x)`` and the logits' scale.
    """
    (probs_s, probs_c), (grad_s, grad_c) = probs, grads
    g_c = _aten._softmax_backward_data(grad_c, probs_c, 1, probs_c.dtype)
    g_s = _aten._softmax_backward_data(grad_s, probs_s, 3, probs_s.dtype)
    return torch.add(g_c, g_s, alpha=ratio)


def _gc_forward(x: torch.Tensor, params: Sequence[torch.Tensor],
                eps: float) -> Tuple[torch.Tensor, tuple]:
    """GcBlock ``channel_add_conv(spatial_pool(x))`` of a flat feature.

    Args:
        x: Feature, (N, C, 1, H*W).
        params: ``conv_mask`` weight and bias, then the weight and bias of
            each layer of ``channel_add_conv`` (conv1, LayerNorm, conv2).
        eps: The LayerNorm's eps.

    Every convolution is 1x1 (``conv_mask``) or acts on a 1x1 map (the
    ``channel_add_conv``), so each is a broadcast product and a sum over
    its input channels. The (scalar) bias of ``conv_mask`` cancels in the
    softmax over positions; only its gradient is computed.

    Returns:
        The output (N, C, 1, 1) without the last bias (FGD needs the
        difference of two GcBlocks: the caller adds that of the biases)
        and what :func:`_gc_backward` needs.
    """
    mask_w, _, w1, b1, ln_w, ln_b, w2, _ = params
    N, C = x.shape[:2]
    probs = _aten._softmax((x * mask_w).sum(1, keepdim=True), 3, False)
    context = (x * probs).sum(3, keepdim=True).view(N, 1, C, 1, 1)
    hidden = (context * w1).sum(2).add_(b1.view(-1, 1, 1))  # (N, C/2, 1, 1)
    normed, mean, rstd = torch.native_layer_norm(hidden, ln_w.shape, ln_w,
                                                 ln_b, eps)
    act = normed.clamp_min_(0).view(N, 1, -1, 1, 1)  # ReLU
    out = (act * w2).sum(2)  # (N, C, 1, 1), without b2
    return out, (x, probs, context, hidden, mean, rstd, act)


def _gc_backward(grad: torch.Tensor, saved: tuple,
                 params: Sequence[torch.Tensor],
                 g_b2: Optional[torch.Tensor] = None) -> Tuple[tuple, tuple]:
    """Backward of :func:`_gc_forward` for ``grad`` (N, C, 1, 1, 1).

    ``g_b2``, the gradient of the last bias (``grad`` summed over the
    images), is computed unless given.

    Returns:
        The parameter gradients (in ``params`` order) and
        ``(d_context, probs, d_logits)``, the parts of the input gradient
        ``d_context * probs + d_logits * conv_mask.weight``.
    """
    x, probs, context, hidden, mean, rstd, act = saved
    w1, ln_w, w2 = params[2], params[4], params[6]
    g_w2 = (grad * act).sum(0)
    if g_b2 is None:
        g_b2 = grad.sum((0, 2, 3, 4))
    d_act = _aten.threshold_backward((grad * w2).sum(1, keepdim=True), act,
                                     0)
    d_hidden, g_lnw, g_lnb = _aten.native_layer_norm_backward(
        d_act.view(hidden.shape), hidden, ln_w.shape, mean, rstd, ln_w,
        params[5], [True, True, True])
    d_hidden5 = d_hidden.view(*hidden.shape[:2], 1, 1, 1)
    g_w1 = (d_hidden5 * context).sum(0)
    g_b1 = d_hidden.sum((0, 2, 3))
    d_context = (d_hidden5 * w1).sum(1)  # (N, C, 1, 1)
    d_logits = _aten._softmax_backward_data(
        (x * d_context).sum(1, keepdim=True), probs, 3, probs.dtype)
    g_mw = (x * d_logits).sum((0, 3), keepdim=True)
    # two steps: a one-step sum of a large tensor to one element is split
    # over threads (more calls, and as many as the machine has threads)
    g_mb = d_logits.sum((1, 2, 3)).sum(0, keepdim=True)
    grads = (g_mw, g_mb, g_w1, g_b1, g_lnw, g_lnb, g_w2, g_b2)
    return grads, (d_context, probs, d_logits)


def _add_input_grad(d_x: torch.Tensor, parts: tuple,
                    mask_w: torch.Tensor) -> torch.Tensor:
    """``d_x += d_context * probs + d_logits * conv_mask.weight``."""
    d_context, probs, d_logits = parts
    return d_x.addcmul_(d_context, probs).addcmul_(d_logits, mask_w)


class _Saved(NamedTuple):
    """What :class:`_FGDLevel` keeps for its backward (flat layout)."""
    S: torch.Tensor
    T: torch.Tensor
    diff: torch.Tensor  # D = S - T
    wdiff: torch.Tensor  # weight * D
    focal: torch.Tensor
    focal_ps: torch.Tensor  # focal * P_S^T
    ps_s: torch.Tensor  # the attention probabilities
    pc_s: torch.Tensor
    ps_t: torch.Tensor
    pc_t: torch.Tensor
    d_s: torch.Tensor  # P_S^S - P_S^T
    d_c: torch.Tensor  # P_C^S - P_C^T
    e: torch.Tensor  # G_s(S) - G_t(T)
    sum_d: torch.Tensor  # sum_hw D
    zero: torch.Tensor
    gc_s: tuple  # the GcBlocks' tensors, _gc_forward's second output
    gc_t: tuple
    params_s: tuple
    params_t: tuple

    @classmethod
    def unpack(cls, tensors: Sequence[torch.Tensor]) -> '_Saved':
        """From ``ctx.saved_tensors`` (the fields in order, flattened)."""
        n = len(cls._fields) - 4
        return cls(*tensors[:n], tensors[n:n + 7], tensors[n + 7:n + 14],
                   tensors[n + 14:n + 22], tensors[n + 22:])


class _FGDLevel(torch.autograd.Function):
    """FGD of one level, forward and hand-written backward.

    ``apply(S, T, focal, zero, cfg, *params)``: the features ``S``, ``T``
    (N, C, H, W); ``focal`` (N, 1, 1, H*W), the ``alpha * M_fg + beta *
    M_bg`` weights (no gradient); ``zero``, a 0-dim tensor of the
    features' dtype; a :class:`_Config`; the 16 GcBlock parameters, the
    student's then the teacher's (the order of :func:`_gc_forward`). The
    values and gradients are those of the formulas of :class:`FGDLoss`
    (the tests check them against autograd); the autograd graph of this
    loss is mostly bookkeeping around tiny tensors, which this saves.
    """

    @staticmethod
    def forward(ctx, S, T, focal, zero, cfg: _Config, *params):
        N, C, H, W = T.shape
        HW = H * W
        S, T = _flat(S), _flat(T)  # (N, C, 1, HW) from here on
        ps_s, pc_s = _attention(S, zero, cfg.temp)
        ps_t, pc_t = _attention(T, zero, cfg.temp)
        # weights of (S - T)^2: k * C * HW * P_C^T * P_S^T * focal (the
        # focal and background terms) plus k * lambda (the sum(D^2) of the
        # global term)
        focal_ps = focal * ps_t
        k_lam = torch.scalar_tensor(cfg.k * cfg.lam, dtype=T.dtype,
                                    device=T.device)
        weight = torch.addcmul(k_lam, focal_ps, pc_t, value=cfg.k * C * HW)
        diff = S - T
        wdiff = weight * diff
        # (the sums keep their dims: (1, 1, 1, 1), one call each)
        if cfg.nonneg:  # a sum of non-negative terms: its 1-norm
            value = _l1(wdiff * diff)
        else:
            value = (wdiff * diff).sum((1, 2, 3), keepdim=True).sum(
                0, keepdim=True)
        # attention loss: k * gamma * (C * |P_C^S - P_C^T|_1 + HW * |..|_1)
        d_c, d_s = pc_s - pc_t, ps_s - ps_t
        att = torch.add(_l1(d_c), _l1(d_s), alpha=HW / C)
        value = torch.add(value, att, alpha=cfg.k * cfg.gamma * C)
        out_s, gc_s = _gc_forward(S, params[:8], cfg.eps_s)
        out_t, gc_t = _gc_forward(T, params[8:], cfg.eps_t)
        # rest of the global term: k * lambda * sum_nc e * (2 sum_hw D +
        # HW * e)
        e = (out_s - out_t).add_((params[7] - params[15]).view(-1, 1, 1))
        sum_d = diff.sum(3, keepdim=True)
        cross = (e * torch.add(sum_d, e, alpha=HW / 2)).sum(_ALL, True)
        ctx.cfg, ctx.shape = cfg, (N, C, H, W)
        ctx.save_for_backward(S, T, diff, wdiff, focal, focal_ps, ps_s, pc_s,
                              ps_t, pc_t, d_s, d_c, e, sum_d, zero, *gc_s,
                              *gc_t, *params)
        return torch.add(value, cross, alpha=2 * cfg.k * cfg.lam).view(())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        cfg, sv = ctx.cfg, _Saved.unpack(ctx.saved_tensors)
        C, HW = sv.S.shape[1], sv.S.shape[3]
        c_e = _scaled(sv.zero, grad, 2 * cfg.k * cfg.lam)
        d_e = torch.add(sv.sum_d, sv.e, alpha=HW).mul_(c_e)  # d loss / d e
        d_e = d_e.view(*d_e.shape, 1)
        grads_s, input_s = _gc_backward(d_e, sv.gc_s, sv.params_s)
        grads_t, input_t = _gc_backward(d_e.neg(), sv.gc_t, sv.params_t,
                                        grads_s[-1].neg())
        # the (S - T) terms; their gradient w.r.t. T is the negative
        d_diff = torch.addcmul(sv.e * c_e, sv.wdiff, grad, value=2.0)
        d_S = d_T = None
        if ctx.needs_input_grad[1]:
            d_T = _teacher_grad(cfg, sv, grad, d_diff.neg(), input_t)
            d_T = d_T.view(ctx.shape)
        if ctx.needs_input_grad[0]:
            # attention loss: d / d P_C^S = k * gamma * C * sign(d_c), and
            # k * gamma * HW * sign(d_s) for P_S^S
            u = _attention_vjp((sv.ps_s, sv.pc_s),
                               (sv.d_s.sign(), sv.d_c.sign()), (HW / C)**2)
            d_S = d_diff.addcmul_(
                sv.S.sign(), u.mul_(grad),
                value=cfg.k * cfg.gamma * C / (HW * cfg.temp))
            d_S = _add_input_grad(d_S, input_s, sv.params_s[0])
            d_S = d_S.view(ctx.shape)
        return (d_S, d_T, None, None, None) + grads_s + grads_t


def _teacher_grad(cfg: _Config, sv: _Saved, grad: torch.Tensor,
                  d_t: torch.Tensor, input_t: tuple) -> torch.Tensor:
    """d loss / d T (flat), given ``d_t``, that of the (S - T) terms.

    The distillation term detaches the teacher, but the loss is plain math
    and propagates to ``T`` when asked to: through ``D``, the teacher's
    attention (in the weights of ``D^2`` and in the attention loss) and
    the teacher's GcBlock.
    """
    C, HW = sv.T.shape[1], sv.T.shape[3]
    K = cfg.k * C * HW
    sq = sv.diff * sv.diff
    # gradients w.r.t. the teacher's attention probabilities
    g_c = (sv.focal_ps * sq).sum(3, keepdim=True).mul_(K)
    g_c.sub_(sv.d_c.sign(), alpha=cfg.k * cfg.gamma * C)
    g_s = (sv.pc_t * sq).sum(1, keepdim=True).mul_(sv.focal).mul_(K)
    g_s.sub_(sv.d_s.sign(), alpha=cfg.k * cfg.gamma * HW)
    u = _attention_vjp((sv.ps_t, sv.pc_t), (g_s, g_c), HW / C)
    d_t.addcmul_(sv.T.sign(), u.mul_(grad), value=1 / (HW * cfg.temp))
    return _add_input_grad(d_t, input_t, sv.params_t[0])


@MODELS.register_module()
class FGDLoss(nn.Module):
    """FGD: focal (fg/bg, attention) and global (GcBlock) distillation.

    *Focal and Global Knowledge Distillation for Detectors* (Yang et al.,
    CVPR 2022), re-implemented after the official ``FeatureLoss`` of
    yzd-v/FGD (``mmdet/distillation/losses/fgd.py``, commit ``f1da292``,
    identical to mmrazor's ``FGDLoss``). For one FPN level, with ``S``
    (after the optional 1x1 ``align`` conv) and ``T`` of shape (N, C, H, W):

    * attention of a feature ``X``, from ``|X|``:
      spatial ``A_S = H * W * softmax_hw(mean_c|X| / temp)`` (N, H, W) and
      channel ``A_C = C * softmax_c(mean_hw|X| / temp)`` (N, C);
    * masks: every GT box is mapped onto the map by ``W / W_in`` and
      ``H / H_in``, then ``x1 -> floor``, ``x2 -> ceil`` (same for y); cells
      ``[floor(y1), ceil(y2)] x [floor(x1), ceil(x2)]`` (inclusive) get
      ``1 / ((ceil(y2) + 1 - floor(y1)) * (ceil(x2) + 1 - floor(x1)))`` and
      ``M_fg`` is the max over boxes (the area uses the unclipped indices,
      as in the official code). ``M_bg = 1`` where ``M_fg == 0``, divided by
      its sum per image (left as is if the image is all foreground);
    * ``L_fg = sum(M_fg * A_S^T * A_C^T * (S - T)^2) / N`` and ``L_bg`` the
      same with ``M_bg`` (teacher attentions only);
    * ``L_at = (sum|A_C^S - A_C^T| + sum|A_S^S - A_S^T|) / N``;
    * ``L_global = sum((S + G_s(S) - T - G_t(T))^2) / N``, with ``G`` a
      GcBlock (softmax context pooling by ``conv_mask``, then
      ``conv1x1(C, C/2) - LayerNorm - ReLU - conv1x1(C/2, C)``); student and
      teacher have their own GcBlock, both trained by this loss;
    * ``loss = loss_weight * (alpha * L_fg + beta * L_bg + gamma * L_at +
      lambda * L_global)``.

    The loss runs as one :class:`torch.autograd.Function` with a
    hand-written backward (:class:`_FGDLevel`): the values and gradients of
    the formulas above (and of the plain form :meth:`get_rela_loss`) in a
    fixed number of ATen calls per level (under 300 without ``align``),
    whatever the batch size and the number of boxes; autograd made over a
    thousand, most of them bookkeeping around tiny tensors. The masks of
    all images and boxes are built at once (:meth:`get_masks`). The scalar
    bias of ``conv_mask`` cancels in the softmax over positions; its
    gradient (zero up to round-off) is computed all the same. Gradients
    reach ``T`` too when it requires them (the distillation term detaches
    it); second-order gradients are not supported.

    Initialisation as in the official code: ``conv_mask`` Kaiming-normal
    (``fan_in``, ReLU gain) with zero bias, the last conv of each
    ``channel_add_conv`` zero, everything else PyTorch's default. With the
    zero last conv the GcBlocks start as the identity.

    The 1x1 ``align`` conv stays inside the loss (rather than a connector)
    because it is part of the method: the official ``FeatureLoss`` owns it,
    and checkpoints hold it under this loss. The loss computes in the dtype
    of its inputs (autocast off); like any module with parameters it must
    be converted with them (``loss.double()``, or the whole distiller).

    Differences from the official code:

    * Boxes are mapped with the padded ``batch_input_shape``, the size the
      feature map is computed from; the official code divides by the
      unpadded ``img_shape``, which stretches boxes when the batch is
      padded. Both agree when there is no padding.
    * Negative ``floor(x1)`` / ``floor(y1)`` (boxes leaving the image) are
      clipped to 0; the official code slices with the negative index,
      which usually gives an empty slice and drops the box.
    * ``loss_weight`` (default 1) is an extra overall factor.
    * ``(sqrt(w) * S - sqrt(w) * T)^2`` is computed as ``w * (S - T)^2``
      (same value and gradient; the weights come from the teacher only).
    * The mask is indexed ``[y, x]`` as in official commit ``f1da292`` and
      mmrazor; an earlier official version (``04900ad``) sliced it
      ``[x, y]``.

    Args:
        student_channels: Channels of the student feature (filled in by the
            distiller).
        teacher_channels: Channels of the teacher feature (filled in by the
            distiller). A 1x1 ``align`` conv maps the student to these if
            they differ.
        temp: Temperature of the attentions. Defaults to 0.5.
        alpha_fgd: Weight of the foreground loss. Defaults to 0.001.
        beta_fgd: Weight of the background loss. Defaults to 0.0005.
        gamma_fgd: Weight of the attention (mask) loss. Defaults to 0.001.
        lambda_fgd: Weight of the global relation loss. Defaults to 5e-6.
        loss_weight: Extra factor on the total. Defaults to 1.0.
    """

    #: A 1x1 conv aligns student channels to the teacher's.
    allow_channel_mismatch = True

    #: Ground truth this loss reads from every data sample.
    gt_field = 'gt_instances'

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 temp: float = 0.5,
                 alpha_fgd: float = 0.001,
                 beta_fgd: float = 0.0005,
                 gamma_fgd: float = 0.001,
                 lambda_fgd: float = 0.000005,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if teacher_channels < 2:
            raise ValueError('FGDLoss needs teacher_channels >= 2 (GcBlock '
                             f'bottleneck C // 2), got {teacher_channels}')
        self.temp = float(temp)
        self.alpha_fgd = float(alpha_fgd)
        self.beta_fgd = float(beta_fgd)
        self.gamma_fgd = float(gamma_fgd)
        self.lambda_fgd = float(lambda_fgd)
        self.loss_weight = float(loss_weight)
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(
                student_channels, teacher_channels, kernel_size=1)
        else:
            self.align = None
        c = teacher_channels
        self.conv_mask_s = nn.Conv2d(c, 1, kernel_size=1)
        self.conv_mask_t = nn.Conv2d(c, 1, kernel_size=1)
        self.channel_add_conv_s = self._channel_add(c)
        self.channel_add_conv_t = self._channel_add(c)
        self.reset_parameters()

    @staticmethod
    def _channel_add(c: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c, c // 2, kernel_size=1),
            nn.LayerNorm([c // 2, 1, 1]), nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, kernel_size=1))

    def reset_parameters(self) -> None:
        """Official init: Kaiming ``conv_mask``, zero last GcBlock conv."""
        for conv in (self.conv_mask_s, self.conv_mask_t):
            nn.init.kaiming_normal_(
                conv.weight, a=0, mode='fan_in', nonlinearity='relu')
            nn.init.zeros_(conv.bias)
        for seq in (self.channel_add_conv_s, self.channel_add_conv_t):
            nn.init.zeros_(seq[-1].weight)
            nn.init.zeros_(seq[-1].bias)

    # ------------------------------------------------------------------
    def get_attention(self,
                      feat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Spatial (N, H, W) and channel (N, C) attention of ``feat``."""
        N, C, H, W = feat.shape
        zero = torch.scalar_tensor(0, dtype=feat.dtype, device=feat.device)
        probs_s, probs_c = _attention(_flat(feat), zero, self.temp)
        return H * W * probs_s.view(N, H, W), C * probs_c.view(N, C)

    @staticmethod
    def _fg_mask(data_samples: List, H: int, W: int, zero: torch.Tensor,
                 one: torch.Tensor) -> torch.Tensor:
        """Foreground mask, flat (N, 1, 1, H*W): all images and boxes at once.

        The boxes of :func:`padded_gt_bboxes` (N, M, 4) are mapped as
        ``(x1, y1) * (W, H) / (W_in, H_in)`` and ``(x2, y2) * (-W, -H) /
        (W_in, H_in)``, so that one ``floor`` gives the cells
        ``c = (floor(x1), floor(y1), -ceil(x2), -ceil(y2))``. Cell ``g`` of
        the map is inside a box when ``c <= (g, g, -g, -g)``: the integer
        ``(g, g, -g, -g) - c + 1`` clamped to ``[0, 1]`` is 1 exactly
        then, and its product over the two corners is the box's 0/1 mask
        of the columns (x) or rows (y). The mask is the max over boxes of
        ``rows * cols * area``; the padding rows get area 0.

        ``zero`` and ``one`` are 0-dim tensors of the mask's dtype and
        device; the box coordinates are mapped in float32, the GT's
        precision.
        """
        dtype = zero.dtype
        boxes, valid, input_hw = padded_gt_bboxes(data_samples, zero.device)
        N, M = valid.shape
        L = max(H, W)
        # (corner, xy, (H_in, W_in)): the zeros pick W_in for x, H_in for y
        size = input_hw.new_tensor([[[0, W], [H, 0]], [[0, -W], [-H, 0]]])
        grid = input_hw.new_tensor([[list(range(1, L + 1))],
                                    [list(range(1, 1 - L, -1))]])
        corners = boxes.view(N, M, 2, 2, 1) / input_hw.view(N, 1, 1, 1, 2)
        cells = (corners * size).sum(4, keepdim=True).floor_()
        zero32, one32 = _to(zero, cells.dtype), _to(one, cells.dtype)
        # (ceil(x2) + 1 - floor(x1), ...) unclipped, as in the official
        # code; at least 1 so that an inverted box (no cell) stays finite
        extent = torch.sub(one32, cells.sum(2, keepdim=True)).clamp_min_(1)
        area = _to(extent, dtype).prod(3, keepdim=True).reciprocal_()
        area = torch.where(valid.view(N, M, 1, 1, 1), area, zero)
        inside = torch.clamp(grid - cells, zero32, one32).prod(2, keepdim=True)
        inside = _to(inside, dtype)  # (N, M, 1, xy, L)
        cols, rows = inside[:, :, :, :1, :W], inside[:, :, :, 1, :H]
        fg = rows.view(N, M, 1, H, 1) * area * cols  # (N, M, 1, H, W)
        return fg.amax(1, keepdim=True).view(N, 1, 1, H * W)

    @staticmethod
    def get_masks(data_samples: List, N: int, H: int, W: int,
                  device: torch.device,
                  dtype: torch.dtype = torch.float32
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Foreground (area-scaled) and normalised background masks.

        Built for all images and boxes at once, see :meth:`_fg_mask`.

        Args:
            data_samples: One ``DetDataSample``-like object per image.
            N, H, W: Batch size and feature map size.
            device: Device of the masks.
            dtype: Dtype of the masks (that of the features). Box
                coordinates are mapped in float32, the GT's precision.

        Returns:
            ``(mask_fg, mask_bg)``, each of shape (N, H, W).
        """
        check_samples(data_samples, N, 'FGDLoss')
        zero, one = _zero_one(dtype, device)
        mask_fg = FGDLoss._fg_mask(data_samples, H, W, zero, one)
        mask_bg = _background(mask_fg, one)
        # an all-foreground image keeps its zero background
        mask_bg = mask_bg / _count(mask_bg)
        return mask_fg.view(N, H, W), mask_bg.view(N, H, W)

    def _focal_weights(self, data_samples: List, H: int, W: int,
                       zero: torch.Tensor,
                       one: torch.Tensor) -> torch.Tensor:
        """``alpha * M_fg + beta * M_bg`` of a level, (N, 1, 1, H*W)."""
        mask_fg = self._fg_mask(data_samples, H, W, zero, one)
        is_bg = _background(mask_fg, one)
        return torch.addcmul(_scaled(zero, mask_fg, self.alpha_fgd), is_bg,
                             _count(is_bg).reciprocal_(), value=self.beta_fgd)

    def spatial_pool(self, x: torch.Tensor, conv_mask: nn.Conv2d
                     ) -> torch.Tensor:
        """GcBlock context: softmax-weighted sum over H*W, (N, C, 1, 1).

        The 1x1 ``conv_mask`` (C -> 1) is applied as a matrix product: same
        parameters and value as the convolution, but far cheaper to
        differentiate on CPU than a one-output-channel convolution.
        """
        N, C, H, W = x.shape
        flat = x.reshape(N, C, H * W)
        logits = torch.matmul(conv_mask.weight.reshape(1, C), flat)
        weights = F.softmax(logits + conv_mask.bias.reshape(1, 1, 1), dim=2)
        context = torch.bmm(flat, weights.transpose(1, 2))
        return context.reshape(N, C, 1, 1)

    def get_rela_loss(self, preds_S: torch.Tensor,
                      preds_T: torch.Tensor) -> torch.Tensor:
        """Global relation loss between the GcBlock outputs (reference form).

        ``sum((S + G_s(S) - T - G_t(T))^2) / N``; :meth:`forward` computes
        the same value without building the (N, C, H, W) GcBlock outputs.
        """
        out_s = preds_S + self.channel_add_conv_s(
            self.spatial_pool(preds_S, self.conv_mask_s))
        out_t = preds_T + self.channel_add_conv_t(
            self.spatial_pool(preds_T, self.conv_mask_t))
        return (out_s - out_t).pow(2).sum() / len(out_s)

    def _gc_params(self) -> List[torch.Tensor]:
        """The GcBlock parameters, student's then teacher's."""
        params = []
        for mask, seq in ((self.conv_mask_s, self.channel_add_conv_s),
                          (self.conv_mask_t, self.channel_add_conv_t)):
            params += [mask.weight, mask.bias]
            params += [t for i in (0, 1, 3) for t in (seq[i].weight,
                                                      seq[i].bias)]
        return params

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                data_samples: List) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C_s, H, W).
            preds_T: Teacher feature, shape (N, C_t, H, W).
            data_samples: One ``DetDataSample`` per image, with
                ``gt_instances.bboxes`` (n, 4) xyxy pixels of the padded
                batch and ``metainfo['batch_input_shape']``.

        Returns:
            Scalar loss.
        """
        check_level_inputs(preds_S, preds_T, data_samples, 'FGDLoss')
        S = preds_S if self.align is None else self.align(preds_S)
        # The global term: the GcBlock adds one vector per image and
        # channel, so with D = S - T and e = G_s(S) - G_t(T) (N, C, 1, 1):
        # sum((D + e)^2) = sum(D^2) + 2 sum_nc e * sum_hw D + H*W * sum(e^2)
        # (= get_rela_loss, without materialising S + G_s(S), T + G_t(T)).
        k = self.loss_weight / len(S)
        weights = (self.alpha_fgd, self.beta_fgd, self.lambda_fgd)
        cfg = _Config(self.temp, k, self.gamma_fgd, self.lambda_fgd,
                      self.channel_add_conv_s[1].eps,
                      self.channel_add_conv_t[1].eps,
                      all(k * w >= 0 for w in weights))
        device = preds_T.device.type
        # the Function computes in the inputs' dtype, forward and backward
        with torch.autocast(device, enabled=False) if (
                torch.is_autocast_enabled(device)) else nullcontext():
            zero, one = _zero_one(preds_T.dtype, preds_T.device)
            focal = self._focal_weights(data_samples, *preds_T.shape[2:],
                                        zero, one)
            return _FGDLevel.apply(S, preds_T, focal, zero, cfg,
                                   *self._gc_params())
