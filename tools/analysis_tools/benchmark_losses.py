"""Time and count the ATen calls of every registered distillation loss.

Each loss gets the inputs of its family (see ``FAMILIES``) built from one
synthetic detection batch: an FPN of ``--levels`` levels of ``--channels``
channels, P2 of ``--p2-size`` squared at stride 4 (so the padded input,
``batch_input_shape``, is ``4 * p2`` squared; levels 64, 32, 16, 8, 4 for
the default 256 x 256 input). A loss distilled per FPN level is built once
per level and called as the distillation term calls it: once per level, or,
for the parameter-free losses that batch levels (``batches_levels``, see
:mod:`visionkd.models.losses.level_batch`), once for all levels with
``forward_levels`` (``--per-level`` calls those per level too, as before
they batched). The levels' losses are summed before the backward pass. A
key of ``VARIANTS`` benchmarks a loss with other arguments (e.g.
``CIRKDMemoryLoss[batched]``: ``queue_sampling='batched'``). For three
settings, (batch 2, 2 GT boxes per image), (8, 2) and (2, 50), it
reports

* the ATen operator calls of forward + backward
  (:func:`visionkd.utils.count_aten_calls`; on a GPU each is at least one
  kernel launch, so this is what a loss costs on small tensors),
* the median wall time of forward + backward over ``--repeats`` runs
  (after one warm-up run; on this machine's device, the CPU here),
* how the count grows with the batch (8 / 2) and the boxes (50 / 2), and
  the count per loss call (per level).

A loss that reads no GT boxes has a box ratio of exactly 1.0; a count that
grows with the batch or the boxes points at a Python loop over images or
boxes. ``RECIPES`` holds every registered loss's family and constructor
arguments; a loss registered without one is refused (and fails
``tests/test_tools/test_benchmark_losses.py``)::

    python tools/analysis_tools/benchmark_losses.py [--losses FGDLoss ...]
        [--channels 32] [--p2-size 64] [--levels 5] [--repeats 5]
        [--threads N] [--per-level] [--json | --markdown]
"""
import argparse
import json
import math
import os.path as osp
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
import torch.nn as nn
from mmengine.registry import DefaultScope
from mmengine.structures import BaseDataElement, InstanceData, PixelData

import visionkd  # noqa: F401
from visionkd.registry import MODELS
from visionkd.utils import count_aten_calls

#: Classes of the synthetic batch: detection (COCO), segmentation
#: (Cityscapes).
DET_CLASSES = 80
SEG_CLASSES = 19
#: Bins per box side of the GFL heads (``reg_max + 1``).
BINS = 17
#: Sampled RoIs per image (mmdet's RandomSampler ``num``) and their
#: foreground fraction (its ``pos_fraction``).
ROIS_PER_IMAGE = 512
ROI_POS_FRACTION = 0.25
#: KD-DETR: student decoder layers and distillation queries per image
#: (DINO's 900 own queries + 300 random points).
DETR_LAYERS = 6
DETR_QUERIES = 1200
#: DETRDistill: queries of one decoder layer (Deformable DETR's 300), its
#: best (query, class) pairs of the feature loss.
DETRDISTILL_QUERIES = 300
DETRDISTILL_TOPK = 100
#: (batch, GT boxes per image); the first is the base of the ratios.
SETTINGS = ((2, 2), (8, 2), (2, 50))

#: What each family of losses is given (``{}`` filled from the settings).
FAMILIES = {
    'feature': 'per FPN level l: student and teacher features (N, C, s, s), '
               's = p2 / 2^l; one loss per level, one call per level or, '
               'for a loss that batches levels (as the distillation term '
               'calls it), one forward_levels call for all; det GT: per '
               'image the GT boxes, random xyxy in the H x W input, sides '
               'log-uniform in [H / 16, 3 H / 4]',
    'seg_feature': 'decode-head features (N, C, H / 8, W / 8); one call; '
                   f'seg GT: (1, H, W) label maps of {SEG_CLASSES} classes '
                   'in 32 x 32 blocks, 2 ignored (255) rows',
    'head': 'per FPN level: the dense head flattened to M = N * s * s '
            f'locations: class logits (M, {DET_CLASSES}) or box bins '
            f'(M, 4 * {BINS}) (BCKD), side bins (4 M, {BINS}) (LD / '
            'CrossKD), weight 1 per row; one call per level',
    'seg_logits': f'decode-head logits (N, {SEG_CLASSES}, H / 8, W / 8); '
                  'one call',
    'detr': f'KD-DETR: the student\'s {DETR_LAYERS} decoder layers at '
            f'{DETR_QUERIES} shared queries per image: class logits '
            f'({DETR_LAYERS}, N, {DETR_QUERIES}, {DET_CLASSES}) or boxes '
            f'(..., 4) in [0, 1] vs the teacher\'s; weight: the teacher\'s '
            'confidence; one call',
    'detr_distill': f'DETRDistill, one decoder layer: {DETRDISTILL_QUERIES} '
                    f'student and teacher queries per image, class logits '
                    f'(N, {DETRDISTILL_QUERIES}, {DET_CLASSES}) and boxes '
                    f'(Hungarian matching on the CPU); the feature loss: '
                    f'the FPN levels of the feature family, the teacher '
                    f'layer\'s hidden states (N, {DETRDISTILL_QUERIES}, C), '
                    f'its top {DETRDISTILL_TOPK} pairs and det GT; one call',
    'roi': f'R = N * {ROIS_PER_IMAGE} sampled RoIs: class logits '
           f'(R, {DET_CLASSES + 1}), class-specific box deltas '
           f'(R, {4 * DET_CLASSES}), {ROI_POS_FRACTION:.0%} foreground '
           'labels; one call',
}

#: Constructor placeholders filled in by :func:`build_losses`.
CHANNELS = '<channels>'
STRIDES = '<strides>'


@dataclass(frozen=True)
class Recipe:
    """How a loss is benchmarked.

    Attributes:
        family: Key of ``FAMILIES``: the inputs the loss gets.
        kwargs: Constructor arguments; ``CHANNELS`` and ``STRIDES`` values
            become the FPN's channel count and level strides.
        gt: Ground truth passed as third argument: ``'det'`` (boxes),
            ``'seg'`` (label maps) or None.
        head: ``head`` family only: rows per location, columns and
            ``avg_factor`` (None: the level's number of locations).
    """

    family: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    gt: Optional[str] = None
    head: Tuple[int, int, Optional[float]] = (1, DET_CLASSES, None)


_S_T = dict(student_channels=CHANNELS, teacher_channels=CHANNELS)
#: Every registered loss, with the arguments of its configs in configs/.
RECIPES = {
    'ATLoss': Recipe('feature'),
    'ChannelWiseDivergence': Recipe('feature', dict(tau=1.0)),
    'FeatureMSELoss': Recipe('feature'),
    'PKDLoss': Recipe('feature'),
    'MGDLoss': Recipe('feature', _S_T),
    'FGDLoss': Recipe('feature', _S_T, 'det'),
    'FGFILoss': Recipe('feature', dict(_S_T, stride=None, scales=[8],
                                       adapter_relu=False), 'det'),
    'DeFeatLoss': Recipe('feature', dict(_S_T, strides=STRIDES), 'det'),
    'PairWiseAffinityLoss': Recipe('seg_feature', dict(pool_scale=0.5)),
    'IFVDLoss': Recipe('seg_feature', dict(num_classes=SEG_CLASSES),
                       'seg'),
    'CIRKDMiniBatchLoss': Recipe('seg_feature'),
    'CIRKDMemoryLoss': Recipe('seg_feature', dict(
        num_classes=SEG_CLASSES, teacher_channels=CHANNELS), 'seg'),
    # configs: num_groups=16; 4 divides the tests' 4-channel FPN too
    'AfDCDLoss': Recipe('seg_feature', dict(_S_T, num_groups=4)),
    'PixelWiseKDLoss': Recipe('seg_logits'),
    'DISTLoss': Recipe('seg_logits'),
    'KLDivergence': Recipe('seg_logits', dict(tau=4.0)),
    'BPKDLoss': Recipe('seg_logits', gt='seg'),
    'KDQualityFocalLoss': Recipe('head', dict(beta=1.0)),
    # CrossKD on GFL: the side bins of every location, avg_factor 4
    'KDKLDivLoss': Recipe('head', dict(T=1.0, class_reduction='sum'),
                          head=(4, BINS, 4.0)),
    'BCKDClsLoss': Recipe('head', dict(beta=1.0)),
    'BCKDRegLoss': Recipe('head', dict(loss_weight=4.0),
                          head=(1, 4 * BINS, None)),
    'RoIKDLoss': Recipe('roi', dict(tau=2.0, loss_weight_bbox=1.0)),
    'KDDETRClsLoss': Recipe('detr', dict(T=10.0)),
    'KDDETRBoxLoss': Recipe('detr', head=(1, 4, None)),
    'DETRDistillMatchLoss': Recipe('detr_distill'),
    'DETRDistillFeatureLoss': Recipe('detr_distill', dict(
        topk=DETRDISTILL_TOPK), 'det'),
}

#: Benchmarks of a registered loss with other arguments: ``name[label]``
#: -> its recipe (``kwargs`` added to the base recipe's).
VARIANTS = {
    'CIRKDMemoryLoss[batched]': dict(queue_sampling='batched'),
}

#: One loss call: positional and keyword arguments.
Call = Tuple[tuple, dict]


def registered_losses() -> List[str]:
    """Names of the losses registered by ``visionkd.models.losses``."""
    return sorted(
        name for name, cls in MODELS.module_dict.items()
        if cls.__module__.startswith('visionkd.models.losses'))


def benchmark_names() -> List[str]:
    """Every registered loss and every variant, each variant after its
    loss."""
    return sorted(registered_losses() + list(VARIANTS))


def base_name(name: str) -> str:
    """The registered loss of a benchmark name (``name[label]``)."""
    return name.split('[', 1)[0]


def recipe_of(name: str) -> Recipe:
    """The recipe of a registered loss or a ``VARIANTS`` key."""
    recipe = RECIPES[base_name(name)]
    if name in VARIANTS:
        recipe = Recipe(recipe.family, dict(recipe.kwargs, **VARIANTS[name]),
                        recipe.gt, recipe.head)
    return recipe


def level_sizes(p2_size: int, levels: int) -> List[int]:
    """Side of each FPN level, P2 first, halved per level (at least 1)."""
    return [max(1, p2_size >> i) for i in range(levels)]


def build_losses(name: str, channels: int, levels: int) -> List[nn.Module]:
    """The loss modules of one benchmark: one per call.

    Args:
        name: Registered loss name (a key of ``RECIPES``) or a
            ``VARIANTS`` key.
        channels: FPN channels (``CHANNELS`` placeholders).
        levels: FPN levels (``STRIDES`` placeholders: 4, 8, ...).

    Returns:
        One module per FPN level for the per-level families, else one.
    """
    recipe = recipe_of(name)
    fill = {CHANNELS: channels,
            STRIDES: tuple(4 * 2**i for i in range(levels))}
    cfg = {k: fill.get(v, v) if isinstance(v, str) else v
           for k, v in recipe.kwargs.items()}
    count = levels if recipe.family in ('feature', 'head') else 1
    with DefaultScope.overwrite_default_scope('visionkd'):
        return [MODELS.build(dict(type=base_name(name), **cfg))
                for _ in range(count)]


def random_boxes(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` xyxy boxes inside a ``size`` squared image, log-uniform sides
    between 1/16 and 3/4 of the image (so every FPN level gets some)."""
    lo, hi = math.log(size / 16), math.log(size * 3 / 4)
    wh = torch.exp(lo + (hi - lo) * torch.rand(n, 2, generator=gen))
    ctr = torch.rand(n, 2, generator=gen) * size
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1)
    return boxes.clamp(0, size)


def det_samples(batch: int, boxes: int, size: int,
                gen: torch.Generator) -> List[BaseDataElement]:
    """DetDataSample-like elements with ``boxes`` GT boxes each."""
    meta = dict(batch_input_shape=(size, size), img_shape=(size, size),
                pad_shape=(size, size))
    return [BaseDataElement(
        metainfo=meta, gt_instances=InstanceData(
            bboxes=random_boxes(boxes, size, gen),
            labels=torch.randint(0, DET_CLASSES, (boxes, ), generator=gen)))
        for _ in range(batch)]


def seg_samples(batch: int, size: int,
                gen: torch.Generator) -> List[BaseDataElement]:
    """SegDataSample-like elements: blocky label maps whose first two
    rows are ignored (255)."""
    out = []
    cells = max(1, size // 32)
    for _ in range(batch):
        coarse = torch.randint(0, SEG_CLASSES, (1, 1, cells, cells),
                               generator=gen).float()
        label = nn.functional.interpolate(coarse, (size, size))[0].long()
        label[:, :2] = 255
        meta = dict(img_shape=(size, size), pad_shape=(size, size))
        out.append(BaseDataElement(metainfo=meta,
                                   gt_sem_seg=PixelData(data=label)))
    return out


def _pair(shape: Sequence[int], gen: torch.Generator
          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A student leaf (requires grad) and a teacher tensor."""
    s = torch.randn(*shape, generator=gen).requires_grad_()
    return s, torch.randn(*shape, generator=gen)


def _head_calls(batch: int, sizes: List[int], recipe: Recipe,
                gen: torch.Generator) -> List[Call]:
    """Per level: flattened head outputs with unit weights."""
    per_loc, cols, avg = recipe.head
    calls = []
    for side in sizes:
        locs = batch * side * side
        calls.append((_pair((per_loc * locs, cols), gen), dict(
            weight=torch.ones(per_loc * locs),
            avg_factor=float(locs) if avg is None else avg)))
    return calls


def _detr_calls(batch: int, recipe: Recipe,
                gen: torch.Generator) -> List[Call]:
    """One call on every student decoder layer's shared queries."""
    cols = recipe.head[1]
    shape = (DETR_LAYERS, batch, DETR_QUERIES, cols)
    if cols == 4:  # boxes: normalised cx, cy, w, h
        s = torch.rand(*shape, generator=gen).requires_grad_()
        t = torch.rand(*shape, generator=gen)
    else:
        s, t = _pair(shape, gen)
    weight = torch.rand(*shape[:-1], generator=gen)
    return [((s, t), dict(weight=weight))]


def _detr_distill_calls(name: str, batch: int, boxes: int, channels: int,
                        sizes: List[int], gen: torch.Generator
                        ) -> List[Call]:
    """One call on one decoder layer (and, for the feature loss, all
    levels)."""
    q = DETRDISTILL_QUERIES
    cls_s, cls_t = _pair((batch, q, DET_CLASSES), gen)
    box_t = torch.rand(batch, q, 4, generator=gen) * 0.5 + 0.25
    if name == 'DETRDistillMatchLoss':
        box_s = (torch.rand(batch, q, 4, generator=gen) * 0.5 +
                 0.25).requires_grad_()
        return [((cls_s, box_s, cls_t, box_t), {})]
    feats = [_pair((batch, channels, s, s), gen) for s in sizes]
    hidden = torch.randn(batch, q, channels, generator=gen)
    size = 4 * sizes[0]
    return [(([f for f, _ in feats], [t for _, t in feats], hidden, cls_t,
              box_t, det_samples(batch, boxes, size, gen)), {})]


def _roi_calls(batch: int, gen: torch.Generator) -> List[Call]:
    """One call on all sampled RoIs of the batch."""
    rois = batch * ROIS_PER_IMAGE
    labels = torch.full((rois, ), DET_CLASSES, dtype=torch.long)
    pos = int(rois * ROI_POS_FRACTION)
    labels[:pos] = torch.randint(0, DET_CLASSES, (pos, ), generator=gen)
    s, t = _pair((rois, DET_CLASSES + 1), gen)
    box_s, box_t = _pair((rois, 4 * DET_CLASSES), gen)
    return [((s, t), dict(labels=labels, bbox_pred_S=box_s,
                          bbox_pred_T=box_t))]


def make_calls(name: str, batch: int, boxes: int, channels: int,
               p2_size: int, levels: int, seed: int = 0) -> List[Call]:
    """The loss calls of one benchmark (see ``FAMILIES``).

    Args:
        name: Registered loss name (a key of ``RECIPES``) or a
            ``VARIANTS`` key.
        batch: Images in the batch.
        boxes: GT boxes per image (detection-GT losses only).
        channels: FPN channels.
        p2_size: Side of P2 (stride 4).
        levels: FPN levels.
        seed: Seed of the inputs.

    Returns:
        ``(args, kwargs)`` of each call; student tensors require grad.
    """
    recipe = recipe_of(name)
    gen = torch.Generator().manual_seed(seed)
    sizes = level_sizes(p2_size, levels)
    if recipe.family == 'head':
        return _head_calls(batch, sizes, recipe, gen)
    if recipe.family == 'roi':
        return _roi_calls(batch, gen)
    if recipe.family == 'detr':
        return _detr_calls(batch, recipe, gen)
    if recipe.family == 'detr_distill':
        return _detr_distill_calls(base_name(name), batch, boxes, channels,
                                   sizes, gen)
    size = 4 * p2_size
    if recipe.family != 'feature':  # seg: one map at stride 8
        sizes = [max(1, size // 8)]
    if recipe.family == 'seg_logits':
        channels = SEG_CLASSES
    extra: tuple = ()
    if recipe.gt == 'det':
        extra = (det_samples(batch, boxes, size, gen), )
    elif recipe.gt == 'seg':
        extra = (seg_samples(batch, size, gen), )
    return [(_pair((batch, channels, s, s), gen) + extra, {})
            for s in sizes]


def batches_levels(name: str, losses: List[nn.Module],
                   calls: List[Call]) -> bool:
    """Whether the distillation term calls these per-level losses once
    for all levels (``forward_levels``), as
    ``FeatureDistillTerm.one_call_for_all_levels``."""
    return (recipe_of(name).family == 'feature' and len(calls) > 1
            and getattr(losses[0], 'batches_levels', False))


def _step(losses: List[nn.Module], calls: List[Call],
          one_call: bool = False) -> Callable[[], Any]:
    """Forward of every call, summed (grads cleared first); with
    ``one_call`` the per-level calls are one ``forward_levels`` call."""
    leaves = [a for args, kw in calls for a in _tensors(args, kw)
              if a.requires_grad]

    def fn() -> torch.Tensor:
        """Sum of the losses of all calls."""
        for t in leaves:
            t.grad = None
        for loss in losses:
            loss.zero_grad(set_to_none=True)
        if one_call:
            return losses[0].forward_levels(
                [args[0] for args, _ in calls],
                [args[1] for args, _ in calls]).sum()
        return sum(_total(loss(*args, **kw))
                   for loss, (args, kw) in zip(losses, calls))
    return fn


def _tensors(args: tuple, kwargs: dict) -> List[torch.Tensor]:
    """The tensors among the arguments (also inside lists of levels)."""
    out = []
    for a in (*args, *kwargs.values()):
        for x in (a if isinstance(a, (list, tuple)) else [a]):
            if isinstance(x, torch.Tensor):
                out.append(x)
    return out


def _total(value: Any) -> torch.Tensor:
    """A loss's value, its parts summed (DETRDistill's three)."""
    return sum(value) if isinstance(value, tuple) else value


def benchmark_loss(name: str, batch: int, boxes: int, channels: int = 32,
                   p2_size: int = 64, levels: int = 5, repeats: int = 5,
                   per_level: bool = False) -> dict:
    """ATen calls and time of one loss's forward + backward.

    Args:
        name: Registered loss name (a key of ``RECIPES``) or a
            ``VARIANTS`` key.
        batch: Images in the batch.
        boxes: GT boxes per image.
        channels: FPN channels.
        p2_size: Side of P2; the input is ``4 * p2_size`` squared.
        levels: FPN levels.
        repeats: Timed runs (their median is reported).
        per_level: Call a loss that batches levels once per level too.

    Returns:
        ``loss``, ``family``, ``batch``, ``boxes``, ``calls`` (loss calls:
        1 for one ``forward_levels`` call), ``aten_calls`` (int) and
        ``time_ms`` (median).
    """
    if base_name(name) not in RECIPES or (name != base_name(name)
                                          and name not in VARIANTS):
        raise KeyError(f'{name} has no entry in RECIPES or VARIANTS of '
                       f'{osp.basename(__file__)}')
    torch.manual_seed(0)
    losses = build_losses(name, channels, levels)
    calls = make_calls(name, batch, boxes, channels, p2_size, levels)
    one_call = not per_level and batches_levels(name, losses, calls)
    fn = _step(losses, calls, one_call)
    fn().backward()  # warm-up (lazy initialisation, memory banks)
    aten = count_aten_calls(fn)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn().backward()
        times.append(time.perf_counter() - start)
    return dict(loss=name, family=recipe_of(name).family, batch=batch,
                boxes=boxes, calls=1 if one_call else len(calls),
                aten_calls=int(aten),
                time_ms=1e3 * statistics.median(times))


def _key(batch: int, boxes: int) -> str:
    """Key of a setting in the summaries, e.g. ``b2_n50``."""
    return f'b{batch}_n{boxes}'


def benchmark_losses(names: Optional[Sequence[str]] = None,
                     **settings) -> List[dict]:
    """One summary dict per loss over ``SETTINGS``.

    Args:
        names: Losses to run; None runs every registered loss and every
            ``VARIANTS`` key.
        **settings: ``channels``, ``p2_size``, ``levels``, ``repeats``,
            ``per_level`` of :func:`benchmark_loss`.

    Returns:
        Dicts with ``loss``, ``family``, ``gt``, ``uses_boxes``, ``calls``,
        ``aten_calls`` and ``time_ms`` (keyed ``b<batch>_n<boxes>``),
        ``batch_ratio`` and ``boxes_ratio`` (of the counts, to the first
        setting) and ``aten_calls_per_call``.
    """
    out = []
    for name in names or benchmark_names():
        runs = {_key(b, n): benchmark_loss(name, b, n, **settings)
                for b, n in SETTINGS}
        base = runs[_key(*SETTINGS[0])]
        count = {k: r['aten_calls'] for k, r in runs.items()}
        gt = recipe_of(name).gt
        out.append(dict(
            loss=name, family=base['family'], gt=gt,
            uses_boxes=gt == 'det', calls=base['calls'],
            aten_calls=count,
            time_ms={k: round(r['time_ms'], 3) for k, r in runs.items()},
            batch_ratio=count[_key(*SETTINGS[1])] / base['aten_calls'],
            boxes_ratio=count[_key(*SETTINGS[2])] / base['aten_calls'],
            aten_calls_per_call=base['aten_calls'] / base['calls']))
    return out


def header(channels: int, p2_size: int, levels: int, repeats: int,
           per_level: bool = False) -> str:
    """What was measured and which inputs each family gets."""
    sizes = ', '.join(str(s) for s in level_sizes(p2_size, levels))
    lines = [
        f'Forward + backward of each loss: ATen calls and median time over '
        f'{repeats} runs (torch {torch.__version__}, CPU threads: '
        f'{torch.get_num_threads()}).',
        f'FPN: {levels} levels of {channels} channels, sides {sizes}; '
        f'input (batch_input_shape) {4 * p2_size} x {4 * p2_size}.',
        'Settings bN_nM: batch N, M GT boxes per image; x batch = ATen '
        f'{_key(*SETTINGS[1])} / {_key(*SETTINGS[0])}, x boxes = '
        f'{_key(*SETTINGS[2])} / {_key(*SETTINGS[0])} (* the loss reads '
        'no boxes).',
        'Losses that batch levels: ' + (
            'called once per level (--per-level).' if per_level else
            'one forward_levels call for all levels, as the term.'),
        'Inputs per family:',
    ]
    lines += [f'- {k}: {v}' for k, v in FAMILIES.items()]
    return '\n'.join(lines)


def table_rows(results: List[dict]) -> List[List[str]]:
    """Header and one row of strings per loss."""
    keys = [_key(b, n) for b, n in SETTINGS]
    head = ['loss', 'family', 'loss calls']
    for k in keys:
        head += [f'ATen {k}', f'ms {k}']
    head += ['x batch', 'x boxes', 'ATen/call']
    rows = [head]
    for r in results:
        row = [r['loss'], r['family'], str(r['calls'])]
        for k in keys:
            row += [str(r['aten_calls'][k]), f"{r['time_ms'][k]:.2f}"]
        mark = '' if r['uses_boxes'] else '*'
        row += [f"{r['batch_ratio']:.2f}", f"{r['boxes_ratio']:.2f}{mark}",
                f"{r['aten_calls_per_call']:.0f}"]
        rows.append(row)
    return rows


def format_markdown(rows: List[List[str]]) -> str:
    """A Markdown table (loss names as code, numbers right-aligned)."""
    align = ['---', '---'] + ['--:'] * (len(rows[0]) - 2)
    body = [[f'`{r[0]}`'] + r[1:] for r in rows[1:]]
    lines = ['| ' + ' | '.join(r) + ' |' for r in [rows[0]] + body]
    lines.insert(1, '| ' + ' | '.join(align) + ' |')
    return '\n'.join(lines)


def format_text(rows: List[List[str]]) -> str:
    """A fixed-width text table."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--losses', nargs='+', metavar='NAME',
                        help='losses to run (default: all registered)')
    parser.add_argument('--channels', type=int, default=32)
    parser.add_argument('--p2-size', type=int, default=64,
                        help='side of P2 (stride 4); input = 4 * p2')
    parser.add_argument('--levels', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed runs per setting (median)')
    parser.add_argument('--per-level', action='store_true',
                        help='call the losses that batch levels once per '
                             'level too (the path before they batched)')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch\'s own); '
                             '1 is steadier on a loaded machine')
    out = parser.add_mutually_exclusive_group()
    out.add_argument('--json', action='store_true',
                     help='print a JSON list, one dict per loss')
    out.add_argument('--markdown', action='store_true',
                     help='print a Markdown table (docs/benchmarks.md)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the benchmark and print it (see the module docstring)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.losses or benchmark_names()
    unknown = sorted(set(names) - set(RECIPES) - set(VARIANTS))
    if unknown:
        raise SystemExit(f'no recipe for {unknown} in RECIPES')
    settings = dict(channels=args.channels, p2_size=args.p2_size,
                    levels=args.levels, repeats=args.repeats,
                    per_level=args.per_level)
    results = benchmark_losses(names, **settings)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(header(**settings))
    print()
    rows = table_rows(results)
    print(format_markdown(rows) if args.markdown else format_text(rows))


if __name__ == '__main__':
    main()
