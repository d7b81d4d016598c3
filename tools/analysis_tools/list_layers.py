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
prints them as a ``distill_terms=dict(...)`` snippet (the analysis is
:mod:`visionkd.models.distillers.layer_survey` and ``layer_pairing``, which
``student='auto'`` terms use at build time too). Nothing is
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
import sys
from typing import Any, Iterator, List, Optional, Sequence, Union

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

import visionkd  # noqa: F401
from visionkd.models.distillers import (
    BaseDistiller,
    DetectionDistiller,
    SegmentationDistiller,
)
from visionkd.models.distillers.layer_pairing import (
    pairing_notes,
    py_repr,
    suggest_pairs,
    terms_snippet,
)
from visionkd.models.distillers.layer_survey import (
    CANDIDATE_KINDS,
    Layer,
    LayerRecorder,
    layers_of,
    map_stride,
    record_model,
)
from visionkd.registry import MODELS
from visionkd.utils import resolve_model_cfg, without_pretrained_init

#: What this tool shows, kept importable from here: the analysis itself
#: lives in visionkd.models.distillers.layer_survey / layer_pairing (the
#: distiller's ``student='auto'`` pairing uses the same functions).
__all__ = ['DEFAULT_INPUT_SIZE', 'Layer', 'LayerRecorder',
           'build_bare_distiller', 'format_report', 'inspect_pair',
           'load_pair', 'main', 'map_stride', 'strip_pretrained',
           'terms_snippet', 'to_json']

#: Input size when neither ``--input-size`` nor the config sets one.
DEFAULT_INPUT_SIZE = (320, 320)


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
            value = without_pretrained_init(value)
        elif key == 'pretrained' and value:
            value = False if value is True else None
        out[key] = strip_pretrained(value)
    return out


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
            f"connector={py_repr(p['connector'])}"
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
