"""List the layers of a teacher and a student that can be distilled.

One dry run of each model on a zero image (the distiller's own build-time
dry run: tensor mode, mmseg auxiliary heads included) records, with
forward hooks on every module, what each module returns: its path, output
shape(s), stride (input size / map size of 4-D maps), number of levels (a
tuple of maps, e.g. an FPN, gives one level per map; a module run several
times in one forward, e.g. a dense head's shared ``retina_cls``, "runs once
per level") and its kind (``backbone stage``, ``neck (FPN)``,
``head conv``, ``logits``, RoI layers). It then suggests teacher-student
term pairs of the same kind and stride with the connectors they need, and
prints them as a ``distill_terms=dict(...)`` snippet. Nothing is
downloaded: the teacher gets no checkpoint and no model is initialised
from pretrained weights (the layers are shaped, not trained)::

    python tools/analysis_tools/list_layers.py \
        configs/kd/faster_rcnn_r101_to_r18.py --input-size 320 320
    python tools/analysis_tools/list_layers.py \
        --teacher mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py \
        --student mmdet::retinanet/retinanet_r18_fpn_1x_coco.py --json

``--all`` lists every module with a tensor output instead of the
distillation candidates; ``--json`` prints the teacher's and the student's
layers and the pairs as one JSON object.
"""
import argparse
import contextlib
import copy
import json
import logging
import os.path as osp
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

import visionkd  # noqa: F401
from visionkd.models.distillers import (
    BaseDistiller,
    DetectionDistiller,
    SegmentationDistiller,
)
from visionkd.registry import MODELS
from visionkd.utils import resolve_model_cfg

#: Input size when neither ``--input-size`` nor the config sets one.
DEFAULT_INPUT_SIZE = (320, 320)
#: Kinds that the default listing shows and that the pairing considers.
CANDIDATE_KINDS = ('backbone', 'backbone stem', 'backbone stage', 'neck',
                   'neck (FPN)', 'head conv', 'logits', 'roi feature',
                   'roi head fc', 'roi logits')
#: Output layers of dense detection heads and of RoI heads, by name.
_OUTPUT_NAME = re.compile(r'(cls|reg|centerness|ctr|obj|logits)')
#: The loss each suggested pair gets, by kind and task.
_FEATURE_LOSS = dict(type='PKDLoss', loss_weight=6.0)
_SEG_LOGITS_LOSS = dict(type='ChannelWiseDivergence', tau=4.0,
                        loss_weight=3.0)
_DET_LOGITS_LOSS = dict(type='FeatureMSELoss', loss_weight=1.0)

Shape = Tuple[int, ...]
Stride = Optional[Union[int, float]]


@dataclass
class Layer:
    """What one module produced in the dry run.

    Attributes:
        path: Module path (a ``named_modules()`` key).
        type: Class name of the module.
        kind: ``backbone stage``, ``neck (FPN)``, ``head conv``,
            ``logits``... or ``''`` for any other module.
        shapes: Output shape of every level.
        strides: Stride of every level (None where the level is no
            image-aligned 4-D map).
        calls: How many times the module ran (> 1: once per level).
    """

    path: str
    type: str
    kind: str
    shapes: List[Shape]
    strides: List[Stride]
    calls: int

    @property
    def levels(self) -> int:
        """Number of levels (maps in the tuple, or calls)."""
        return len(self.shapes)

    @property
    def per_level_calls(self) -> bool:
        """Whether the module runs once per level (a shared head layer)."""
        return self.calls > 1

    @property
    def is_map(self) -> bool:
        """Whether every level is a 4-D map of the image."""
        return all(len(s) == 4 for s in self.shapes) and all(
            s is not None for s in self.strides)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return dict(path=self.path, type=self.type, kind=self.kind,
                    shapes=[list(s) for s in self.shapes],
                    strides=list(self.strides), levels=self.levels,
                    calls=self.calls, per_level_calls=self.per_level_calls)


# ----------------------------------------------------------------------
# building the models
def strip_pretrained(cfg: Any) -> Any:
    """A copy of a model config without pretrained initialisation.

    ``init_cfg=dict(type='Pretrained', ...)`` becomes None (a list of
    init configs loses its pretrained entries) and ``pretrained=<path>``
    or ``pretrained=True`` becomes None / False, at any depth, so that
    nothing is downloaded even if the model is initialised.

    Args:
        cfg: A model config (dict, list or value).

    Returns:
        The cleaned copy.
    """
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(strip_pretrained(v) for v in cfg)
    if not isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    out = {}
    for key, value in cfg.items():
        if key == 'init_cfg':
            value = _drop_pretrained_init(value)
        elif key == 'pretrained' and value:
            value = False if value is True else None
        out[key] = strip_pretrained(value)
    return out


def _drop_pretrained_init(init_cfg: Any) -> Any:
    def pretrained(c: Any) -> bool:
        return isinstance(c, dict) and c.get('type') == 'Pretrained'

    if isinstance(init_cfg, (list, tuple)):
        kept = [c for c in init_cfg if not pretrained(c)]
        return kept or None
    return None if pretrained(init_cfg) else init_cfg


def _task_class(spec: Union[str, dict]) -> type:
    """Distiller class of a model specification (by its scope): a config
    reference, ``dict(config=<ref>, ...)`` or an inline dict."""
    ref = spec if isinstance(spec, str) else spec.get('config')
    if ref is None:
        scope = spec.get('_scope_', 'mmdet')
    elif '::' in ref:
        scope = ref.split('::', 1)[0]
    else:
        scope = Config.fromfile(ref).get('default_scope', 'mmdet')
    return SegmentationDistiller if scope == 'mmseg' else DetectionDistiller


def _describe(spec: Any) -> str:
    """Short description of a teacher/student specification."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and 'config' in spec:
        extra = [k for k in spec if k != 'config']
        return spec['config'] + (f' + {extra}' if extra else '')
    return f"inline {spec.get('type', '?')}" if isinstance(
        spec, dict) else repr(spec)


def load_pair(config: Optional[str] = None,
              teacher: Optional[Union[str, dict]] = None,
              student: Optional[Union[str, dict]] = None) -> dict:
    """Read a distiller config, or a teacher and a student specification.

    Args:
        config: A visionkd distiller config file.
        teacher: A model as a distiller takes it (``mmdet::...``, a file,
            ``dict(config=<ref>, **overrides)``, an inline dict), used with
            ``student`` instead of ``config``; mmseg scope = segmentation.
        student: See ``teacher``.

    Returns:
        ``dict(cls, teacher, student, input_size, default_scope,
        sources)``; ``input_size`` is the config's ``dry_run_input_size``
        or None.
    """
    if config is None:
        if teacher is None or student is None:
            raise ValueError('give a distiller config, or both --teacher '
                             'and --student')
        cls = _task_class(student)
        return dict(cls=cls, teacher=teacher, student=student,
                    input_size=None, default_scope=cls.default_scope,
                    sources=dict(teacher=_describe(teacher),
                                 student=_describe(student)))
    cfg = Config.fromfile(config)
    model = cfg.get('model')
    cls = MODELS.get(model.get('type')) if model else None
    if not isinstance(cls, type) or not issubclass(cls, BaseDistiller):
        raise ValueError(
            f'{config} is no visionkd distiller config (model.type must '
            f'be a visionkd distiller); pass --teacher and --student '
            f'instead')
    size = model.get('dry_run_input_size')
    return dict(cls=cls, teacher=model.teacher, student=model.student,
                input_size=tuple(size) if size else None,
                default_scope=cfg.get('default_scope'),
                sources=dict(teacher=_describe(model.teacher),
                             student=_describe(model.student)))


def build_bare_distiller(pair: dict,
                         input_size: Sequence[int]) -> BaseDistiller:
    """Build the distiller of ``pair`` without terms, weights or downloads.

    Args:
        pair: What :func:`load_pair` returns.
        input_size: (H, W) of the dry run.

    Returns:
        The distiller; ``.teacher`` and ``.student`` are the models.
    """
    cls = pair['cls']
    with DefaultScope.overwrite_default_scope(pair['default_scope']):
        models = {
            role: strip_pretrained(resolve_model_cfg(
                pair[role], cls.default_scope, role).to_dict())
            for role in ('student', 'teacher')
        }
        return cls(student=models['student'], teacher=models['teacher'],
                   teacher_ckpt=None, distill_terms=None,
                   dry_run_input_size=tuple(input_size))


# ----------------------------------------------------------------------
# recording
def _output_shapes(out: Any) -> Optional[Tuple[bool, List[Shape]]]:
    """``(is_sequence, shapes)`` of a tensor or a tuple/list of tensors."""
    if isinstance(out, torch.Tensor):
        return False, [tuple(out.shape)]
    if isinstance(out, (tuple, list)) and out and all(
            isinstance(o, torch.Tensor) for o in out):
        return True, [tuple(o.shape) for o in out]
    return None


class LayerRecorder:
    """Forward hooks on every module of a model, removed on exit.

    Each call stores the output's shapes only (no tensor is kept), in
    :attr:`calls` (``{path: [(is_sequence, shapes) or None, ...]}``); the
    order in which the modules first started is :attr:`start`, the order
    in which they first finished :attr:`order`.

    Args:
        model: The model to record.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls: Dict[str, list] = {}
        self.order: Dict[str, int] = {}
        self.start: Dict[str, int] = {}
        self._handles: list = []

    def _pre_hook(self, path: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            self.start.setdefault(path, len(self.start))
        return hook

    def _hook(self, path: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            self.calls.setdefault(path, []).append(_output_shapes(output))
            self.order.setdefault(path, len(self.order))
        return hook

    def __enter__(self) -> 'LayerRecorder':
        for path, module in self.model.named_modules():
            if path:
                self._handles += [
                    module.register_forward_pre_hook(self._pre_hook(path)),
                    module.register_forward_hook(self._hook(path))]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def record_model(distiller: BaseDistiller, model: nn.Module,
                 input_size: Sequence[int]) -> LayerRecorder:
    """Run ``model`` once as the distiller's dry run does, recording.

    Args:
        distiller: The distiller holding ``model`` (its dry-run data
            samples and forward are used).
        model: ``distiller.teacher`` or ``distiller.student``.
        input_size: (H, W) of the zero image.

    Returns:
        The recorder with what every module returned.
    """
    h, w = input_size
    inputs = torch.zeros(1, 3, h, w)
    samples = distiller._dummy_data_samples(h, w)
    paths = [p for p, _ in model.named_modules() if p]
    was_training = model.training
    model.eval()
    with LayerRecorder(model) as recorder, torch.no_grad():
        # every path: mmseg auxiliary heads run too
        distiller._forward_for_records(model, inputs, samples, paths)
    model.train(was_training)
    return recorder


# ----------------------------------------------------------------------
# classification
def map_stride(input_size: Sequence[int], shape: Shape) -> Stride:
    """Stride of a (N, C, H, W) map of an ``input_size`` image.

    The first power of two ``s`` with ``H == floor/ceil(in_h / s)`` (and
    the same for W), else ``in_h / H`` (an int when whole).
    """
    if len(shape) != 4 or shape[0] != 1 or 0 in shape[2:]:
        return None
    (in_h, in_w), (h, w) = input_size, shape[2:]

    def fits(size: int, n: int, s: float) -> bool:
        return n in (size // s, -(-size // s))

    for k in range(11):
        s = 2**k
        if fits(in_h, h, s) and fits(in_w, w, s):
            return s
    ratio = in_h / h
    return int(ratio) if ratio == int(ratio) else round(ratio, 2)


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _backbone_kind(path: str, modules: Dict[str, nn.Module]) -> str:
    parts = path.split('.')
    if len(parts) == 1:
        return 'backbone'
    parent = '.'.join(parts[:-1])
    stage_depth = len(parts) == 2 or (len(parts) == 3 and isinstance(
        modules[parent], (nn.ModuleList, nn.ModuleDict)))
    if not stage_depth or _is_leaf(modules[path]):
        return ''
    return 'backbone stem' if re.search(r'stem|embed', parts[1]) else \
        'backbone stage'


def _head_output_kind(rel: List[str], modules: Dict[str, nn.Module],
                      path: str) -> bool:
    """Whether ``path`` (``rel`` inside its head) is an output layer: a
    leaf Conv2d/Linear child, or a child of a ModuleList child, of the
    head, named like cls/reg/centerness/obj/logits."""
    module = modules[path]
    if not isinstance(module, (nn.Conv2d, nn.Linear)) or not rel:
        return False
    head = path[:len(path) - len('.'.join(rel)) - 1]
    if len(rel) == 2 and not isinstance(modules[f'{head}.{rel[0]}'],
                                        nn.ModuleList):
        return False
    return len(rel) <= 2 and bool(_OUTPUT_NAME.search(rel[0]))


def _roi_kind(path: str, modules: Dict[str, nn.Module]) -> str:
    module = modules[path]
    if type(module).__name__.endswith('RoIExtractor'):
        return 'roi feature'
    parts = path.split('.')
    prefixes = ['.'.join(parts[:i]) for i in range(1, len(parts))]
    if any(type(modules[p]).__name__.endswith('RoIExtractor')
           for p in prefixes) or not _is_leaf(module):
        return ''
    if _OUTPUT_NAME.search(parts[-1]):
        return 'roi logits'
    return 'roi head fc' if isinstance(module, nn.Linear) else ''


def seg_head_features(recorder: LayerRecorder,
                      modules: Dict[str, nn.Module]) -> List[str]:
    """The feature each mmseg head classifies: the last child of the head
    (other than dropout) that finished before its ``conv_seg``, e.g.
    ``decode_head.bottleneck`` of PSPNet, ``conv_cat`` of FCN."""
    found = []
    for path in recorder.order:
        if not path.endswith('.conv_seg'):
            continue
        head = path[:-len('.conv_seg')]
        children = [
            p for p in recorder.order
            if p.startswith(head + '.') and p.count('.') == head.count('.')
            + 1 and p != path and recorder.order[p] < recorder.order[path]
            and not isinstance(modules[p], nn.modules.dropout._DropoutNd)]
        if children:
            found.append(max(children, key=recorder.order.get))
    return found


def classify(path: str, modules: Dict[str, nn.Module], levels: int,
             head_features: Sequence[str]) -> str:
    """Kind of the module at ``path`` ('' for an ordinary module)."""
    parts = path.split('.')
    top = parts[0]
    if top == 'backbone':
        return _backbone_kind(path, modules)
    if top == 'neck':
        if len(parts) > 1:
            return ''
        return 'neck (FPN)' if levels > 1 else 'neck'
    if parts[-1] == 'conv_seg':
        return 'logits'
    if path in head_features:
        return 'head conv'
    if top == 'roi_head':
        return _roi_kind(path, modules)
    if top.endswith('head') and _head_output_kind(parts[1:], modules, path):
        return 'logits'
    return ''


def layers_of(recorder: LayerRecorder, input_size: Sequence[int],
              all_layers: bool = False) -> List[Layer]:
    """The recorded layers, in the order they started.

    Args:
        recorder: What :func:`record_model` returned.
        input_size: (H, W) of the dry run.
        all_layers: Every module with a tensor output (or a tuple of
            tensors, or one tensor per call), not only the candidates.

    Returns:
        One :class:`Layer` per module.
    """
    modules = dict(recorder.model.named_modules())
    features = seg_head_features(recorder, modules)
    layers = []
    for path in sorted(recorder.order, key=recorder.start.get):
        calls = recorder.calls[path]
        if any(c is None for c in calls) or (
                len(calls) > 1 and any(seq for seq, _ in calls)):
            continue  # not a tensor (per level)
        shapes = [s for _, shp in calls for s in shp]
        kind = classify(path, modules, len(shapes), features)
        if not (all_layers or kind in CANDIDATE_KINDS):
            continue
        on_image = path.split('.')[0] != 'roi_head'
        strides = [map_stride(input_size, s) if on_image else None
                   for s in shapes]
        layers.append(Layer(path, type(modules[path]).__name__, kind,
                            shapes, strides, len(calls)))
    return layers


# ----------------------------------------------------------------------
# pairing
def connector_for(student: Layer, teacher: Layer,
                  level_ids: Sequence[int]) -> Any:
    """The connector(s) a term from ``student`` to ``teacher`` needs.

    Returns:
        None for equal shapes, ``dict(type='ConvConnector')`` if the
        channels differ, plus ``dict(type='ResizeConnector')`` (a list)
        if the spatial sizes differ.
    """
    pairs = [(student.shapes[i], teacher.shapes[i]) for i in level_ids]
    conns = []
    if any(s[1] != t[1] for s, t in pairs):
        conns.append(dict(type='ConvConnector'))
    if any(s[2:] != t[2:] for s, t in pairs):
        conns.append(dict(type='ResizeConnector'))
    if not conns:
        return None
    return conns[0] if len(conns) == 1 else conns


def _loss_for(kind: str, task: str) -> dict:
    if kind == 'logits':
        return dict(_SEG_LOGITS_LOSS if task == 'segmentation' else
                    _DET_LOGITS_LOSS)
    return dict(_FEATURE_LOSS)


def _term_name(kind: str, student: Layer) -> str:
    if kind.startswith('neck'):
        return 'fpn' if kind == 'neck (FPN)' else 'neck'
    if kind == 'backbone stage':
        return f'backbone_s{student.strides[0]}'
    parts = student.path.split('.')
    if kind == 'head conv' or parts[-1] == 'conv_seg':
        head = parts[0].replace('_head', '')
        if kind == 'head conv':
            base = f'{head}_feat'
        else:
            base = 'logits' if head == 'decode' else f'{head}_logits'
        return '_'.join([base] + parts[1:-1])
    return '_'.join(parts[1:]) if len(parts) > 1 else parts[0]


def make_pair(kind: str, student: Layer, teacher: Layer, task: str,
              level_ids: Optional[List[int]] = None) -> dict:
    """A suggested term between two layers.

    Args:
        kind: Kind of both layers.
        student: Student layer.
        teacher: Teacher layer.
        task: ``'detection'`` or ``'segmentation'`` (chooses the loss).
        level_ids: Levels kept when the two differ in levels.

    Returns:
        ``dict(name, kind, student, teacher, levels, connector, loss,
        term)``; ``term`` is the ``distill_terms`` entry.
    """
    ids = list(range(student.levels)) if level_ids is None else level_ids
    connector = connector_for(student, teacher, ids)
    term = dict(student=student.path, teacher=teacher.path)
    if connector is not None:
        term['connector'] = connector
    if level_ids is not None:
        term['levels'] = list(level_ids)
    term['loss'] = _loss_for(kind, task)
    return dict(name=_term_name(kind, student), kind=kind,
                student=student.path, teacher=teacher.path,
                levels=len(ids), strides=[student.strides[i] for i in ids],
                connector=connector, loss=term['loss'], term=term)


def _pair_necks(students: List[Layer], teachers: List[Layer],
                task: str) -> List[dict]:
    """Neck to neck, all levels of equal stride (``levels`` if not all)."""
    s = next((x for x in students if x.kind.startswith('neck')), None)
    t = next((x for x in teachers if x.kind.startswith('neck')), None)
    if s is None or t is None or s.kind != t.kind or not (
            s.is_map and t.is_map):
        return []
    n = min(s.levels, t.levels)
    common = [i for i in range(n) if s.strides[i] == t.strides[i]]
    if not common:
        return []
    same = s.levels == t.levels and len(common) == n
    return [make_pair(s.kind, s, t, task, None if same else common)]


def _pair_stages(students: List[Layer], teachers: List[Layer],
                 task: str) -> List[dict]:
    """The deepest backbone stage of each stride both models have (among
    the stages the backbone returns, if it returns any)."""
    def by_stride(layers: List[Layer]) -> Dict[Stride, Layer]:
        stages = [x for x in layers if x.kind == 'backbone stage'
                  and x.levels == 1 and x.is_map]
        outs = {s for x in layers if x.kind == 'backbone' for s in x.shapes}
        returned = [x for x in stages if x.shapes[0] in outs]
        # the last one of each stride
        return {x.strides[0]: x for x in returned or stages}

    s_map, t_map = by_stride(students), by_stride(teachers)
    return [make_pair('backbone stage', s_map[k], t_map[k], task)
            for k in s_map if k in t_map]


def _pair_heads(students: List[Layer], teachers: List[Layer],
                task: str) -> List[dict]:
    """Logits to logits (same path, same channels) and the feature of the
    same segmentation head (``head conv``)."""
    def key(x: Layer) -> Optional[str]:
        if x.kind == 'logits':
            return x.path
        if x.kind == 'head conv':
            return 'feat:' + x.path.rsplit('.', 1)[0]
        return None

    t_map = {key(x): x for x in teachers if key(x) and x.is_map}
    pairs = []
    for s in students:
        t = t_map.get(key(s)) if key(s) and s.is_map else None
        if t is None or t.levels != s.levels:
            continue
        if s.kind == 'logits' and any(
                a[1] != b[1] for a, b in zip(s.shapes, t.shapes)):
            continue  # other classes/anchors: not comparable
        pairs.append(make_pair(s.kind, s, t, task))
    return sorted(pairs, key=lambda p: p['kind'] != 'logits')


def suggest_pairs(students: List[Layer], teachers: List[Layer],
                  task: str) -> List[dict]:
    """Suggested terms: neck, logits and head features, backbone stages.

    Args:
        students: Layers of the student (:func:`layers_of`).
        teachers: Layers of the teacher.
        task: ``'detection'`` or ``'segmentation'``.

    Returns:
        The pairs (see :func:`make_pair`), term names made unique.
    """
    pairs = (_pair_necks(students, teachers, task) +
             _pair_heads(students, teachers, task) +
             _pair_stages(students, teachers, task))
    seen: Dict[str, int] = {}
    for pair in pairs:
        name = pair['name']
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            pair['name'] = f'{name}_{seen[name]}'
    return pairs


def pairing_notes(students: List[Layer], teachers: List[Layer],
                  pairs: List[dict]) -> List[str]:
    """What the pairs leave out, and why."""
    notes = []
    s = next((x for x in students if x.kind.startswith('neck')), None)
    t = next((x for x in teachers if x.kind.startswith('neck')), None)
    if s and t and not any(p['kind'] == s.kind for p in pairs):
        notes.append(
            f'necks not paired: student strides {s.strides}, teacher '
            f'strides {t.strides} (a term compares level i with level i; '
            f'levels=[...] keeps the same indices on both)')
    if any(x.kind.startswith('roi') for x in students + teachers):
        notes.append("RoI head layers: use mode='roi' "
                     '(docs/head_level_kd.md), not a feature term')
    return notes


# ----------------------------------------------------------------------
# output
def _py(value: Any) -> str:
    """``value`` in config syntax (``dict(k=v)``, lists, literals)."""
    if isinstance(value, dict):
        return 'dict(' + ', '.join(f'{k}={_py(v)}'
                                   for k, v in value.items()) + ')'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_py(v) for v in value) + ']'
    return repr(value)


def terms_snippet(pairs: List[dict]) -> str:
    """The pairs as a ready-to-paste ``distill_terms=dict(...)``."""
    if not pairs:
        return 'distill_terms=dict()'
    lines = ['distill_terms=dict(']
    for i, pair in enumerate(pairs):
        items = list(pair['term'].items())
        lines.append(f"    {pair['name']}=dict(")
        for j, (key, value) in enumerate(items):
            end = ')' if j == len(items) - 1 else ','
            lines.append(f'        {key}={_py(value)}{end}')
        lines[-1] += ',' if i < len(pairs) - 1 else ')'
    return '\n'.join(lines)


def inspect_pair(pair: dict, input_size: Optional[Sequence[int]] = None,
                 all_layers: bool = False) -> dict:
    """Build both models, dry-run them and suggest the terms.

    Args:
        pair: What :func:`load_pair` returns.
        input_size: (H, W); default the config's ``dry_run_input_size``,
            else :data:`DEFAULT_INPUT_SIZE`.
        all_layers: List every module with a tensor output.

    Returns:
        ``dict(input_size, task, teacher, student, pairs, distill_terms,
        notes)`` with ``teacher``/``student`` = ``dict(model, source, layers)``
        (layers as :class:`Layer`).
    """
    size = tuple(input_size or pair['input_size'] or DEFAULT_INPUT_SIZE)
    distiller = build_bare_distiller(pair, size)
    report = dict(input_size=list(size), task=distiller.task)
    for role in ('teacher', 'student'):
        model = getattr(distiller, role)
        recorder = record_model(distiller, model, size)
        report[role] = dict(model=type(model).__name__,
                            source=pair['sources'][role],
                            layers=layers_of(recorder, size, True))
    candidates = {
        role: [x for x in report[role]['layers']
               if x.kind in CANDIDATE_KINDS]
        for role in ('teacher', 'student')}
    report['pairs'] = suggest_pairs(candidates['student'],
                                    candidates['teacher'], distiller.task)
    report['distill_terms'] = {p['name']: p['term'] for p in report['pairs']}
    report['notes'] = pairing_notes(candidates['student'],
                                    candidates['teacher'], report['pairs'])
    if not all_layers:
        for role in ('teacher', 'student'):
            report[role]['layers'] = candidates[role]
    return report


def to_json(report: dict) -> str:
    """The report as JSON (layers as dicts)."""
    out = dict(report)
    for role in ('teacher', 'student'):
        out[role] = dict(report[role], layers=[
            x.to_dict() for x in report[role]['layers']])
    return json.dumps(out, indent=1)


def _shape_text(layer: Layer) -> str:
    shapes = ['x'.join(str(d) for d in s) for s in layer.shapes]
    if len(set(shapes)) == 1 and len(shapes) > 1:
        return f'{shapes[0]} (x{len(shapes)})'
    return ' | '.join(shapes)


def _levels_text(layer: Layer) -> str:
    if layer.per_level_calls:
        return f'runs once per level ({layer.calls} calls)'
    return f'{layer.levels} levels' if layer.levels > 1 else '1'


def format_layers(role: str, info: dict) -> List[str]:
    """Table lines of one model's layers."""
    rows = [('path', 'kind', 'type', 'levels', 'stride', 'output shape(s)')]
    for x in info['layers']:
        strides = ','.join('-' if s is None else str(s) for s in x.strides)
        rows.append((x.path, x.kind or '-', x.type, _levels_text(x),
                     strides, _shape_text(x)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"{role}: {info['model']} ({info['source']})"]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths)] + [row[5]]
        lines.append('  ' + '  '.join(cells).rstrip())
    return lines


def format_report(report: dict) -> str:
    """The report as text: both tables, the pairs, the snippet."""
    h, w = report['input_size']
    lines = [f'dry run on a zero 1x3x{h}x{w} image ({report["task"]})', '']
    for role in ('teacher', 'student'):
        lines += format_layers(role, report[role]) + ['']
    lines.append('suggested term pairs (student -> teacher):')
    for p in report['pairs']:
        conn = 'no connector' if p['connector'] is None else \
            f"connector={_py(p['connector'])}"
        levels = f", {p['levels']} levels" if p['levels'] > 1 else ''
        strides = ','.join(str(s) for s in p['strides'])
        lines.append(f"  {p['name']}: {p['student']} -> {p['teacher']} "
                     f"[{p['kind']}, stride {strides}{levels}], {conn}")
    if not report['pairs']:
        lines.append('  none (no neck, stage or logits of equal stride)')
    lines += [f'  note: {note}' for note in report['notes']]
    lines += ['', '# keep the terms you want; the losses are starting points',
              terms_snippet(report['pairs'])]
    return '\n'.join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        description='List the distillable layers of a teacher and a '
        'student and suggest distill_terms')
    parser.add_argument('config', nargs='?',
                        help='visionkd distiller config')
    parser.add_argument('--teacher', help='teacher model config reference '
                        '(mmdet::..., mmseg::..., a file); with --student')
    parser.add_argument('--student', help='student model config reference')
    parser.add_argument('--input-size', type=int, nargs=2,
                        metavar=('H', 'W'),
                        help="dry-run image size (default: the config's "
                        'dry_run_input_size, else 320 320)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object')
    parser.add_argument('--all', action='store_true',
                        help='every module with a tensor output')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.teacher is None and
                                 args.student is None):
        parser.error('give a distiller config, or --teacher and --student')
    if args.config is None and (args.teacher is None or
                                args.student is None):
        parser.error('--teacher and --student go together')
    return args


@contextlib.contextmanager
def quiet_logger() -> Iterator[None]:
    """Only errors from mmengine's current logger inside the block (the
    terms-less build warns about the missing teacher checkpoint)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    with quiet_logger():
        pair = load_pair(args.config, args.teacher, args.student)
        report = inspect_pair(pair, args.input_size, args.all)
    print(to_json(report) if args.json else format_report(report))


if __name__ == '__main__':
    main()
