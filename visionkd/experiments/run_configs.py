"""Full mmengine configs of the runner's runs (teacher, students)."""
import copy
import functools
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from visionkd.models.distillers.terms.build_utils import term_loss_cfgs
from visionkd.utils.model_spec import config_path, resolve_model_cfg

from .dataset_configs import DataSpec, dataset_cfg
from .methods import MethodSpec, ModelInfo
from .presets import Preset

__all__ = ['METRIC_KEYS', 'WEIGHT_RULES', 'model_cfgs', 'assistant_cfg',
           'model_info', 'family_optimizer', 'run_config', 'run_overrides',
           'check_overrides', 'term_weights', 'weight_hooks',
           'write_config']

#: Metric of each task: (key in mmengine's metrics, factor to 0-100, name).
METRIC_KEYS = {
    'det': ('coco/bbox_mAP', 100.0, 'bbox_mAP'),
    'seg': ('mIoU', 1.0, 'mIoU'),
}
_RUNTIME = {'det': 'mmdet::_base_/default_runtime.py',
            'seg': 'mmseg::_base_/default_runtime.py'}
_VIS_HOOK = {'det': 'DetVisualizationHook', 'seg': 'SegVisualizationHook'}
#: How a distilled run's term weights are set: ``'preset'``, the method's
#: own (the papers' weights, adapted per family); ``'grad_share'``, one
#: rule for every method and dataset: each term's weight set at the start
#: of training so that its gradient share on the student layer it distils
#: is ``weight_target`` (AutoWeightHook, median over 10 batches);
#: ``'grad_share_cap'``, the same measurement, but weights are only
#: lowered (AutoWeightHook ``max_factor=1``): a term whose share exceeds
#: the target is brought down to it, a weaker one keeps the method's
#: weight (a first-batch share underestimates a term with a trainable
#: adapter, see docs/results/weight_rule).
WEIGHT_RULES = ('preset', 'grad_share', 'grad_share_cap')
#: Batches the grad_share rule measures.
WEIGHT_RULE_ITERS = 10
#: (task, preset name, arch, num_classes) -> resolved (teacher, student).
_MODEL_CACHE: dict = {}
#: (task, preset name, arch, num_classes, name) -> resolved assistant.
_ASSISTANT_CACHE: dict = {}


def model_cfgs(preset: Preset, arch: str,
               num_classes: int) -> Tuple[dict, dict]:
    """Resolved (teacher, student) model dicts of a model family."""
    key = (preset.task, preset.name, arch, num_classes)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = _model_cfgs(preset, arch, num_classes)
    return copy.deepcopy(_MODEL_CACHE[key])


@functools.lru_cache(maxsize=None)
def _runtime(task: str) -> dict:
    return Config.fromfile(config_path(_RUNTIME[task])).to_dict()


def _model_cfgs(preset: Preset, arch: str,
                num_classes: int) -> Tuple[dict, dict]:
    if arch not in preset.archs:
        raise ValueError(f'preset {preset.name!r} ({preset.task}) has no '
                         f'model family {arch!r}; it has '
                         f'{sorted(preset.archs)}')
    pair = preset.archs[arch](num_classes)
    scope = 'mmdet' if preset.task == 'det' else 'mmseg'
    teacher = resolve_model_cfg(pair.teacher, scope, 'teacher').to_dict()
    student = resolve_model_cfg(pair.student, scope, 'student').to_dict()
    return teacher, student


def assistant_cfg(preset: Preset, arch: str, num_classes: int,
                  name: str) -> dict:
    """Resolved model dict of the family's assistant ``name``.

    Raises:
        ValueError: if the family defines no assistant of that name.
    """
    key = (preset.task, preset.name, arch, num_classes, name)
    if key not in _ASSISTANT_CACHE:
        if arch not in preset.archs:
            raise ValueError(f'preset {preset.name!r} ({preset.task}) has '
                             f'no model family {arch!r}')
        specs = preset.archs[arch](num_classes).assistants
        if name not in specs:
            have = sorted(a for a in preset.archs
                          if preset.archs[a](num_classes).assistants)
            raise ValueError(
                f'--assistant {name!r}: the {arch!r} family of preset '
                f'{preset.name!r} ({preset.task}) defines '
                f'{sorted(specs) or "no assistant"}; families with '
                f'assistants: {have}')
        scope = 'mmdet' if preset.task == 'det' else 'mmseg'
        _ASSISTANT_CACHE[key] = resolve_model_cfg(
            specs[name], scope, 'assistant').to_dict()
    return copy.deepcopy(_ASSISTANT_CACHE[key])


def _head_in_channels(model: dict) -> Optional[int]:
    """Channels of the map a segmentor's decode head reads (PSPNet: the
    ResNet's last stage; DDRNet: the fused stride-8 map); None without a
    decode head of one input."""
    channels = model.get('decode_head', {}).get('in_channels')
    return channels if isinstance(channels, int) else None


def model_info(preset: Preset, teacher: dict, student: dict,
               num_classes: int) -> ModelInfo:
    """Channels of the distilled features and the input geometry."""
    if preset.task == 'det':
        s, t = (m['neck']['out_channels'] for m in (student, teacher))
    else:
        s, t = (m['decode_head']['channels'] for m in (student, teacher))
    return ModelInfo(task=preset.task, student_channels=int(s),
                     teacher_channels=int(t), num_classes=num_classes,
                     input_hw=preset.input_hw(),
                     batch_size=preset.schedule.batch_size,
                     teacher_backbone_channels=_head_in_channels(teacher))


def family_optimizer(preset: Preset, arch: str,
                     num_classes: int) -> dict:
    """``optim_wrapper.optimizer`` of a model family's runs.

    The family's own (``ModelPair.optimizer``, e.g. RTMDet's AdamW) or SGD
    with momentum 0.9 and the preset's ``lr`` and ``weight_decay``.
    """
    if arch not in preset.archs:
        raise ValueError(f'preset {preset.name!r} ({preset.task}) has no '
                         f'model family {arch!r}; it has '
                         f'{sorted(preset.archs)}')
    own = preset.archs[arch](num_classes).optimizer
    if own is not None:
        return copy.deepcopy(own)
    sched = preset.schedule
    return dict(type='SGD', lr=sched.lr, momentum=0.9,
                weight_decay=sched.weight_decay)


def _schedule(preset: Preset, iters: int, optimizer: dict) -> dict:
    sched = preset.schedule
    warm = min(sched.warmup_iters, max(iters - 1, 0))
    schedulers = []
    if sched.policy == 'constant' or iters <= 1:
        schedulers.append(dict(type='ConstantLR', factor=1.0,
                               by_epoch=False))
    else:
        if warm > 0:
            schedulers.append(dict(type='LinearLR', start_factor=0.01,
                                   by_epoch=False, begin=0, end=warm))
        if sched.policy == 'cosine':
            schedulers.append(dict(type='CosineAnnealingLR', by_epoch=False,
                                   begin=warm, end=iters,
                                   eta_min_ratio=0.05))
        else:
            schedulers.append(dict(type='PolyLR', power=0.9, eta_min=1e-4,
                                   by_epoch=False, begin=warm, end=iters))
    optim = dict(type='OptimWrapper', optimizer=optimizer)
    if sched.clip_grad is not None:
        optim['clip_grad'] = dict(max_norm=sched.clip_grad, norm_type=2)
    return dict(
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters,
                       val_interval=iters),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        optim_wrapper=optim,
        param_scheduler=schedulers,
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=sched.log_interval,
                        log_metric_by_epoch=False),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=min(sched.checkpoint_interval, iters),
                            max_keep_ckpts=1, save_last=True),
            sampler_seed=dict(type='DistSamplerSeedHook'),
            visualization=dict(type=_VIS_HOOK[preset.task])),
        log_processor=dict(by_epoch=False),
        auto_scale_lr=dict(enable=False,
                           base_batch_size=sched.batch_size))


def _run_models(preset: Preset, role: str, arch: str, num_classes: int,
                assistant: Optional[str]) -> Tuple[dict, Optional[dict]]:
    """(student, teacher) models of a run; the teacher is None for the
    teacher and baseline runs, whose one model is the first.

    An ``'assistant'`` run trains the assistant as the student of the
    family's teacher; a ``'distill'`` run with ``assistant`` has the
    assistant as its teacher.
    """
    teacher, student = model_cfgs(preset, arch, num_classes)
    if role == 'teacher':
        return teacher, None
    if role == 'baseline':
        return student, None
    if role not in ('distill', 'assistant'):
        raise ValueError(f'unknown role {role!r}')
    if assistant is None:
        if role == 'assistant':
            raise ValueError('role="assistant" needs the assistant name')
        return student, teacher
    middle = assistant_cfg(preset, arch, num_classes, assistant)
    return (middle, teacher) if role == 'assistant' else (student, middle)


def _distiller_type(task: str) -> str:
    """The registered distiller of a task."""
    return 'visionkd.' + ('DetectionDistiller' if task == 'det'
                          else 'SegmentationDistiller')


def _distiller(preset: Preset, student: dict, teacher: dict,
               method: MethodSpec, teacher_ckpt: Optional[str],
               num_classes: int) -> Tuple[dict, Optional[str]]:
    """The distiller of ``student`` and ``teacher`` with the method's terms
    and framework (:meth:`MethodSpec.framework`), and the teacher
    checkpoint it loads.

    An EMA / ``'self'`` teacher replaces the family's teacher (the terms
    are built for the student on both sides, no checkpoint); a trainable
    teacher starts from the framework's ``teacher_ckpt`` (None: from
    scratch with the student) instead of the teacher run's.
    """
    if isinstance(teacher, list):
        return _multi_distiller(preset, student, teacher, method,
                                teacher_ckpt, num_classes)
    extra = method.framework()
    if 'teacher' in extra:
        teacher, teacher_ckpt = extra.pop('teacher'), None
        info = model_info(preset, student, student, num_classes)
    else:
        if 'teacher_ckpt' in extra:
            teacher_ckpt = extra.pop('teacher_ckpt')
        info = model_info(preset, teacher, student, num_classes)
    return dict(
        type=_distiller_type(preset.task),
        student=student, teacher=teacher, teacher_ckpt=teacher_ckpt,
        distill_terms=method.build_terms(info), **extra), teacher_ckpt


def _rename_teachers(terms: dict, names: Dict[str, str]) -> dict:
    """The terms with each ``from_teacher`` name renamed by ``names``."""
    for term in terms.values():
        src = term.get('from_teacher')
        if isinstance(src, str):
            term['from_teacher'] = names[src]
        elif src is not None:
            term['from_teacher'] = tuple(names[n] for n in src)
    return terms


def _multi_distiller(preset: Preset, student: dict, teachers: List[dict],
                     method: MethodSpec, teacher_ckpt,
                     num_classes: int) -> Tuple[dict, Optional[str]]:
    """Several teachers (``MethodSpec.teacher_archs``), each named after
    its family, with its teacher run's checkpoint (``teacher_ckpt``: one
    per teacher, or None before they are trained); returns the first
    teacher's checkpoint as the one a summary quotes."""
    names = method.teacher_names()
    # the terms are adapted to the first teacher's widths: the FPN widths
    # of the presets' detection families agree (test_multi_teacher_methods)
    ckpts = tuple(teacher_ckpt) if teacher_ckpt else (None, ) * len(teachers)
    info = model_info(preset, teachers[0], student, num_classes)
    terms = _rename_teachers(method.build_terms(info), names)
    return dict(
        type=_distiller_type(preset.task),
        student=student,
        teachers={arch: dict(model=cfg, ckpt=ckpt) for arch, cfg, ckpt in
                  zip(method.teacher_archs, teachers, ckpts)},
        distill_terms=terms, **method.framework()), ckpts[0]


def _method_teachers(preset: Preset, method: MethodSpec,
                     num_classes: int):
    """The teacher model(s) of a method with ``teacher_archs``: one
    config, or a list for several."""
    cfgs = [model_cfgs(preset, arch, num_classes)[0]
            for arch in method.teacher_archs]
    return cfgs if len(cfgs) > 1 else cfgs[0]


def run_config(preset: Preset, data: DataSpec, classes: Sequence[str],
               role: str, arch: str,
               method: Optional[MethodSpec] = None,
               teacher_ckpt: Optional[str] = None,
               cfg_options: Optional[dict] = None,
               assistant: Optional[str] = None,
               weight_rule: str = 'preset',
               weight_target: float = 1.0) -> dict:
    """The config dict of one run.

    Args:
        preset: The preset.
        data: The dataset.
        classes: Class names.
        role: ``'teacher'``, ``'assistant'``, ``'baseline'`` or
            ``'distill'``.
        arch: Model family.
        method: The method (``'distill'`` and ``'assistant'``).
        teacher_ckpt: Teacher checkpoint (``'distill'`` and
            ``'assistant'``; via an assistant, the assistant's; a tuple,
            one per teacher, for a method of several teachers).
        cfg_options: Extra ``key.sub=value`` overrides for every run.
        assistant: The family's assistant (``ModelPair.assistants``) the
            ``'assistant'`` run trains, or the teacher of a ``'distill'``
            run via the assistant.
        weight_rule: How the distilled runs' term weights are set
            (:data:`WEIGHT_RULES`).
        weight_target: The gradient share of the ``'grad_share*'`` rules.
    """
    model, teacher = _run_models(preset, role, arch, len(classes),
                                 assistant)
    if role == 'distill' and method is not None and method.teacher_archs:
        teacher = _method_teachers(preset, method, len(classes))
    runtime = copy.deepcopy(_runtime(preset.task))
    sched = preset.schedule
    # an assistant is the next step's teacher: the teacher's schedule
    iters = sched.teacher_iters if role in ('teacher', 'assistant') \
        else sched.student_iters
    cfg = Config(runtime)
    cfg.merge_from_dict(_schedule(
        preset, iters, family_optimizer(preset, arch, len(classes))))
    cfg.merge_from_dict(dataset_cfg(data, preset, classes))
    if teacher is not None:
        if method is None:
            raise ValueError(f'role={role!r} needs a method')
        model, teacher_ckpt = _distiller(preset, model, teacher, method,
                                         teacher_ckpt, len(classes))
        teacher_metric = _teacher_metric(preset.task, teacher_ckpt)
        if teacher_metric is not None:
            cfg.teacher_metric = teacher_metric  # for the run's summary
        hooks = weight_hooks(weight_rule, weight_target)
        if hooks:
            cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + hooks
    cfg.model = copy.deepcopy(model)
    cfg.randomness = dict(seed=0)
    overrides = run_overrides(cfg_options, method)
    if overrides:
        cfg.merge_from_dict(overrides)
    return cfg.to_dict()


def term_weights(cfg: dict) -> Dict[str, Dict[str, float]]:
    """The numeric settings of each distillation term of a run config.

    Per term: its ``weight`` (where set) and every number of its loss
    configs (``loss.loss_weight``, ``loss.tau``, FGD's ``loss.alpha_fgd``
    ...; ``loss.0.x`` for a list of losses): the weights the method's
    rule produced for this run, which the runner logs. Empty for a run
    without terms.
    """
    terms = cfg.get('model', {}).get('distill_terms') or {}
    out: Dict[str, Dict[str, float]] = {}
    for name, term in terms.items():
        values: Dict[str, float] = {}
        if _is_number(term.get('weight')):
            values['weight'] = term['weight']
        for prefix, loss in term_loss_cfgs(term):
            values.update({f'{prefix}.{k}': v for k, v in
                           sorted(loss.items()) if _is_number(v)})
        out[name] = values
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def weight_hooks(rule: str, target: float = 1.0) -> List[dict]:
    """The custom hooks that apply a weight rule (see WEIGHT_RULES)."""
    if rule not in WEIGHT_RULES:
        raise ValueError(f'unknown weight rule {rule!r}; rules: '
                         f'{list(WEIGHT_RULES)}')
    if rule == 'preset':
        return []
    hook = dict(type='visionkd.AutoWeightHook', target=float(target),
                iters=WEIGHT_RULE_ITERS)
    if rule == 'grad_share_cap':
        hook['max_factor'] = 1.0
    return [hook]


def run_overrides(cfg_options: Optional[dict],
                  method: Optional[MethodSpec]) -> dict:
    """The ``--cfg-options`` of one run.

    A key ``'<method>:<key>'`` applies only to the runs distilled with
    that method (its students and, with ``--assistant``, its assistant),
    e.g. ``af_dcd:model.distill_terms.af_dcd.loss.loss_weight=0.2``: a
    term's weight cannot go to the baseline, whose model has no terms. A
    key without ``:`` applies to every run.
    """
    out = {}
    for key, value in (cfg_options or {}).items():
        scope, sep, rest = key.rpartition(':')
        if not sep:
            out[key] = value
        elif method is not None and scope == method.name:
            out[rest] = value
    return out


def check_overrides(cfg_options: Optional[dict],
                    methods: Sequence[str]) -> None:
    """Fail if a method-scoped override names no method of the
    experiment (a typo would otherwise change nothing, silently)."""
    for key in cfg_options or {}:
        scope, sep, rest = key.rpartition(':')
        if sep and (scope not in methods or not rest):
            raise ValueError(
                f'--cfg-options {key!r}: {scope!r} is not one of the '
                f'methods of this experiment ({", ".join(methods)}); a '
                f'method-scoped override is <method>:<key>=<value>')


def _teacher_metric(task: str,
                    teacher_ckpt: Optional[str]) -> Optional[float]:
    """The teacher run's metric (its ``result.json`` beside the checkpoint)
    on the evaluator's scale, for DistillSummaryHook; None if unknown."""
    path = osp.join(osp.dirname(teacher_ckpt or ''), 'result.json')
    if not teacher_ckpt or not osp.isfile(path):
        return None
    with open(path) as f:
        metric = json.load(f).get('metric')
    return None if metric is None else metric / METRIC_KEYS[task][1]


def write_config(cfg: dict, path: str) -> str:
    """Dump a config dict as a ``.py`` config; returns the path."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = path + '.tmp.py'
    Config(cfg).dump(tmp)
    os.replace(tmp, path)
    return path
