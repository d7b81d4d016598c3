"""Distiller core shared by detection and segmentation."""
import contextlib
import copy
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
from .grad_share import GradShare
from .loss_compile import compile_term_losses
from .teacher_loading import load_teacher_weights
from .teacher_precision import TeacherPrecision
from .terms import TermContext
from .terms.base_term import to_float32

__all__ = ['BaseDistiller']

ForwardResults = Union[Dict[str, torch.Tensor], list, tuple, torch.Tensor]


def _converts_bgr_to_rgb(data_preprocessor: nn.Module) -> bool:
    """Whether a preprocessor flips the channels (``bgr_to_rgb``): mmdet's
    ``DetDataPreprocessor`` stores it as ``_channel_conversion``, mmseg's
    ``SegDataPreProcessor`` as ``channel_conversion``."""
    for attr in ('_channel_conversion', 'channel_conversion'):
        if getattr(data_preprocessor, attr, False):
            return True
    return False


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

    Args:
        student: Student model: an inline model dict, a config reference
            (``'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'``, a local
            file) or ``dict(config=<ref>, **overrides)``.
        teacher: Teacher model, same forms as ``student``.
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
            channels only, not on the size.
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
                 teacher: Union[str, dict],
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
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        student_cfg = resolve_model_cfg(student, self.default_scope,
                                        'student')
        teacher_cfg = resolve_model_cfg(teacher, self.default_scope,
                                        'teacher')
        student_model = ROOT_MODELS.build(student_cfg)
        super().__init__(
            data_preprocessor=student_model.data_preprocessor,
            init_cfg=init_cfg)
        self.student = student_model
        self._set_teacher(teacher_cfg, teacher_ckpt, teacher_ckpt_strict,
                          TeacherPrecision(teacher_precision,
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
        self._build_teacher_input_transform()
        #: Recorders on both models, read by the terms.
        self.records = DistillRecords(
            student=ModelRecorders(self.student, 'student'),
            teacher=ModelRecorders(self.teacher, 'teacher'))
        self.distill_terms = self._build_terms(distill_terms)
        compiled = compile_term_losses(self.distill_terms, compile_losses)
        if compiled:
            MMLogger.get_current_instance().info(
                f'compile_losses: {", ".join(compiled)}')
        # Load the teacher last so configuration errors come first. The
        # runner's init_weights() never reaches the teacher (not a child).
        self.load_teacher()
        self.init_student = bool(init_student)
        self.init_student_skip = tuple(init_student_skip)
        if self.init_student:
            self.inherit_from_teacher()

    # ------------------------------------------------------------------
    # build-time helpers
    def _set_teacher(self, cfg: dict, ckpt: Optional[str], strict: bool,
                     precision: TeacherPrecision) -> None:
        """Build the frozen teacher (loaded later, see :meth:`load_teacher`).
        """
        # The teacher only runs in eval mode: SyncBN there is plain BN, and
        # reverting it lets the teacher run without a process group.
        teacher_model = revert_sync_batchnorm(ROOT_MODELS.build(cfg))
        self._check_task(self.student, 'student')
        self._check_task(teacher_model, 'teacher')
        # Not a child module on purpose (see class docstring).
        object.__setattr__(self, 'teacher', teacher_model)
        self.teacher_ckpt = ckpt
        if not isinstance(strict, bool):
            raise TypeError('teacher_ckpt_strict must be True or False, got '
                            f'{strict!r}')
        self.teacher_ckpt_strict = strict
        self._teacher_loaded = False
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.teacher_precision = precision
        precision.prepare(self.teacher)
        if ckpt is None:
            MMLogger.get_current_instance().warning(
                'teacher_ckpt is None: the teacher keeps its initial weights')

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

    def _build_terms(self, cfgs: Union[str, Dict[str, dict], None]
                     ) -> nn.ModuleDict:
        """Resolve ``'auto'`` layers, check every entry, record its
        layers, dry-run, build the terms.

        Each term is built complete from a :class:`TermContext` holding
        the models and what its layers recorded in the dry run.
        """
        cfgs = resolve_auto_terms(self, cfgs)
        #: The terms as built, ``'auto'`` layers resolved (a copy).
        self.resolved_distill_terms: Dict[str, dict] = copy.deepcopy(
            dict(cfgs))
        specs = {}
        for name, cfg in cfgs.items():
            cls = self._term_class(name, cfg)
            layers = cls.recorded_layers(name, cfg, self.student,
                                         self.teacher)
            self.records.student.add(layers.student, name)
            self.records.teacher.add(layers.teacher, name)
            specs[name] = (cls, cfg, layers)
        terms = nn.ModuleDict()
        if not specs:
            return terms
        has_data_samples = self._dry_run()
        for name, (cls, cfg, layers) in specs.items():
            terms[name] = cls(name, cfg, TermContext(
                layers=layers,
                student=self.student,
                teacher=self.teacher,
                student_levels=self.records.student.levels(layers.student),
                teacher_levels=self.records.teacher.levels(layers.teacher),
                has_data_samples=has_data_samples,
                gt_field=self.gt_field))
        self.records.clear()
        self._check_unique_keys(terms)
        return terms

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
        """Run both models once on a zero image and keep the records.

        Returns:
            Whether the models get data samples.
        """
        h, w = self.dry_run_input_size
        inputs = torch.zeros(1, 3, h, w)
        samples = self._dummy_data_samples(h, w)
        was_training = self.student.training
        self.student.eval()
        self.records.clear()
        with torch.no_grad():
            self._forward_for_records(self.student, inputs, samples,
                                      self.records.student.paths)
            self._forward_for_records(self.teacher,
                                      self._teacher_inputs(inputs), samples,
                                      self.records.teacher.paths)
        self.student.train(was_training)
        for path, _ in self.records.teacher.not_recorded():
            raise ValueError(
                f'teacher layer {path!r} did not run in the teacher '
                f'forward (no loss is computed for the teacher); record '
                f'a layer that does')
        self.records.teacher.expect_current_counts()
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

    def _build_teacher_input_transform(self) -> None:
        """Work out how the student's normalised batch maps to the teacher's.

        Both preprocessors usually share mean/std/channel order; if not, the
        teacher gets ``(flip(x * std_s + mean_s) - mean_t) / std_t``.
        """
        self._teacher_affine = None
        dp_s = self.student.data_preprocessor
        dp_t = self.teacher.data_preprocessor

        def stats(dp):
            if getattr(dp, '_enable_normalize', False):
                return dp.mean.detach().clone(), dp.std.detach().clone()
            return None, None

        m_s, s_s = stats(dp_s)
        m_t, s_t = stats(dp_t)
        flip = _converts_bgr_to_rgb(dp_s) != _converts_bgr_to_rgb(dp_t)
        same = not flip and ((m_s is None and m_t is None) or (
            m_s is not None and m_t is not None and torch.allclose(m_s, m_t)
            and torch.allclose(s_s, s_t)))
        if not same:
            self._teacher_affine = (m_s, s_s, flip, m_t, s_t)
            MMLogger.get_current_instance().info(
                'teacher and student preprocessors differ: the teacher gets '
                'the student batch re-normalised to its own mean/std')

    def _teacher_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._teacher_affine is None:
            return inputs
        m_s, s_s, flip, m_t, s_t = self._teacher_affine
        x = inputs
        if m_s is not None:
            x = x * s_s.to(x) + m_s.to(x)
        if flip:
            x = x.flip(1)
        if m_t is not None:
            x = (x - m_t.to(x)) / s_t.to(x)
        return x

    def load_teacher(self) -> None:
        """Load ``teacher_ckpt`` into the teacher (idempotent)."""
        if self.teacher_ckpt is None or self._teacher_loaded:
            return
        load_teacher_weights(self.teacher, self.teacher_ckpt,
                             strict=self.teacher_ckpt_strict)
        self.teacher.eval()
        self._teacher_loaded = True

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
        """Initialise the student (and losses), then inherit if asked."""
        super().init_weights()
        if getattr(self, 'init_student', False):
            self.inherit_from_teacher()

    # ------------------------------------------------------------------
    # module behaviour
    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'BaseDistiller':
        """Set train mode on the student; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def extra_repr(self) -> str:
        return (f'teacher={type(self.teacher).__name__} (frozen, not a '
                f'child module), teacher_ckpt={self.teacher_ckpt!r}')

    # ------------------------------------------------------------------
    # forward
    def run_teacher(self, inputs: torch.Tensor,
                    data_samples: Optional[list]) -> None:
        """Forward the teacher, without grad, until every recorded layer
        has run."""

        precision = self.teacher_precision

        def forward() -> None:
            x = precision.inputs(self._teacher_inputs(inputs))
            with torch.no_grad(), precision.context(inputs.device.type):
                self._forward_for_records(self.teacher, x, data_samples,
                                          self.records.teacher.paths)

        self.records.teacher.run_until_complete(forward)
        if precision.casts_records:
            self.records.teacher.map_records(to_float32)

    def loss(self, inputs: torch.Tensor,
             data_samples: Optional[list] = None) -> Dict[str, torch.Tensor]:
        """Student task losses (unchanged) plus every term's losses.

        Args:
            inputs: Preprocessed batch, (N, 3, H, W).
            data_samples: The batch's data samples (with ground truth).

        Returns:
            Dict of losses; distillation terms are ``loss_kd_<name>`` or
            ``loss_kd_<name>_<suffix>`` (e.g. ``_l<i>`` per level).
        """
        distill = self.distill_enabled and len(self.distill_terms) > 0
        self.records.clear()
        if distill:
            with self._timed('teacher'):
                self.run_teacher(inputs, data_samples)
        losses = dict(self.student.loss(inputs, data_samples))
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
