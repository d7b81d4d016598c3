"""FPN levels as one tensor, so that a loss runs once for all levels.

A distillation term over an FPN calls a per-level loss once per level; the
levels differ only in their spatial size, so a loss whose math is the same
on every level (no per-level parameters, no per-level inputs) can run on
the levels joined along the flattened spatial dimension instead:
``(N, C, H_l, W_l)`` for ``l = 1..L`` become one ``(N, C, S)`` tensor,
``S = sum_l H_l W_l``. Whatever the loss reduces over a level's positions
becomes a *segment* reduction (an ``index_add`` over the level index of
each position), and per-level results are spread back to the positions
with one ``index_select``, so the number of operator calls no longer grows
with the number of levels (apart from the join and its backward, a view
and a slice per level). Values and gradients equal the per-level calls up
to float rounding (sums in another order).

It saves kernel launches, not work: the segment operations make more
passes over the features than the per-level kernels (a fused
``log_softmax`` becomes six), so on a CPU, where an operator call costs
little more than its work, the per-level calls are faster (forward +
backward on a 5-level FPN of 32 channels, batch 2-8: AT about the same,
PKD 1.2-1.5x, MSE 2x, CWD 4-5x the CPU time of the per-level calls). The
distillation term therefore joins the levels on accelerators only, by
default (``FeatureDistillTerm.batch_levels``).

A loss opts in with ``batches_levels = True`` and a ``forward_levels
(preds_S, preds_T)`` method returning the ``(L,)`` per-level values,
``torch.stack([loss(s, t) for s, t in zip(preds_S, preds_T)])`` in value;
:meth:`LevelBatch.of` tells it whether the levels can be joined (else it
calls :func:`per_level_values`).
"""
from functools import lru_cache
from typing import Callable, List, Optional, Sequence, Tuple

import torch

__all__ = ['LevelBatch', 'per_level_values']

Levels = Sequence[torch.Tensor]


def per_level_values(loss: Callable, preds_S: Levels,
                     preds_T: Levels) -> torch.Tensor:
    """``(L,)``: ``loss(s, t)`` on each level, one call per level."""
    if len(preds_S) != len(preds_T):
        raise ValueError(f'got {len(preds_S)} student levels and '
                         f'{len(preds_T)} teacher levels')
    return torch.stack([loss(s, t) for s, t in zip(preds_S, preds_T)])


@lru_cache(maxsize=64)
def _layout(sizes: Tuple[int, ...], device: torch.device,
            dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """``sizes`` as a ``dtype`` tensor and the level of each position
    (cached: the shapes repeat from step to step; never written to; made
    as normal tensors even under inference mode, as autograd saves
    them)."""
    with torch.inference_mode(False):
        size = torch.tensor(sizes, device=device)
        seg = torch.repeat_interleave(size, output_size=sum(sizes))
        return size.to(dtype), seg


class LevelBatch:
    """The levels' layout: positions per level and the level of each.

    Args:
        sizes: Positions ``H_l * W_l`` of each level.
        like: A feature: device and dtype of :attr:`size`.

    Attributes:
        sizes: As given.
        num_levels: ``L``.
        size: ``(L,)`` tensor of ``sizes`` (``like``'s dtype).
        seg: ``(S,)`` long tensor, the level of every joined position.
    """

    def __init__(self, sizes: List[int], like: torch.Tensor) -> None:
        self.sizes = list(sizes)
        self.num_levels = len(self.sizes)
        self.size, self.seg = _layout(tuple(self.sizes), like.device,
                                      like.dtype)

    @classmethod
    def of(cls, *sides: Levels) -> Optional['LevelBatch']:
        """The layout of ``sides`` (e.g. student and teacher levels), or
        None when they cannot be joined.

        Joinable: at least two levels per side, the same number on every
        side; every level 4-D ``(N, C, H_l, W_l)``; within a side the same
        N and C on all levels; level ``l`` of every side the same
        ``H_l, W_l``; one device and floating dtype.
        """
        first = sides[0]
        if len(first) < 2 or any(len(s) != len(first) for s in sides):
            return None
        for levels in sides:
            if any(x.dim() != 4 or x.shape[:2] != levels[0].shape[:2]
                   or x.shape[2:] != f.shape[2:] or x.device != f.device
                   or x.dtype != f.dtype or not x.is_floating_point()
                   for x, f in zip(levels, first)):
                return None
        return cls([x.shape[2] * x.shape[3] for x in first], first[0])

    def join(self, levels: Levels) -> torch.Tensor:
        """``(N, C, S)``: the levels flattened and concatenated."""
        n, c = levels[0].shape[:2]
        return torch.cat([x.reshape(n, c, -1) for x in levels], dim=2)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """Per-level sums over the last dim: ``(..., S)`` -> ``(..., L)``."""
        out = x.new_zeros(*x.shape[:-1], self.num_levels)
        return out.index_add_(x.dim() - 1, self.seg, x)

    def spread(self, v: torch.Tensor) -> torch.Tensor:
        """Each level's value at its positions: ``(..., L)`` ->
        ``(..., S)``."""
        return v.index_select(v.dim() - 1, self.seg)

    def amax(self, x: torch.Tensor) -> torch.Tensor:
        """Per-level maxima over the last dim (no gradient), ``(..., L)``.

        One ``scatter_reduce``; one ``amax`` per level where PyTorch is
        asked for deterministic algorithms on a GPU (its CUDA
        ``scatter_reduce`` refuses then, though a maximum is exact).
        """
        x = x.detach()
        if x.device.type != 'cpu' and \
                torch.are_deterministic_algorithms_enabled():
            return torch.stack(
                [v.amax(-1) for v in x.split(self.sizes, dim=-1)], dim=-1)
        out = x.new_empty(*x.shape[:-1], self.num_levels)
        return out.scatter_reduce(x.dim() - 1, self.seg.expand_as(x), x,
                                  'amax', include_self=False)

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        """Log-softmax over each level's positions along the last dim.

        ``x - m - log(sum exp(x - m))`` per level, ``m`` the level's
        maximum (as :func:`torch.log_softmax`; ``m`` carries no gradient,
        the result does not depend on it).
        """
        z = x - self.spread(self.amax(x))
        return z - self.spread(self.sum(z.exp()).log())
