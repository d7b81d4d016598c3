"""Distiller core shared by detection and segmentation."""
import contextlib
import copy
import math
from typing import Any, ContextManager, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel, revert_sync_batchnorm
from mmengine.registry import MODELS as ROOT_MODELS

from visionkd.models.recorders import DistillRecords, ModelRecorders
from visionkd.registry import TERM_MODES
from visionkd.utils import resolve_model_cfg

from .auto_pairing import resolve_auto_terms
from .distill_teacher import DistillTeacher, init_from_scratch
from .ema_teacher import (
    ema_decay,
    ema_state,
    ema_update,
    load_ema_state,
    make_ema_teacher,
)
from .grad_share import GradShare
from .loss_compile import compile_term_losses
from .teacher_fusion import TermSource, split_source
from .teacher_precision import TeacherPrecision
from .teacher_specs import TeacherSpec, teacher_specs
from .terms import TermContext
from .terms.base_term import to_float32

__all__ = ['BaseDistiller']

ForwardResults = Union[Dict[str, torch.Tensor], list, tuple, torch.Tensor]



def _two_stage_detr_side(model: nn.Module) -> int:
    """Smallest square input side (a multiple of 32) whose encoder tokens
    (strides 8, 16, ... over ``num_feature_levels`` levels) hold the
    ``num_queries`` top-k proposals of a two-stage DETR (DINO); 0 for any
    other model."""
    queries = getattr(model, 'num_queries', None)
    if not getattr(model, 'as_two_stage', False) or not queries:
        return 0
    levels = int(getattr(model, 'num_feature_levels', 4))
    side = 32
    while sum(math.ceil(side / (8 * 2**k))**2 for k in range(levels)) < \
            queries:
        side += 32
    return side

class BaseDistiller(BaseModel):
    """Wrap an mmdet/mmseg teacher and student and add distillation terms.

    * ``self.student`` is the unmodified student model; training, ``predict``
      and ``tensor`` modes run it, so evaluating a distiller config evaluates
      the student.
    * ``self.teacher`` is the unmodified teacher model, frozen and always in
      eval mode. It is deliberately *not* registered as a child module: it
      stays out of ``state_dict()`` (checkpoints hold the student, connectors
      and loss parameters only; the teacher always comes from
      ``teacher_ckpt``), out of ``parameters()`` (so out of every optimizer
      and of DDP's gradient sync) and out of ``train()``. ``to()``, ``cuda()``
      and ``half()`` still move it.
    * The teacher runs under ``no_grad`` in tensor mode and stops as soon as
      every recorded teacher layer has produced its output, so distilling
      the FPN computes backbone+neck only and never the teacher's heads or
      task loss.
    * Several teachers (``teachers=dict(<name>=dict(...))``), a teacher at
      its own input scale, online, EMA and self teachers: see
      :mod:`visionkd.models.distillers.teacher_specs` and docs/frameworks.md.
      Frozen and EMA teachers are kept out of ``parameters()`` like the one
      teacher (an EMA teacher's weights are in the checkpoint as
      ``ema_teachers.<name>.*``); online teachers are child modules
      (``online_teachers.<name>``: optimizer, DDP, checkpoint) and train
      with their own task loss, logged as ``<name>.loss_*``.

    Args:
        student: Student model: an inline model dict, a config reference
            (``'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'``, a local
            file) or ``dict(config=<ref>, **overrides)``.
        teacher: Teacher model, same forms as ``student``; or
            ``dict(kind='ema', decay=0.999)`` (an EMA of the student) or
            ``'self'`` (self-distillation). None with ``teachers``.
        teacher_ckpt: Local path or URL of the teacher weights. ``None`` only
            for tests and smoke runs (a warning is logged). Loaded with
            ``weights_only=True`` unless it is a run's own checkpoint (see
            :mod:`visionkd.utils.checkpoint`).
        teacher_ckpt_strict: Every teacher key must be in the checkpoint
            with its shape and vice versa, else the build fails listing the
            mismatch (a wrong checkpoint otherwise leaves teacher layers
            random). False loads the matching tensors and logs a warning
            with the counts. Defaults to True.
        teacher_precision: ``None`` (the teacher runs in the caller's
            context, e.g. the runner's autocast under ``--amp``), ``'fp32'``
            (autocast off), ``'bf16'`` or ``'fp16'`` (the teacher's forward
            under autocast in that dtype, its records cast back to float32
            for the losses): a cheaper teacher, see docs/benchmarks.md for
            the effect on recorded features.
        teacher_channels_last: Run the teacher in channels-last memory
            format (weights and input). Defaults to False.
        compile_losses: ``True`` or a dict of ``torch.compile`` arguments
            (e.g. ``dict(mode='max-autotune-no-cudagraphs')``) compiles
            every distillation loss module; a loss that fails to compile
            runs eagerly with a warning. Defaults to False.
        grad_share_interval: Every N training iterations, log each term's
            gradient norm on the student layer it distils relative to the
            task loss's there, as ``grad_share_<term>`` (see
            :mod:`visionkd.models.distillers.grad_share`). 0 (default): off.
        distill_terms: ``{name: term}``; each entry's ``mode`` (default
            ``'feature'``, see :class:`FeatureDistillTerm`) names its class
            in :data:`visionkd.registry.TERM_MODES`. A feature term may
            say ``student='auto'`` / ``teacher='auto'``, and
            ``distill_terms`` may be a preset name (``'auto'``, ``'fpn'``,
            ``'logits'``): the layers are paired at build time and the
            resolved terms logged (see
            :mod:`visionkd.models.distillers.auto_pairing`); they are
            :attr:`resolved_distill_terms`.
        dry_run_input_size: (H, W) of the zero image used at build time to
            read the recorded layers' shapes, validate the terms and pair
            ``'auto'`` layers. Defaults to (128, 128): enough for a stride
            128 level to have one pixel; pairing depends on strides and
            channels only, not on the size. Raised for a two-stage DETR
            (DINO) to the side whose encoder has ``num_queries`` tokens
            (its top-k proposals need them: 224 for DINO's 900).
        init_student: FGD's "inheriting strategy" (Yang et al., CVPR 2022,
            official ``init_student=True``): after the teacher checkpoint is
            loaded, every student parameter and buffer outside
            ``init_student_skip`` whose name and shape match the teacher's
            is copied from the teacher (e.g. the neck and heads of an R101
            teacher into an R50 student). It is applied at build time and
            again at the end of :meth:`init_weights` (which the runner calls
            after building the model and would otherwise overwrite it), so
            it always happens before ``--resume`` / ``load_from`` load their
            checkpoint and is never applied over resumed weights.
            Defaults to False.
        init_student_skip: Top-level student modules never inherited.
            Defaults to ``('backbone', )`` as the official code.
        check_finite: Stop training with an error naming the term and the
            iteration as soon as a distillation term is NaN/Inf, before
            the optimizer step (so the last checkpoint stays the last good
            one). Costs one host sync per iteration.
        teachers: Several teachers, ``{name: dict(model=<ref>,
            ckpt=<path>, ckpt_strict=True, input=dict(scale_factor=1.0),
            trainable=False)}`` or ``{name: dict(kind='ema' | 'self')}``,
            instead of ``teacher``/``teacher_ckpt``; a term reads one with
            ``from_teacher='<name>'`` (default: the first) or fuses several
            (``from_teacher=('a', 'b'), fuse='mean'``, see
            :mod:`visionkd.models.distillers.teacher_fusion`).
        teacher_input: ``dict(scale_factor=s)``: the teacher sees the
            student's batch resized by ``s`` (its data samples scaled too);
            feature terms resize the teacher's maps to the student's.
        teacher_trainable: The teacher trains with the student (online
            distillation; with ``direction='student_to_teacher'`` terms,
            deep mutual learning).
        data_preprocessor: Ignored: the student's preprocessor is always
            used (mmengine's runner fills this argument from a top-level
            ``data_preprocessor`` of the config). The teacher receives the
            student's normalised batch, re-normalised when its own
            mean/std/channel order differ.
        init_cfg: Unused; kept for the OpenMMLab signature.
    """

    #: Registry scope used for models whose config names none.
    default_scope: str = 'mmdet'
    #: Task name matched against a term mode's ``tasks``.
    task: str = 'detection'
    #: Ground-truth field of the task's data samples (checked against the
    #: ``gt_field`` of ground-truth-driven losses).
    gt_field: Optional[str] = None

    def __init__(self,
                 student: Union[str, dict],
                 teacher: Union[str, dict, None] = None,
                 teacher_ckpt: Optional[str] = None,
                 teacher_ckpt_strict: bool = True,
                 teacher_precision: Optional[str] = None,
                 teacher_channels_last: bool = False,
                 compile_losses: Union[bool, dict] = False,
                 grad_share_interval: int = 0,
                 distill_terms: Union[str, Dict[str, dict], None] = None,
                 dry_run_input_size: Tuple[int, int] = (128, 128),
                 init_student: bool = False,
                 init_student_skip: Tuple[str, ...] = ('backbone', ),
                 check_finite: bool = True,
                 teachers: Optional[Dict[str, dict]] = None,
                 teacher_input: Optional[dict] = None,
                 teacher_trainable: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        student_cfg = resolve_model_cfg(student, self.default_scope,
                                        'student')
        specs = teacher_specs(teacher, teachers, teacher_ckpt,
                              teacher_ckpt_strict, teacher_input,
                              teacher_trainable)
        student_model = ROOT_MODELS.build(student_cfg)
        super().__init__(data_preprocessor=student_model.data_preprocessor,
                         init_cfg=init_cfg)
        self.student = student_model
        self._check_task(self.student, 'student')
        self.online_teachers = nn.ModuleDict()
        self._set_teachers(specs, TeacherPrecision(teacher_precision,
                                                   teacher_channels_last))
        self.dry_run_input_size = tuple(dry_run_input_size)
        #: Set False (e.g. by DistillStopHook) to train the student alone.
        self.distill_enabled = True
        self.check_finite = bool(check_finite)
        self.grad_share = GradShare(grad_share_interval)
        #: Times the teacher and the terms in ``loss`` when set (an object
        #: with ``measure(part) -> context manager``, e.g.
        #: DistillSummaryHook's); None (default) times nothing.
        self.step_timer: Optional[Any] = None
        #: Recorders on every model, read by the terms.
        self.records = DistillRecords(
            student=ModelRecorders(self.student, 'student'),
            teachers={n: ModelRecorders(t.model, t.spec.role)
                      for n, t in self._teachers.items()})
        self.distill_terms = self._build_terms(distill_terms)
        self._compile_losses(compile_losses)
        self.init_student = bool(init_student)
        self.init_student_skip = tuple(init_student_skip)
        self._check_init_student()
        # Load the teachers last so configuration errors come first. The
        # runner's init_weights() never reaches frozen teachers (not
        # children) and re-loads online ones (see init_weights).
        self.load_teacher()
        if self.init_student:
            self.inherit_from_teacher()

    # ------------------------------------------------------------------
    # build-time helpers
    def _compile_losses(self, compile_losses: Union[bool, dict]) -> None:
        compiled = compile_term_losses(self.distill_terms, compile_losses)
        if compiled:
            MMLogger.get_current_instance().info(
                f'compile_losses: {", ".join(compiled)}')

    def _build_teacher_model(self, spec: TeacherSpec) -> nn.Module:
        """The model of one teacher (frozen/online: built from its config;
        EMA: a copy of the student; self: the student)."""
        if spec.kind == 'self':
            return self.student
        if spec.kind == 'ema':
            return make_ema_teacher(self.student, spec.role)
        cfg = resolve_model_cfg(spec.model, self.default_scope, spec.role)
        model = ROOT_MODELS.build(cfg)
        self._check_task(model, spec.role)
        if spec.kind == 'frozen':
            # It only runs in eval mode: SyncBN there is plain BN, and
            # reverting it lets it run without a process group.
            model = revert_sync_batchnorm(model)
        return model

    def _set_teachers(self, specs: Dict[str, TeacherSpec],
                      precision: TeacherPrecision) -> None:
        """Build every teacher (checkpoints loaded later, see
        :meth:`load_teacher`)."""
        teachers: Dict[str, DistillTeacher] = {}
        for name, spec in specs.items():
            model = self._build_teacher_model(spec)
            if spec.kind == 'frozen' and spec.ckpt is None:
                # no child the runner initialises: its own init_weights
                # (before any memory format or precision change)
                init_from_scratch(model)
            if spec.kind in ('frozen', 'ema'):
                model.requires_grad_(False)
                model.eval()
                precision.prepare(model)
            elif spec.kind == 'online':
                self.online_teachers[name] = model
            teachers[name] = DistillTeacher(spec, model, self.student)
            if spec.kind == 'frozen' and spec.ckpt is None:
                MMLogger.get_current_instance().warning(
                    f'{spec.ckpt_key} is None: the {spec.role} keeps the '
                    f'weights of its init_weights (pretrained inits '
                    f'skipped)')
        # Not child modules on purpose (see the class docstring).
        object.__setattr__(self, '_teachers', teachers)
        first = next(iter(teachers.values()))
        object.__setattr__(self, 'teacher', first.model)
        self.teacher_ckpt = first.spec.ckpt
        self.teacher_ckpt_strict = first.spec.ckpt_strict
        self.teacher_precision = precision

    @property
    def teachers(self) -> Dict[str, nn.Module]:
        """The teacher models by name (the one-teacher form: ``teacher``)."""
        return {n: t.model for n, t in self._teachers.items()}

    def teacher_kind(self, name: str) -> str:
        """``'frozen'``, ``'online'``, ``'ema'`` or ``'self'``."""
        return self._teachers[name].kind

    def ema_snapshot(self) -> Dict[str, torch.Tensor]:
        """Copies of every EMA teacher's checkpoint entries (weights,
        buffers, update count), for :meth:`restore_ema` (a measurement that
        runs ``loss`` mode without training, e.g. AutoWeightHook, undoes
        its EMA updates)."""
        return {k: v.clone() for n, t in self._teachers.items()
                if t.kind == 'ema'
                for k, v in ema_state(n, t.model, t.steps).items()}

    def restore_ema(self, snapshot: Dict[str, torch.Tensor]) -> None:
        """Put the EMA teachers back to an :meth:`ema_snapshot`."""
        state = dict(snapshot)
        for n, t in self._teachers.items():
            if t.kind == 'ema':
                load_ema_state(n, t.model, t.steps, state)

    def _check_init_student(self) -> None:
        if not self.init_student:
            return
        first = next(iter(self._teachers.values()))
        if first.kind in ('ema', 'self'):
            raise ValueError(
                f"init_student=True copies a trained teacher's weights into "
                f"the student, but the teacher is kind='{first.kind}' (the "
                f'student itself): drop init_student')
        if first.kind == 'online' and first.spec.ckpt is None:
            raise ValueError(
                f'init_student=True copies the teacher\'s weights into the '
                f'student, but the trainable {first.spec.role} has no '
                f'checkpoint ({first.spec.ckpt_key}=None: it starts from '
                f'scratch); give {first.spec.ckpt_key}=<trained weights> or '
                f'drop init_student')

    def _check_task(self, model: nn.Module, role: str) -> None:
        """Raise if ``model`` is not of the task this distiller handles."""

    def _term_class(self, name: str, cfg: dict) -> type:
        """The class of ``cfg``'s ``mode`` (default ``'feature'``)."""
        if not isinstance(cfg, dict):
            raise TypeError(f'distill term {name!r} must be a dict, got '
                            f'{type(cfg).__name__}')
        mode = cfg.get('mode', 'feature')
        cls = TERM_MODES.get(mode) if isinstance(mode, str) else None
        if cls is None:
            raise ValueError(f'distill term {name!r}: unknown mode {mode!r}; '
                             f'modes: {sorted(TERM_MODES.module_dict)}')
        if self.task not in cls.tasks:
            raise ValueError(
                f'distill term {name!r}: mode {mode!r} is for '
                f'{" / ".join(cls.tasks)} distillers, not {self.task}')
        return cls

    def _teacher_kinds(self) -> Dict[str, str]:
        return {n: t.kind for n, t in self._teachers.items()}

    def _model_of(self, name: str) -> nn.Module:
        """``'student'`` or a teacher's model."""
        return self.student if name == 'student' else \
            self._teachers[name].model

    def _scale_of(self, name: str) -> float:
        return 1.0 if name == 'student' else \
            self._teachers[name].spec.scale_factor

    def term_models(self, name: str, cfg: dict
                    ) -> Tuple[dict, TermSource, nn.Module, nn.Module]:
        """A term entry without its source keys, its :class:`TermSource`,
        and its learner and (first) target model."""
        term_cfg, source = split_source(name, cfg, self._teacher_kinds())
        return (term_cfg, source, self._model_of(source.learner),
                self._model_of(source.targets[0]))

    def _check_source(self, name: str, cls: type, cfg: dict,
                      source: TermSource) -> None:
        """Raise for what a term's mode cannot do with its teachers."""
        mode = cfg.get('mode', 'feature')
        if source.fused and not cls.supports_fusion:
            raise ValueError(
                f'distill term {name!r}: mode {mode!r} reads its teacher\'s '
                f'head, it cannot fuse several teachers; give one teacher '
                f"(from_teacher='{source.targets[0]}') per term")
        scales = {self._scale_of(n) for n in (source.learner,
                                              *source.targets)}
        if scales != {1.0} and not cls.supports_teacher_scale:
            raise ValueError(
                f'distill term {name!r}: mode {mode!r} feeds the student\'s '
                f'boxes or features to the teacher\'s head, so the teacher '
                f'must see the student\'s batch, but its input scale is '
                f'{sorted(scales)}; drop input=dict(scale_factor=...) for '
                f'this teacher or distil its features (mode=\'feature\')')
        kinds = self._teacher_kinds()
        online = [n for n in (source.learner, *source.targets)
                  if kinds.get(n) == 'online']
        if online and not cls.supports_trainable_teacher:
            raise ValueError(
                f'distill term {name!r}: mode {mode!r} needs a frozen '
                f'teacher (in eval mode), but {online[0]!r} trains with the '
                f'student (teacher_trainable / trainable=True); distil that '
                f"teacher's features with mode='feature' instead")
        if source.fuse == 'max_confidence' and source.fused:
            from visionkd.models.connectors import class_logits_of
            for n in source.targets:
                if class_logits_of(self._model_of(n), cfg['teacher']) is None:
                    raise ValueError(
                        f"distill term {name!r}: fuse='max_confidence' "
                        f'picks the most confident teacher per pixel from '
                        f'class logits, but {cfg["teacher"]!r} of teacher '
                        f'{n!r} is not the classifier of a segmentation '
                        f"head; use fuse='mean'")

    def _check_auto_source(self, cfgs) -> None:
        """Automatic pairing surveys the default teacher only."""
        if not isinstance(cfgs, dict):
            return
        first = next(iter(self._teachers))
        for name, cfg in cfgs.items():
            if not isinstance(cfg, dict) or 'auto' not in (
                    cfg.get('student'), cfg.get('teacher')):
                continue
            if cfg.get('from_teacher', first) != first or cfg.get(
                    'direction', 'teacher_to_student') != \
                    'teacher_to_student':
                raise ValueError(
                    f"distill term {name!r}: student='auto' / "
                    f"teacher='auto' pairs layers of the first teacher "
                    f'({first!r}) and the student only; write the module '
                    f'paths for from_teacher={cfg.get("from_teacher")!r}')

    def _build_terms(self, cfgs: Union[str, Dict[str, dict], None]
                     ) -> nn.ModuleDict:
        """Resolve ``'auto'`` layers, check every entry, record its
        layers, dry-run, build the terms.

        Each term is built complete from a :class:`TermContext` holding
        the models and what its layers recorded in the dry run.
        """
        self._check_auto_source(cfgs)
        cfgs = resolve_auto_terms(self, cfgs)
        #: The terms as built, ``'auto'`` layers resolved (a copy).
        self.resolved_distill_terms: Dict[str, dict] = copy.deepcopy(
            dict(cfgs))
        specs = {}
        for name, cfg in cfgs.items():
            cls = self._term_class(name, cfg)
            term_cfg, source, learner, target = self.term_models(name, cfg)
            self._check_source(name, cls, term_cfg, source)
            layers = cls.recorded_layers(name, term_cfg, learner, target)
            self.records.of(source.learner).add(layers.student, name)
            for n in source.targets:
                self.records.of(n).add(layers.teacher, name)
            specs[name] = (cls, term_cfg, layers, source, learner, target)
        terms = nn.ModuleDict()
        if not specs:
            return terms
        has_data_samples = self._dry_run()
        for name, (cls, cfg, layers, source, learner, target) in \
                specs.items():
            t_levels = self._target_levels(name, layers, source)
            terms[name] = cls(name, cfg, TermContext(
                layers=layers,
                student=learner,
                teacher=target,
                student_levels=self.records.of(source.learner).levels(
                    layers.student),
                teacher_levels=t_levels,
                has_data_samples=has_data_samples,
                gt_field=self.gt_field,
                source=source,
                teacher_scale=self._scale_of(source.targets[0]) /
                self._scale_of(source.learner)))
        self.records.clear()
        self._check_unique_keys(terms)
        return terms

    def _target_levels(self, name: str, layers, source: TermSource) -> list:
        """The first target's dry-run levels; fused targets must record
        the same shapes."""
        per = [self.records.of(n).levels(layers.teacher)
               for n in source.targets]
        shapes_of = [[tuple(x.shape) if isinstance(x, torch.Tensor) else x
                      for x in levels] for levels in per]
        first = shapes_of[0]
        for n, shapes in zip(source.targets[1:], shapes_of[1:]):
            if shapes != first:
                raise ValueError(
                    f'distill term {name!r}: fused teachers record other '
                    f'shapes at {layers.teacher[0]!r}: '
                    f'{source.targets[0]!r} {first}, {n!r} {shapes}; fuse '
                    f'teachers of equal width, or distil each teacher in '
                    f"a term of its own (from_teacher='{source.targets[0]}'"
                    f", from_teacher='{n}', each with its connector): "
                    f'their losses add up')
        return per[0]

    @staticmethod
    def _check_unique_keys(terms: nn.ModuleDict) -> None:
        owner: Dict[str, str] = {}
        for name, term in terms.items():
            for key in term.loss_keys:
                if key in owner:
                    raise ValueError(
                        f'distill terms {owner[key]!r} and {name!r} both log '
                        f'{key!r}; rename one of them')
                owner[key] = name

    def _dry_run(self) -> bool:
        """Run every model once on a zero image and keep the records.

        Returns:
            Whether the models get data samples.
        """
        side = max([_two_stage_detr_side(m) for m in (
            self.student, *(t.model for t in self._teachers.values()))])
        h, w = (max(d, side) for d in self.dry_run_input_size)
        inputs = torch.zeros(1, 3, h, w)
        samples = self._dummy_data_samples(h, w)
        self.records.clear()
        own = {n: t for n, t in self._teachers.items()
               if t.spec.has_own_model}
        modes = {n: t.model.training for n, t in own.items()}
        was_training = self.student.training
        self.student.eval()
        # what 'self' teachers record comes from the student's forward
        paths = self.records.student.paths + [
            p for n, t in self._teachers.items() if n not in own
            for p in self.records.of(n).paths]
        with torch.no_grad():
            self._forward_for_records(self.student, inputs, samples, paths)
            for n, t in own.items():
                if not self.records.of(n).keys:
                    continue
                t.model.eval()
                self._forward_for_records(
                    t.model, t.inputs(inputs), t.data_samples(samples, (h, w)),
                    self.records.of(n).paths)
        self.student.train(was_training)
        for n, mode in modes.items():
            own[n].model.train(mode)
        for n, t in self._teachers.items():
            where = ('the student forward (a kind=\'self\' teacher)'
                     if n not in own else f'the {t.spec.role} forward')
            for path, _ in self.records.of(n).not_recorded():
                raise ValueError(
                    f'{t.spec.role} layer {path!r} did not run in {where} '
                    f'(no loss is computed there); record a layer that does')
            self.records.of(n).expect_current_counts()
        return samples is not None

    def _dummy_data_samples(self, height: int, width: int) -> Optional[list]:
        """Data samples for the build-time dry run (None if not needed)."""
        return None

    def _forward_for_records(self, model: nn.Module, inputs: torch.Tensor,
                             data_samples: Optional[list],
                             paths: List[str]) -> None:
        """Run ``model`` (teacher, or student in the dry run) without loss.

        The default is the model's ``tensor`` mode; subclasses add modules
        that only run in ``loss`` mode (mmseg auxiliary heads).

        Args:
            model: Teacher or student.
            inputs: Preprocessed batch.
            data_samples: The batch's data samples.
            paths: Module paths recorded on ``model``.
        """
        model(inputs, data_samples, mode='tensor')

    def _teacher_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The default teacher's input from the student's batch."""
        return next(iter(self._teachers.values())).inputs(inputs)

    def load_teacher(self) -> None:
        """Load every teacher's checkpoint (idempotent)."""
        for t in self._teachers.values():
            t.load()

    def inherit_from_teacher(self) -> List[str]:
        """Copy matching teacher weights into the student (FGD inheriting).

        Returns:
            Names of the student entries that were copied.
        """
        teacher_state = self.teacher.state_dict()
        copied, skipped = [], []
        with torch.no_grad():
            for name, value in self.student.state_dict().items():
                if name.split('.')[0] in self.init_student_skip:
                    continue
                src = teacher_state.get(name)
                if src is None or src.shape != value.shape:
                    skipped.append(name)
                    continue
                value.copy_(src)
                copied.append(name)
        logger = MMLogger.get_current_instance()
        if not copied:
            logger.warning('init_student: no student weight outside '
                           f'{self.init_student_skip} matches the teacher')
        else:
            logger.info(f'init_student: {len(copied)} student weights '
                        f'inherited from the teacher, {len(skipped)} kept '
                        f'(missing or of another shape)')
        return copied

    def init_weights(self) -> None:
        """Initialise the student (and losses, online teachers), then
        re-load online teachers' checkpoints, restart EMA teachers from
        the initialised student and inherit if asked."""
        super().init_weights()
        for t in self._teachers.values():
            if t.kind == 'online':
                t.loaded = False
                t.load()
            elif t.kind == 'ema':
                ema_update(t.model, self.student, 0.0)
                t.steps.zero_()
        if getattr(self, 'init_student', False):
            self.inherit_from_teacher()

    # ------------------------------------------------------------------
    # module behaviour
    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for t in self._teachers.values():
            if t.runs_alone:  # not children: frozen and EMA teachers
                t.model._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'BaseDistiller':
        """Set train mode on the student (and online teachers); frozen and
        EMA teachers stay in eval mode."""
        super().train(mode)
        for t in self._teachers.values():
            if t.runs_alone:
                t.model.eval()
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """Also save EMA teachers (``ema_teachers.<name>.*``)."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for n, t in self._teachers.items():
            if t.kind == 'ema':
                for k, v in ema_state(n, t.model, t.steps).items():
                    destination[prefix + k] = v

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Load EMA teachers' entries; a checkpoint without them (another
        run's) restarts each EMA teacher from the loaded student at the next
        training step."""
        for n, t in self._teachers.items():
            if t.kind != 'ema':
                continue
            t.resync = not load_ema_state(n, t.model, t.steps, state_dict,
                                          prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        kinds = ', '.join(
            f'{n}={type(t.model).__name__} ({t.kind}'
            + (f', {t.spec.scale_factor}x input' if
               t.spec.scale_factor != 1.0 else '') + ')'
            for n, t in self._teachers.items())
        return (f'teachers: {kinds}; frozen and EMA teachers are not child '
                f'modules, teacher_ckpt={self.teacher_ckpt!r}')

    # ------------------------------------------------------------------
    # forward
    def run_teacher(self, inputs: torch.Tensor,
                    data_samples: Optional[list]) -> None:
        """Forward every frozen and EMA teacher that a term records,
        without grad, until each of its recorded layers has run."""
        for n, t in self._teachers.items():
            recorders = self.records.of(n)
            if not t.runs_alone or not recorders.keys:
                continue
            self._run_one_teacher(t, recorders, inputs, data_samples)

    def _run_one_teacher(self, t: DistillTeacher, recorders: ModelRecorders,
                         inputs: torch.Tensor,
                         data_samples: Optional[list]) -> None:
        # the distiller's setting (tools swap it on a built model)
        precision = self.teacher_precision

        def forward() -> None:
            x = precision.inputs(t.inputs(inputs))
            samples = t.data_samples(data_samples, tuple(inputs.shape[-2:]))
            with torch.no_grad(), precision.context(inputs.device.type):
                self._forward_for_records(t.model, x, samples,
                                          recorders.paths)

        recorders.run_until_complete(forward)
        if precision.casts_records:
            recorders.map_records(to_float32)

    def _update_ema_teachers(self) -> None:
        """One EMA step of every EMA teacher towards the student's current
        weights (see :mod:`visionkd.models.distillers.ema_teacher`)."""
        for t in self._teachers.values():
            if t.kind != 'ema':
                continue
            ema_update(t.model, self.student, 0.0 if t.resync else
                       ema_decay(t.spec.decay, int(t.steps),
                                 t.spec.warmup))
            t.resync = False
            t.steps += 1

    def _online_teacher_losses(self, inputs: torch.Tensor,
                               data_samples: Optional[list]
                               ) -> Dict[str, torch.Tensor]:
        """Task losses of every online teacher, keyed ``<name>.<key>``;
        their forward fills their records (with grad)."""
        out = {}
        for n, t in self._teachers.items():
            if t.kind != 'online':
                continue
            x = t.inputs(inputs)
            samples = t.data_samples(data_samples, tuple(inputs.shape[-2:]))
            for key, value in t.model.loss(x, samples).items():
                out[f'{n}.{key}'] = value
        return out

    def loss(self, inputs: torch.Tensor,
             data_samples: Optional[list] = None) -> Dict[str, torch.Tensor]:
        """Student task losses (unchanged), online teachers' task losses
        and every term's losses.

        Args:
            inputs: Preprocessed batch, (N, 3, H, W).
            data_samples: The batch's data samples (with ground truth).

        Returns:
            Dict of losses; distillation terms are ``loss_kd_<name>`` or
            ``loss_kd_<name>_<suffix>`` (e.g. ``_l<i>`` per level); an
            online teacher's are ``<teacher name>.loss_*``.
        """
        distill = self.distill_enabled and len(self.distill_terms) > 0
        self.records.clear()
        if self.student.training:
            self._update_ema_teachers()
        if distill:
            with self._timed('teacher'):
                self.run_teacher(inputs, data_samples)
        losses = dict(self.student.loss(inputs, data_samples))
        if len(self.online_teachers):
            with self._timed('teacher'):
                losses.update(self._online_teacher_losses(inputs,
                                                          data_samples))
        if distill:
            with self._timed('distill'):
                self._distill_losses(losses, data_samples)
        self.records.clear()
        return losses

    def _distill_losses(self, losses: Dict[str, torch.Tensor],
                        data_samples: Optional[list]) -> None:
        """Add every term's losses to ``losses`` (and check them)."""
        for term in self.distill_terms.values():
            self._add_term_losses(losses, term(self.records, data_samples))
        if self.check_finite:
            self._check_finite(losses)
        if self.grad_share.due():
            self.grad_share.log(self.grad_share.compute(
                self.student, self.distill_terms, losses))

    def _timed(self, part: str) -> ContextManager:
        """``step_timer.measure(part)``, or nothing when no timer is set."""
        timer = self.step_timer
        return contextlib.nullcontext() if timer is None else timer.measure(
            part)

    @staticmethod
    def _add_term_losses(losses: Dict[str, torch.Tensor],
                         term_losses: Dict[str, torch.Tensor]) -> None:
        for key, value in term_losses.items():
            if key in losses:
                raise KeyError(f'distill loss key {key!r} clashes with a '
                               f'student loss')
            losses[key] = value

    def _check_finite(self, losses: Dict[str, torch.Tensor]) -> None:
        """Raise ``FloatingPointError`` if a distillation term is NaN/Inf.

        Called in ``loss`` mode, i.e. before backward and the optimizer
        step: the weights are still those of the previous iteration and the
        checkpoints on disk are untouched. Each term says which keys it
        owns.
        """
        keys = [k for t in self.distill_terms.values() for k in t.loss_keys
                if k in losses]
        if not keys:
            return
        values = torch.stack([losses[k].detach().float().sum() for k in keys])
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        bad = [(k, v) for k, v, ok in zip(keys, values.tolist(),
                                           finite.tolist()) if not ok]
        hub = MessageHub.get_current_instance()
        it = hub.get_info('iter')
        where = (f'training iteration {it + 1}' if isinstance(it, int) else
                 'this iteration')
        names = ', '.join(f'{k} = {v}' for k, v in bad)
        terms = sorted({t.name for t in self.distill_terms.values()
                        for k, _ in bad if t.owns(k)})
        raise FloatingPointError(
            f'distillation term(s) {terms} not finite at {where}: {names}. '
            f'Training stopped before the optimizer step, so the newest '
            f'checkpoint in the work dir is the last good one. Lower the '
            f"term's loss_weight or the learning rate, check teacher_ckpt, "
            f'or resume from that checkpoint (--resume)')

    def predict(self, inputs: torch.Tensor,
                data_samples: Optional[list] = None) -> list:
        """Predict with the student."""
        out = self.student(inputs, data_samples, mode='predict')
        self.records.clear()
        return out

    def _forward(self,
                 inputs: torch.Tensor,
                 data_samples: Optional[list] = None) -> ForwardResults:
        """Raw outputs of the student."""
        out = self.student(inputs, data_samples, mode='tensor')
        self.records.clear()
        return out

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'tensor') -> ForwardResults:
        """Dispatch like an mmdet/mmseg model: loss, predict or tensor."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}". Only supports loss, '
                           'predict and tensor mode')
