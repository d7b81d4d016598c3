"""Which layers of a model can be distilled: one recorded dry run.

One forward of a model on a zero image (a distiller's build-time dry run:
tensor mode, mmseg auxiliary heads included) records, with forward hooks
on every module, what each module returns: its path, output shape(s),
stride (input size / map size of 4-D maps), number of levels (a tuple of
maps, e.g. an FPN, gives one level per map; a module run several times in
one forward, e.g. a dense head's shared ``retina_cls``, "runs once per
level") and its kind (``backbone stage``, ``neck (FPN)``, ``head conv``,
``logits``, RoI layers). :mod:`.layer_pairing` pairs the layers of a
teacher and a student; ``tools/analysis_tools/list_layers.py`` prints them
and :mod:`.auto_pairing` resolves ``student='auto'`` terms with them.
"""
import re
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
import torch.nn as nn

if TYPE_CHECKING:  # pragma: no cover
    from .base_distiller import BaseDistiller

__all__ = ['CANDIDATE_KINDS', 'Layer', 'LayerRecorder', 'classify',
           'layers_of', 'map_stride', 'record_model', 'seg_head_features',
           'survey']

#: Kinds that the default listing shows and that the pairing considers.
CANDIDATE_KINDS = ('backbone', 'backbone stem', 'backbone stage', 'neck',
                   'neck (FPN)', 'head conv', 'logits', 'roi feature',
                   'roi head fc', 'roi logits')
#: Output layers of dense detection heads and of RoI heads, by name.
_OUTPUT_NAME = re.compile(r'(cls|reg|centerness|ctr|obj|logits)')

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


def record_model(distiller: 'BaseDistiller', model: nn.Module,
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


def survey(distiller: 'BaseDistiller', input_size: Sequence[int],
           all_layers: bool = False) -> Dict[str, List[Layer]]:
    """The layers of a distiller's teacher and student.

    Args:
        distiller: A built distiller (its terms are not needed).
        input_size: (H, W) of the zero image.
        all_layers: Every module with a tensor output, not only the
            candidates (:data:`CANDIDATE_KINDS`).

    Returns:
        ``{'teacher': [Layer, ...], 'student': [Layer, ...]}``.
    """
    out = {}
    for role in ('teacher', 'student'):
        recorder = record_model(distiller, getattr(distiller, role),
                                input_size)
        out[role] = layers_of(recorder, input_size, all_layers)
    return out
