"""Token sequences (N, L, C) of a transformer block as maps (N, C, H, W)."""
import contextlib
import contextvars
import math
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from visionkd.registry import MODELS

__all__ = ['TokensToMapConnector', 'input_size_scope', 'token_grid']

#: (H, W) of the batch the distiller is running (None outside a distiller
#: step): the aspect ratio the token grid follows.
_INPUT_SIZE: contextvars.ContextVar = contextvars.ContextVar(
    'visionkd_input_size', default=None)


@contextlib.contextmanager
def input_size_scope(size: Optional[Sequence[int]]) -> Iterator[None]:
    """Let :class:`TokensToMapConnector` read the input (H, W) inside.

    The segmentation distiller opens it around its build (the dry-run
    size) and around every ``loss`` call (the batch size).
    """
    token = _INPUT_SIZE.set(None if size is None else tuple(
        int(s) for s in size[-2:]))
    try:
        yield
    finally:
        _INPUT_SIZE.reset(token)


def current_input_size() -> Optional[Tuple[int, int]]:
    """The (H, W) of :func:`input_size_scope`, or None outside one."""
    return _INPUT_SIZE.get()


def _fits(size: int, cells: int, lo: float, hi: float) -> Tuple[float, float]:
    """Stride interval ``(lo, hi)`` narrowed to the strides ``s`` for which
    ``cells`` is ``floor(size / s)`` or ``ceil(size / s)`` (up to one cell).
    """
    lo = max(lo, size / (cells + 1))
    hi = min(hi, size / (cells - 1) if cells > 1 else math.inf)
    return lo, hi


def token_grid(num_tokens: int,
               size: Sequence[int]) -> Optional[Tuple[int, int]]:
    """The (h, w) grid of ``num_tokens`` tokens of an image of ``size``.

    A token grid of stride ``s`` has about ``size / s`` cells per side
    (``floor`` or ``ceil`` by the padding). Among the factor pairs
    ``h * w == num_tokens`` with one stride that fits both sides, the one
    whose two strides agree best is returned; None if no pair fits (e.g. a
    class token makes ``L = h * w + 1``).

    Args:
        num_tokens: L.
        size: (H, W) of the input image, or of a map of the same image
            (the grid then follows its aspect ratio).
    """
    height, width = int(size[0]), int(size[1])
    best, best_score = None, math.inf
    for h in range(1, num_tokens + 1):
        if num_tokens % h:
            continue
        w = num_tokens // h
        lo, hi = _fits(height, h, 0.0, math.inf)
        lo, hi = _fits(width, w, lo, hi)
        if lo >= hi:
            continue
        score = abs(math.log((height / h) / (width / w)))
        if score < best_score:
            best, best_score = (h, w), score
    return best


@MODELS.register_module()
class TokensToMapConnector(nn.Module):
    """Reshape a token sequence (N, L, C) into a map (N, C, h, w).

    Transformer blocks (e.g. the blocks of mmseg's MixVisionTransformer,
    ``backbone.layers.<i>.1.<j>``) output tokens; losses and the other
    connectors work on maps. The grid (h, w) is, in this order:
    ``hw_shape`` if given; else inferred from L and the aspect ratio of the
    input image when a distiller provides it (:func:`input_size_scope`,
    as :class:`SegmentationDistiller` does); else from the aspect ratio of
    the map the tokens are compared with (``target``), see
    :func:`token_grid`. A map (4-D input) passes through unchanged.

    A distillation term whose one side records tokens and the other a map
    gets this connector automatically (first in the chain of the token
    side; see :mod:`visionkd.models.connectors.inference`).

    Args:
        hw_shape: Fixed (h, w) of the grid (L must be h * w).
    """

    def __init__(self, hw_shape: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.hw_shape = tuple(hw_shape) if hw_shape is not None else None
        if self.hw_shape is not None and (
                len(self.hw_shape) != 2 or min(self.hw_shape) < 1):
            raise ValueError(f'hw_shape must be (h, w) with h, w >= 1, got '
                             f'{hw_shape!r}')

    def grid(self, num_tokens: int,
             target: Optional[torch.Tensor] = None) -> Tuple[int, int]:
        """The (h, w) of ``num_tokens`` tokens (see the class docstring).

        Raises:
            ValueError: no grid fits, with the fix.
        """
        if self.hw_shape is not None:
            h, w = self.hw_shape
            if h * w != num_tokens:
                raise ValueError(
                    f'TokensToMapConnector: hw_shape={self.hw_shape} has '
                    f'{h * w} cells but the layer gives {num_tokens} tokens; '
                    f'fix hw_shape or leave it out to infer the grid')
            return h, w
        ref = current_input_size()
        if ref is None and target is not None and target.dim() == 4:
            ref = tuple(target.shape[2:])
        if ref is None:
            raise ValueError(
                f'TokensToMapConnector cannot infer the grid of {num_tokens} '
                f'tokens: no input size and no target map; give '
                f'hw_shape=(h, w)')
        hw = token_grid(num_tokens, ref)
        if hw is None:
            raise ValueError(
                f'TokensToMapConnector: {num_tokens} tokens form no h x w '
                f'grid of the aspect ratio of a {ref[0]}x{ref[1]} image '
                f'(a class token or pooled tokens?); record a layer whose '
                f'tokens are one per location, or give hw_shape=(h, w)')
        return hw

    def forward(self,
                x: torch.Tensor,
                target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Map (N, L, C) tokens to (N, C, h, w); a 4-D map is returned as it
        is.

        Args:
            x: Tokens (N, L, C) or a map (N, C, H, W).
            target: The map ``x`` is compared with (only its size is read).
        """
        if x.dim() == 4:
            return x
        if x.dim() != 3:
            raise ValueError(f'TokensToMapConnector takes (N, L, C) tokens, '
                             f'got shape {tuple(x.shape)}')
        n, length, channels = x.shape
        h, w = self.grid(length, target)
        return x.transpose(1, 2).reshape(n, channels, h, w)
