"""The contract every distillation term mode implements."""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from visionkd.models.recorders import DistillRecords, RecordKey
from visionkd.registry import MODELS

from ..teacher_fusion import TermSource, fuse_levels
from .build_utils import build_registered

__all__ = ['BaseDistillTerm', 'TermContext', 'TermLayers']


@dataclass(frozen=True)
class TermLayers:
    """What a term records: ``(module path, record)`` on each model."""

    student: RecordKey
    teacher: RecordKey


@dataclass(frozen=True)
class TermContext:
    """What a term is built from: both models and a dry run's records.

    Attributes:
        layers: The term's recorded layers (from :meth:`~BaseDistillTerm.
            recorded_layers`).
        student: The student model.
        teacher: The teacher model (frozen; never a child of a term).
        student_levels: What ``layers.student`` recorded in the distiller's
            build-time dry run (``tensor`` mode; empty for calls that only
            happen in ``loss`` mode).
        teacher_levels: What ``layers.teacher`` recorded in the dry run.
        has_data_samples: Whether the model passes ``data_samples``.
        gt_field: Ground-truth field of the task's data samples
            (``'gt_instances'``, ``'gt_sem_seg'``); None skips the check.
        source: Which models the term reads (its teacher, several fused
            ones, or the student for a term that trains an online
            teacher); ``student``/``teacher`` above are the learner and the
            (first) target model.
        teacher_scale: The target teacher's input scale (1.0: it sees the
            student's batch); modes that compare maps in image
            coordinates support only 1.0 (:attr:`BaseDistillTerm.
            supports_teacher_scale`).
    """

    layers: TermLayers
    student: nn.Module
    teacher: nn.Module
    student_levels: List[Any]
    teacher_levels: List[Any]
    has_data_samples: bool = True
    gt_field: Optional[str] = None
    source: TermSource = TermSource()
    teacher_scale: float = 1.0


def detach_all(obj: Any) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) detached."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        return {k: detach_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(detach_all(v) for v in obj)
    return obj


def to_float32(obj: Any) -> Any:
    """``obj`` with every floating tensor inside cast to float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: to_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_float32(v) for v in obj)
    return obj


def _first_tensor(obj: Any) -> Optional[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return obj
    values = obj.values() if isinstance(obj, dict) else (
        obj if isinstance(obj, (list, tuple)) else ())
    for v in values:
        found = _first_tensor(v)
        if found is not None:
            return found
    return None


class BaseDistillTerm(nn.Module):
    """One entry of a distiller's ``distill_terms``, of some ``mode``.

    The base owns what every mode shares, so that a mode implements only
    :meth:`compute` (and, if it records something else than the outputs of
    ``student``/``teacher``, :meth:`recorded_layers`), as mmdet's
    ``BaseDenseHead.loss`` calls a subclass's ``loss_by_feat``:

    * config validation (:meth:`check_cfg`) with the term's name and the
      offending key in every message;
    * name, module paths, ``weight`` times the schedule hooks' ``scale``;
    * the loss keys ``loss_kd_<name>[_<suffix>]`` (:meth:`loss_key`) and
      :meth:`owns`, which the distiller's finite check asks;
    * the one place where teacher records are detached (:meth:`forward`)
      and losses run in float32 outside autocast (:meth:`run_loss`).

    A term is complete once constructed: the distiller first runs both
    models on a dry-run batch, then builds each term from a
    :class:`TermContext` (the models and what the term's layers recorded).

    A new mode is one file with a subclass registered in
    :data:`visionkd.registry.TERM_MODES` under its mode name (see
    docs/add_a_term_mode.md); the distillers need no edit.

    Args:
        name: Term name; its losses are logged as ``loss_kd_<name>...``.
        cfg: The entry (keys: :attr:`cfg_keys`).
        ctx: Models and dry-run records.
    """

    #: The ``mode`` this class is registered under (set by subclasses).
    mode: str = ''
    #: Keys an entry of this mode may have.
    cfg_keys: Tuple[str, ...] = ('mode', 'student', 'teacher', 'loss',
                                 'weight')
    #: Keys an entry of this mode must have.
    required_keys: Tuple[str, ...] = ('student', 'teacher', 'loss')
    #: Keys holding registry configs, checked for unknown types up front.
    type_keys: Tuple[str, ...] = ('loss', )
    #: Distiller tasks (``BaseDistiller.task``) this mode works with.
    tasks: Tuple[str, ...] = ('detection', 'segmentation')
    #: Whether the mode works with a teacher at another input scale
    #: (``teacher_input=dict(scale_factor=...)``); head-level modes that
    #: feed student RoIs or features to the teacher's head do not.
    supports_teacher_scale: bool = False
    #: Whether the mode works with a teacher that trains (online, or the
    #: learner of a ``direction='student_to_teacher'`` term): modes that
    #: need the teacher in eval mode (DETR's denoising queries) do not.
    supports_trainable_teacher: bool = True
    #: Whether several teachers' records can be fused for this mode
    #: (``from_teacher=('a', 'b')``): tensors of equal shapes.
    supports_fusion: bool = False

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__()
        self.check_cfg(name, cfg)
        self.name = name
        self.student_path: str = cfg['student']
        self.teacher_path: str = cfg['teacher']
        self.student_key: RecordKey = ctx.layers.student
        self.teacher_key: RecordKey = ctx.layers.teacher
        #: The models the two sides are read from.
        self.source: TermSource = ctx.source
        self.weight = float(cfg.get('weight', 1.0))
        #: Multiplier of ``weight`` set by schedule hooks (not saved: the
        #: hooks recompute it from the iteration, so resuming is exact).
        self.scale = 1.0
        #: Levels (FPN levels, head calls) this term distils; modes with
        #: several set it.
        self.num_levels = 1
        #: Suffix -> extra factor of that key's weight (e.g. level weights).
        self.key_weights: Dict[str, float] = {}
        self._keys: Dict[str, str] = {}

    # ------------------------------------------------------------------
    # configuration (class level: runs before any model is recorded)
    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> None:
        """Validate an entry of this mode.

        Raises:
            KeyError: an unknown or missing key, or an unknown type.
            TypeError: a key of the wrong type.
        """
        unknown = [k for k in cfg if k not in cls.cfg_keys]
        if unknown:
            raise KeyError(
                f'distill term {name!r}: unknown key(s) {unknown}; allowed '
                f"keys with mode='{cls.mode}': {list(cls.cfg_keys)}")
        for key in cls.required_keys:
            if key not in cfg:
                raise KeyError(f'distill term {name!r} needs `{key}`')
        for key in ('student', 'teacher'):
            if not isinstance(cfg[key], str):
                raise TypeError(f'distill term {name!r}: `{key}` must be a '
                                f'module path string, got {cfg[key]!r}')
        weight = cfg.get('weight', 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise TypeError(f'distill term {name!r}: weight must be a number,'
                            f' got {weight!r}')
        for key in cls.type_keys:
            value = cfg.get(key)
            for sub in (value if isinstance(value, (list, tuple)) else
                        [value]):
                t = sub.get('type') if isinstance(sub, dict) else None
                if isinstance(t, str) and MODELS.get(t) is None:
                    build_registered(sub, f'distill term {name!r}')

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """What to record for an entry (default: both layers' outputs).

        Modes that record something else, or that need to check the models
        first (e.g. that a layer is an RoI head), override this.
        """
        cls.check_cfg(name, cfg)
        return TermLayers(student=(cfg['student'], 'output'),
                          teacher=(cfg['teacher'], 'output'))

    # ------------------------------------------------------------------
    # loss keys
    def set_key_suffixes(self, suffixes: List[str]) -> None:
        """Declare the suffixes :meth:`compute` returns (once, at build)."""
        self._keys = {s: f'loss_kd_{self.name}' + (f'_{s}' if s else '')
                      for s in suffixes}

    def loss_key(self, suffix: str) -> str:
        """``loss_kd_<name>`` or ``loss_kd_<name>_<suffix>``."""
        return self._keys[suffix]

    @property
    def loss_keys(self) -> List[str]:
        """Every key this term logs."""
        return list(self._keys.values())

    def owns(self, key: str) -> bool:
        """Whether ``key`` is one of this term's losses."""
        return key in self._keys.values()

    # ------------------------------------------------------------------
    # per step
    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """The mode's losses, unweighted, keyed by suffix.

        Args:
            student: What the student layer recorded, per level.
            teacher: What the teacher layer recorded, per level, detached.
            data_samples: The batch's data samples.

        Returns:
            ``{suffix: loss}`` with the suffixes of
            :meth:`set_key_suffixes`.
        """
        raise NotImplementedError

    def forward(self, records: DistillRecords,
                data_samples: Optional[list] = None
                ) -> Dict[str, torch.Tensor]:
        """This term's weighted losses, keyed ``loss_kd_<name>[_<sfx>]``."""
        src = self.source
        student = records.of(src.learner).levels(self.student_key)
        teacher = fuse_levels(
            [detach_all(records.of(n).levels(self.teacher_key))
             for n in src.targets], src)
        values = self.compute(student, teacher, data_samples)
        out = {}
        for suffix, value in values.items():
            w = self.weight * self.scale
            if suffix in self.key_weights:
                w = w * self.key_weights[suffix]
            out[self.loss_key(suffix)] = value * w
        return out

    @staticmethod
    def run_loss(loss_fn: Callable, *args, **kwargs) -> Any:
        """Call ``loss_fn`` in float32 outside autocast (under ``--amp``).

        Under mixed precision the connectors run in half precision with the
        model, but softmax/log/KL, normalisations and large sums need
        float32: floating tensors in the arguments (also inside dicts and
        lists) are cast up and autocast is off for the loss only. Without
        autocast the loss gets its inputs as they are (and keeps their
        dtype).
        """
        first = _first_tensor((args, kwargs))
        device = first.device.type if first is not None else 'cpu'
        if not torch.is_autocast_enabled(device):
            return loss_fn(*args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return loss_fn(*to_float32(args), **to_float32(kwargs))

    def extra_repr(self) -> str:
        return (f'name={self.name!r}, mode={self.mode}, '
                f'student={self.student_path!r}, '
                f'teacher={self.teacher_path!r}, weight={self.weight}')
