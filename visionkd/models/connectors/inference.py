"""Connectors a feature term gets without asking, from its dry-run shapes.

Two alignments are unambiguous and parameter-free, so a term does not have
to spell them out:

* **tokens <-> maps**: a side that records a token sequence (N, L, C)
  while the other side records a map (N, C, H, W) (a transformer block
  against a CNN stage, or two transformer blocks of other grids) gets a
  :class:`TokensToMapConnector` first in its chain (the teacher's in
  ``teacher_connector``); channels and spatial size are then the business
  of the term's own connectors, as for two maps.
* **class logits of other strides**: when both layers are the classifier
  of a segmentation head (``decode_head.conv_seg``,
  ``auxiliary_head.<i>.conv_seg``, ...) and the maps differ in size (a
  stride-4 SegFormer or DeepLabV3+ student under a stride-8 DeepLabV3
  teacher), a :class:`ResizeConnector` last in the student's chain
  resizes the student logits to the teacher's size (bilinear, with
  ``antialias=True`` so that a finer student map is low-pass filtered, not
  subsampled, when it shrinks). The loss itself never resizes (see the
  losses' docstrings).

* **a teacher at its own input scale** (``teacher_input=dict(
  scale_factor=...)``): when the teacher's maps differ in size from the
  student's, a :class:`ResizeConnector` first in the teacher's chain
  resizes the teacher map to the student map's size (bilinear,
  antialiased), so the loss (and any ground-truth mask it builds from the
  student's image metas) works at the student's resolution.

Feature maps of other strides or channels are not aligned silently: the
term's shape check asks for ``ConvConnector`` / ``ResizeConnector``. What
was inferred is logged (INFO) per term.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from .tokens_to_map_connector import current_input_size, token_grid

__all__ = ['class_logits_of', 'infer_connectors']

_TOKENS = 'TokensToMapConnector'
_RESIZE = 'ResizeConnector'


def class_logits_of(model: nn.Module, path: str) -> Optional[int]:
    """Number of classes if ``path`` is the classifier of an mmseg decode
    head (a conv whose output channels are the head's), else None."""
    try:
        module = model.get_submodule(path)
        parent = model.get_submodule(path.rpartition('.')[0])
    except AttributeError:
        return None
    try:
        from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    except ImportError:  # pragma: no cover - mmseg is a dependency
        return None
    if isinstance(module, nn.Conv2d) and isinstance(
            parent, BaseDecodeHead) and (
                module.out_channels == parent.out_channels):
        return int(module.out_channels)
    return None


def _type_name(cfg: dict) -> str:
    typ = cfg.get('type') if isinstance(cfg, dict) else None
    name = typ if isinstance(typ, str) else getattr(typ, '__name__', '')
    return name.split('.')[-1]


def _has(cfgs: List[dict], type_name: str) -> bool:
    return any(_type_name(c) == type_name for c in cfgs)


def _check_grid(where: str, side: str, path: str, tokens: torch.Tensor,
                other: torch.Tensor) -> None:
    """Raise unless ``tokens`` form a grid of the input (or, for the
    student, whose connectors see the teacher map, of the other map)."""
    ref = current_input_size()
    if ref is None and side == 'student' and other.dim() == 4:
        ref = tuple(other.shape[2:])
    if ref is not None and token_grid(tokens.shape[1], ref) is not None:
        return
    size = 'an unknown input size' if ref is None else (
        f'a {ref[0]}x{ref[1]} image')
    raise ValueError(
        f'{where}: the {side} layer {path!r} records {tuple(tokens.shape)} '
        f'tokens, which form no h x w grid of {size} (a class token or '
        f'pooled tokens?), so they cannot be aligned with the other '
        f"side's {tuple(other.shape)}; record a layer with one token per "
        f'location (or a map), or give the grid: '
        f"connector=dict(type='{_TOKENS}', hw_shape=(h, w))")


def _token_sides(s: torch.Tensor, t: torch.Tensor) -> Tuple[bool, bool]:
    """Which sides need tokens turned into maps: (student, teacher)."""
    ranks = (s.dim(), t.dim())
    if ranks == (3, 4):
        return True, False
    if ranks == (4, 3):
        return False, True
    if ranks == (3, 3) and s.shape != t.shape:
        return True, True
    return False, False


def _infer_tokens(term, s: torch.Tensor, t: torch.Tensor,
                  student: List[dict], teacher: List[dict]) -> List[str]:
    """Prepend TokensToMapConnector where a side records tokens."""
    notes = []
    to_map = _token_sides(s, t)
    for side, chain, path, x, other, needed in (
            ('student', student, term.student_path, s, t, to_map[0]),
            ('teacher', teacher, term.teacher_path, t, s, to_map[1])):
        if not needed or _has(chain, _TOKENS):
            continue
        _check_grid(f'distill term {term.name!r}', side, path, x, other)
        chain.insert(0, dict(type=_TOKENS))
        notes.append(f'{_TOKENS} ({side} tokens {tuple(x.shape)})')
    return notes


def _infer_resize(term, ctx, s: torch.Tensor, t: torch.Tensor,
                  student: List[dict]) -> List[str]:
    """Append ResizeConnector for class logits of another size."""
    if s.dim() != 4 or t.dim() != 4 or s.shape[2:] == t.shape[2:]:
        return []
    if getattr(term, 'record', 'output') != 'output' or _has(
            student, _RESIZE):
        return []
    if class_logits_of(ctx.student, term.student_path) is None or \
            class_logits_of(ctx.teacher, term.teacher_path) is None:
        return []
    student.append(dict(type=_RESIZE, antialias=True))
    return [f'{_RESIZE} (student logits {tuple(s.shape[2:])} -> teacher '
            f'{tuple(t.shape[2:])})']


def _infer_teacher_scale(term, ctx, s: torch.Tensor, t: torch.Tensor,
                         teacher: List[dict]) -> List[str]:
    """Prepend a teacher-side ResizeConnector for a teacher at another
    input scale."""
    if getattr(ctx, 'teacher_scale', 1.0) == 1.0 or s.dim() != 4 or \
            t.dim() != 4 or s.shape[2:] == t.shape[2:] or _has(
                teacher, _RESIZE):
        return []
    teacher.insert(0, dict(type=_RESIZE, antialias=True))
    return [f'{_RESIZE} (teacher at {ctx.teacher_scale}x input: its map '
            f'{tuple(t.shape[2:])} -> student {tuple(s.shape[2:])})']


def infer_connectors(term, ctx, s_levels: Sequence[torch.Tensor],
                     t_levels: Sequence[torch.Tensor]
                     ) -> Tuple[List[dict], List[dict]]:
    """The connector chains of a feature term, inferred ones added.

    Args:
        term: The term being built (reads ``name``, ``student_path``,
            ``teacher_path``, ``record``, ``connector_cfgs`` and
            ``teacher_connector_cfgs``).
        ctx: Its :class:`~visionkd.models.distillers.terms.TermContext`.
        s_levels: The student's dry-run tensors of the kept levels.
        t_levels: The teacher's.

    Returns:
        ``(connector configs, teacher connector configs)``, new lists;
        the term's own configs are kept, in their order.

    Raises:
        ValueError: tokens that form no grid of the input, naming the term
            and the fix.
    """
    student = list(term.connector_cfgs)
    teacher = list(term.teacher_connector_cfgs)
    if not s_levels or not all(
            isinstance(x, torch.Tensor) for x in (*s_levels, *t_levels)):
        return student, teacher
    # levels of one layer share a layout: the first one decides
    s, t = s_levels[0], t_levels[0]
    notes = _infer_tokens(term, s, t, student, teacher)
    scaled = _infer_teacher_scale(term, ctx, s, t, teacher)
    notes += scaled or _infer_resize(term, ctx, s, t, student)
    if notes:
        MMLogger.get_current_instance().info(
            f'distill term {term.name!r}: inferred connector(s) '
            f'{"; ".join(notes)}')
    return student, teacher
