"""Distiller core shared by detection and segmentation."""
import difflib
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel, revert_sync_batchnorm
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.runner import load_checkpoint

from visionkd.models.recorders import MethodRecorder, ModuleRecorder
from visionkd.utils import resolve_model_cfg

from .distill_term import DistillTerm

__all__ = ['BaseDistiller']

ForwardResults = Union[Dict[str, torch.Tensor], list, tuple, torch.Tensor]


class _TeacherDone(Exception):
    """Raised by a teacher hook once every recorded layer has run."""


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
            for tests and smoke runs (a warning is logged).
        distill_terms: ``{name: term}``; see :class:`DistillTerm`.
        dry_run_input_size: (H, W) of the zero image used at build time to
            read the recorded layers' shapes and validate the terms.
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
    #: Ground-truth field of the task's data samples (checked against the
    #: ``gt_field`` of ground-truth-driven losses).
    gt_field: Optional[str] = None

    def __init__(self,
                 student: Union[str, dict],
                 teacher: Union[str, dict],
                 teacher_ckpt: Optional[str] = None,
                 distill_terms: Optional[Dict[str, dict]] = None,
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
        # The teacher only runs in eval mode: SyncBN there is plain BN, and
        # reverting it lets the teacher run without a process group.
        teacher_model = revert_sync_batchnorm(ROOT_MODELS.build(teacher_cfg))
        self._check_task(self.student, 'student')
        self._check_task(teacher_model, 'teacher')
        # Not a child module on purpose (see class docstring).
        object.__setattr__(self, 'teacher', teacher_model)
        self.teacher_ckpt = teacher_ckpt
        self._teacher_loaded = False
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        if teacher_ckpt is None:
            MMLogger.get_current_instance().warning(
                'teacher_ckpt is None: the teacher keeps its initial weights')

        terms = distill_terms or {}
        if not isinstance(terms, dict):
            raise TypeError('distill_terms must be a dict {name: term}')
        self.distill_terms = nn.ModuleDict(
            {name: self._build_term(name, cfg)
             for name, cfg in terms.items()})
        for term in self.distill_terms.values():
            term.bind(self.student, self.teacher)
        self.dry_run_input_size = tuple(dry_run_input_size)
        #: Set False (e.g. by DistillStopHook) to train the student alone.
        self.distill_enabled = True
        self.check_finite = bool(check_finite)
        self._early_stop = False
        self._build_recorders()
        self._build_teacher_input_transform()
        self._dry_run()
        # Load the teacher last so configuration errors come first. The
        # runner's init_weights() never reaches the teacher (not a child).
        self.load_teacher()
        self.init_student = bool(init_student)
        self.init_student_skip = tuple(init_student_skip)
        if self.init_student:
            self.inherit_from_teacher()

    # ------------------------------------------------------------------
    # build-time helpers
    def _check_task(self, model: nn.Module, role: str) -> None:
        """Raise if ``model`` is not of the task this distiller handles."""

    def _build_term(self, name: str, cfg: dict) -> nn.Module:
        """Build one entry of ``distill_terms`` (subclasses add modes)."""
        return DistillTerm(name, cfg)

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

    @staticmethod
    def _find_module(model: nn.Module, path: str, role: str,
                     term: str) -> nn.Module:
        modules = dict(model.named_modules())
        if path in modules and path != '':
            return modules[path]
        names = [n for n in modules if n]
        close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
        if not close:
            head = path.split('.')[0]
            close = [n for n in names if n.split('.')[0] == head][:5] or \
                [n for n in names if '.' not in n]
        raise ValueError(
            f'distill term {term!r}: {role} layer {path!r} does not exist in '
            f'the {role} ({type(model).__name__}). Nearest names: {close}; '
            f'fix the module path (all paths: '
            f'[n for n, _ in model.{role}.named_modules()])')

    def _build_recorders(self) -> None:
        self._student_rec: Dict[Tuple[str, str], ModuleRecorder] = {}
        self._teacher_rec: Dict[Tuple[str, str], ModuleRecorder] = {}
        for term in self.distill_terms.values():
            key_s, key_t = term.student_key, term.teacher_key
            if key_s not in self._student_rec:
                mod = self._find_module(self.student, key_s[0], 'student',
                                        term.name)
                self._student_rec[key_s] = self._make_recorder(mod, *key_s)
            if key_t not in self._teacher_rec:
                mod = self._find_module(self.teacher, key_t[0], 'teacher',
                                        term.name)
                self._teacher_rec[key_t] = self._make_recorder(
                    mod, *key_t, on_record=self._on_teacher_record)
        self._teacher_calls: Dict[Tuple[str, str], int] = {}
        self._teacher_paths = [k[0] for k in self._teacher_rec]

    @staticmethod
    def _make_recorder(module: nn.Module, path: str, record: str,
                       on_record=None):
        """A forward-hook recorder, or a method recorder for ``call:<m>``."""
        if record.startswith('call:'):
            return MethodRecorder(module, path, record[len('call:'):],
                                  on_record=on_record)
        return ModuleRecorder(module, path, record, on_record=on_record)

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
        flip = bool(getattr(dp_s, '_channel_conversion', False)) != bool(
            getattr(dp_t, '_channel_conversion', False))
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

    def _dry_run(self) -> None:
        """Run both models once on a zero image to validate every term."""
        if not self.distill_terms:
            return
        h, w = self.dry_run_input_size
        inputs = torch.zeros(1, 3, h, w)
        samples = self._dummy_data_samples(h, w)
        was_training = self.student.training
        self.student.eval()
        self._clear_records()
        with torch.no_grad():
            self._forward_for_records(self.student, inputs, samples,
                                      [k[0] for k in self._student_rec])
            self._forward_for_records(self.teacher,
                                      self._teacher_inputs(inputs), samples,
                                      [k[0] for k in self._teacher_rec])
        self.student.train(was_training)
        for key, rec in self._teacher_rec.items():
            if not rec.data:
                raise ValueError(
                    f'teacher layer {key[0]!r} did not run in the teacher '
                    f'forward (no loss is computed for the teacher); record '
                    f'a layer that does')
            self._teacher_calls[key] = len(rec.data)
        for term in self.distill_terms.values():
            s_rec = self._student_rec[term.student_key]
            if not s_rec.data and getattr(term, 'student_runs_in_tensor_mode',
                                          True):
                raise ValueError(
                    f'distill term {term.name!r}: student layer '
                    f'{term.student_path!r} did not run in the student '
                    f'forward; record a layer that does')
            term.build_levels(
                s_rec.levels(),
                self._teacher_rec[term.teacher_key].levels(),
                has_data_samples=samples is not None,
                gt_field=self.gt_field)
        self._clear_records()

    def load_teacher(self) -> None:
        """Load ``teacher_ckpt`` into the teacher (idempotent)."""
        if self.teacher_ckpt is None or self._teacher_loaded:
            return
        path = self.teacher_ckpt
        try:
            ckpt = load_checkpoint(
                self.teacher, path, map_location='cpu', strict=False,
                logger='silent')
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'teacher_ckpt {path!r} does not exist: give the path or URL '
                f'of the teacher checkpoint') from e
        except Exception as e:
            raise ValueError(f'teacher_ckpt {path!r} could not be loaded as '
                             f'a checkpoint: {e}; give the teacher\'s .pth '
                             f'checkpoint (path or URL)') from e
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
        own = set(self.teacher.state_dict())
        if not own.intersection(state):
            raise ValueError(
                f'teacher_ckpt {path!r} holds no weight of the teacher '
                f'({type(self.teacher).__name__}); is it the right file?')
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
    def _clear_records(self) -> None:
        for rec in self._student_rec.values():
            rec.clear()
        for rec in self._teacher_rec.values():
            rec.clear()

    def _on_teacher_record(self) -> None:
        if not self._early_stop:
            return
        for key, rec in self._teacher_rec.items():
            if len(rec.data) < self._teacher_calls[key]:
                return
        raise _TeacherDone

    def run_teacher(self, inputs: torch.Tensor,
                    data_samples: Optional[list]) -> None:
        """Forward the teacher until every recorded layer has run."""
        self._early_stop = True
        try:
            with torch.no_grad():
                self._forward_for_records(
                    self.teacher, self._teacher_inputs(inputs), data_samples,
                    self._teacher_paths)
        except _TeacherDone:
            pass
        finally:
            self._early_stop = False

    def loss(self, inputs: torch.Tensor,
             data_samples: Optional[list] = None) -> Dict[str, torch.Tensor]:
        """Student task losses (unchanged) plus one key per term and level.

        Args:
            inputs: Preprocessed batch, (N, 3, H, W).
            data_samples: The batch's data samples (with ground truth).

        Returns:
            Dict of losses; distillation terms are ``loss_kd_<name>`` or
            ``loss_kd_<name>_l<i>`` for multi-level layers.
        """
        self._clear_records()
        distill = self.distill_enabled and len(self.distill_terms) > 0
        if distill:
            self.run_teacher(inputs, data_samples)
        losses = dict(self.student.loss(inputs, data_samples))
        if distill:
            for term in self.distill_terms.values():
                s_levels = self._student_rec[term.student_key].levels()
                t_levels = self._teacher_rec[term.teacher_key].levels()
                for key, value in term(s_levels, t_levels,
                                       data_samples).items():
                    if key in losses:
                        raise KeyError(f'distill loss key {key!r} clashes '
                                       f'with a student loss')
                    losses[key] = value
            if self.check_finite:
                self._check_finite(losses)
        self._clear_records()
        return losses

    def _check_finite(self, losses: Dict[str, torch.Tensor]) -> None:
        """Raise ``FloatingPointError`` if a distillation term is NaN/Inf.

        Called in ``loss`` mode, i.e. before backward and the optimizer
        step: the weights are still those of the previous iteration and the
        checkpoints on disk are untouched.
        """
        keys = [k for k in losses if k.startswith('loss_kd_')]
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
        terms = sorted({
            t.name for t in self.distill_terms.values()
            for k, _ in bad
            if k == f'loss_kd_{t.name}' or k.startswith(f'loss_kd_{t.name}_l')
        })
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
        self._clear_records()
        return out

    def _forward(self,
                 inputs: torch.Tensor,
                 data_samples: Optional[list] = None) -> ForwardResults:
        """Raw outputs of the student."""
        out = self.student(inputs, data_samples, mode='tensor')
        self._clear_records()
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

    def student_state_dict(self) -> Dict[str, torch.Tensor]:
        """The student's own state dict (what the export tool saves)."""
        return self.student.state_dict()
