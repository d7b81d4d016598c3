"""One distillation term: student layer, teacher layer, connector, loss."""
import difflib
import inspect
import typing
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from visionkd.registry import MODELS

__all__ = ['DistillTerm', 'build_registered']

_TERM_KEYS = ('student', 'teacher', 'loss', 'connector', 'weight',
              'level_weights', 'levels', 'record')


def check_head_term_cfg(name: str, cfg: dict, allowed: Sequence[str],
                        mode: str) -> None:
    """Validate a head-level term entry (``mode='roi'`` / ``'ld'``).

    Raises:
        KeyError: naming the term and the unknown or missing key.
    """
    unknown = [k for k in cfg if k not in allowed]
    if unknown:
        raise KeyError(f'distill term {name!r}: unknown key(s) {unknown}; '
                       f"allowed keys with mode='{mode}': {list(allowed)}")
    for key in ('student', 'teacher', 'loss'):
        if key not in cfg:
            raise KeyError(f'distill term {name!r} needs `{key}`')


def build_registered(cfg: dict, what: str, **defaults) -> nn.Module:
    """Build ``cfg`` from the visionkd registry with clear errors.

    Args:
        cfg: Config dict with ``type``.
        what: Description used in error messages (e.g. "loss of term 'fpn'").
        **defaults: Arguments filled in only if the class accepts them and
            the config does not set them (channel counts read off layers).
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'{what} must be a dict with a `type`, got {cfg!r}')
    cfg = dict(cfg)
    obj_type = cfg.pop('type')
    cls = obj_type if inspect.isclass(obj_type) else MODELS.get(obj_type)
    if cls is None:
        names = sorted(MODELS.module_dict)
        close = difflib.get_close_matches(
            str(obj_type).split('.')[-1], names, n=5, cutoff=0.4)
        raise KeyError(f'{what}: unknown type {obj_type!r} in the visionkd '
                       f'registry. Close names: {close or names}')
    params = inspect.signature(cls.__init__).parameters
    for key, value in defaults.items():
        if key in params and key not in cfg and value is not None:
            cfg[key] = value
    check_arg_types(cls, cfg, what)
    try:
        return cls(**cfg)
    except (TypeError, ValueError) as e:
        raise type(e)(f'{what} ({cls.__name__}) could not be built from '
                      f'{cfg}: {e}') from e


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a simple type hint (unknown hints: True)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (
            list, tuple):
        return isinstance(value, (list, tuple))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True


def check_arg_types(cls: type, cfg: dict, what: str) -> None:
    """Raise ``TypeError`` for an argument that contradicts its hint.

    Catches e.g. ``tau='2'`` or ``gather='no'`` at build time instead of a
    silent conversion or an error deep inside the first iteration.
    """
    params = inspect.signature(cls.__init__).parameters
    if any(k not in params for k in cfg):
        return  # the constructor reports the unexpected argument itself
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: nothing to check
        return
    for key, value in cfg.items():
        hint = hints.get(key)
        if hint is not None and not _type_ok(value, hint):
            name = getattr(hint, '__name__', None) or str(hint).replace(
                'typing.', '')
            raise TypeError(
                f'{what} ({cls.__name__}): argument {key}={value!r} has '
                f'type {type(value).__name__}, expected {name}; fix the '
                f'value in the config (see the {cls.__name__} docstring)')


def _forward_params(module: nn.Module) -> List[str]:
    return list(inspect.signature(module.forward).parameters)


class DistillTerm(nn.Module):
    """A declared distillation term and its per-level connectors and losses.

    The entry of a distiller's ``distill_terms`` looks like::

        fpn=dict(student='neck', teacher='neck',        # module paths
                 record='output',                       # or 'input'
                 connector=dict(type='ConvConnector'),  # optional
                 loss=dict(type='PKDLoss', loss_weight=6.0),
                 weight=1.0,                            # optional
                 levels=[0, 1, 2, 3],                   # optional subset
                 level_weights=[1, 1, 1, 1])            # optional

    A layer returning a tuple (FPN levels) or called once per level gives one
    connector and one loss instance per level, so per-level parameters (e.g.
    FGD's GcBlocks) stay separate. ``levels`` keeps a subset of them (e.g.
    P2-P5 of a five-level FPN); ``level_weights`` then has one entry per
    kept level. Connectors and losses are built by
    :meth:`build_levels` once the layers' shapes are known.

    Args:
        name: Term name; logged as ``loss_kd_<name>[_l<i>]``.
        cfg: The entry (see above).
    """

    def __init__(self, name: str, cfg: dict) -> None:
        super().__init__()
        if not isinstance(cfg, dict):
            raise TypeError(f'distill term {name!r} must be a dict, got '
                            f'{type(cfg).__name__}')
        unknown = [k for k in cfg if k not in _TERM_KEYS]
        if unknown:
            raise KeyError(f'distill term {name!r}: unknown key(s) {unknown};'
                           f' allowed keys: {list(_TERM_KEYS)}')
        for key in ('student', 'teacher', 'loss'):
            if key not in cfg:
                raise KeyError(f'distill term {name!r} needs `{key}`')
        for key in ('student', 'teacher'):
            if not isinstance(cfg[key], str):
                raise TypeError(f'distill term {name!r}: `{key}` must be a '
                                f'module path string, got {cfg[key]!r}')
        self.name = name
        self.student_path: str = cfg['student']
        self.teacher_path: str = cfg['teacher']
        self.record: str = cfg.get('record', 'output')
        if self.record not in ('output', 'input'):
            raise ValueError(f"distill term {name!r}: record must be "
                             f"'output' or 'input', got {self.record!r}")
        weight = cfg.get('weight', 1.0)
        if not isinstance(weight, (int, float)):
            raise TypeError(f'distill term {name!r}: weight must be a number,'
                            f' got {weight!r}')
        self.weight = float(weight)
        self.level_weights: Optional[List[float]] = cfg.get('level_weights')
        levels = cfg.get('levels')
        if levels is not None and (
                not isinstance(levels, (list, tuple)) or not levels
                or not all(isinstance(i, int) for i in levels)):
            raise TypeError(f'distill term {name!r}: levels must be a '
                            f'non-empty list of level indices, got {levels!r}')
        self.levels: Optional[List[int]] = (
            list(levels) if levels is not None else None)
        #: indices of the recorded levels this term uses (set at build)
        self.level_ids: List[int] = []
        self.loss_cfg: dict = cfg['loss']
        connector = cfg.get('connector')
        if connector is not None and not isinstance(connector, (list, tuple)):
            connector = [connector]
        self.connector_cfgs: List[dict] = list(connector or [])
        # Fail fast on unknown types, before any model is built.
        for cfg_ in [self.loss_cfg] + self.connector_cfgs:
            t = cfg_.get('type') if isinstance(cfg_, dict) else None
            if isinstance(t, str) and MODELS.get(t) is None:
                build_registered(cfg_, f'distill term {name!r}')
        self.connectors = nn.ModuleList()
        self.losses = nn.ModuleList()
        self.num_levels = 0
        #: Multiplier of ``weight`` set by schedule hooks (not saved: the
        #: hooks recompute it from the iteration, so resuming is exact).
        self.scale = 1.0

    # ------------------------------------------------------------------
    @property
    def student_key(self) -> tuple:
        """``(path, record)`` of what this term records on the student."""
        return (self.student_path, self.record)

    @property
    def teacher_key(self) -> tuple:
        """``(path, record)`` of what this term records on the teacher."""
        return (self.teacher_path, self.record)

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        """Called with both models before the recorders are built."""

    def build_levels(self, student_levels: Sequence[torch.Tensor],
                     teacher_levels: Sequence[torch.Tensor],
                     has_data_samples: bool,
                     gt_field: Optional[str] = None) -> None:
        """Build connectors/losses for the recorded levels and validate.

        Args:
            student_levels: Student tensors of a dry-run forward, per level.
            teacher_levels: Teacher tensors of the same dry run, per level.
            has_data_samples: Whether the model passes ``data_samples``.
            gt_field: Ground-truth field the model's data samples carry
                (``'gt_instances'`` for detectors, ``'gt_sem_seg'`` for
                segmentors); None skips the check.
        """
        n_s, n_t = len(student_levels), len(teacher_levels)
        if n_s != n_t:
            raise ValueError(
                f'distill term {self.name!r}: student layer '
                f'{self.student_path!r} gives {n_s} level(s) but teacher '
                f'layer {self.teacher_path!r} gives {n_t}; record layers '
                f'with the same number of levels (e.g. both FPNs)')
        if n_s == 0:
            raise ValueError(f'distill term {self.name!r}: nothing recorded')
        ids = list(range(n_s)) if self.levels is None else self.levels
        bad = [i for i in ids if not -n_s <= i < n_s]
        if bad:
            raise ValueError(f'distill term {self.name!r}: levels {bad} out '
                             f'of range for {n_s} recorded level(s)')
        self.level_ids = [i % n_s for i in ids]
        student_levels = [student_levels[i] for i in self.level_ids]
        teacher_levels = [teacher_levels[i] for i in self.level_ids]
        n_s = len(self.level_ids)
        for side, levels in (('student', student_levels),
                             ('teacher', teacher_levels)):
            for t in levels:
                if not isinstance(t, torch.Tensor):
                    raise TypeError(
                        f'distill term {self.name!r}: the {side} layer '
                        f'records a {type(t).__name__}, not a tensor; '
                        f"record another layer or use record='input'")
        if self.level_weights is not None and len(self.level_weights) != n_s:
            raise ValueError(
                f'distill term {self.name!r}: level_weights has '
                f'{len(self.level_weights)} entries for {n_s} level(s)')
        self.num_levels = n_s
        for lvl, (s, t) in enumerate(zip(student_levels, teacher_levels)):
            where = f'distill term {self.name!r}'
            if n_s > 1:
                where += f' level {self.level_ids[lvl]}'
            chain = nn.ModuleList()
            cur = s
            for c_cfg in self.connector_cfgs:
                conn = build_registered(
                    c_cfg,
                    f'connector of {where}',
                    in_channels=cur.shape[1] if cur.dim() > 1 else None,
                    out_channels=t.shape[1] if t.dim() > 1 else None)
                chain.append(conn)
                was_training = conn.training
                conn.eval()
                with torch.no_grad():
                    cur = self._apply_connector(conn, cur, t)
                conn.train(was_training)
            loss = build_registered(
                self.loss_cfg,
                f'loss of {where}',
                student_channels=cur.shape[1] if cur.dim() > 1 else None,
                teacher_channels=t.shape[1] if t.dim() > 1 else None)
            self._check_shapes(loss, cur, t, where)
            self._check_inputs(loss, has_data_samples, where)
            self._check_gt_field(loss, gt_field, where)
            self.connectors.append(chain)
            self.losses.append(loss)

    def _check_shapes(self, loss: nn.Module, s: torch.Tensor,
                      t: torch.Tensor, where: str) -> None:
        s_shape, t_shape = tuple(s.shape), tuple(t.shape)
        if s_shape == t_shape:
            return
        spatial_ok = getattr(loss, 'allow_spatial_mismatch', False)
        channel_ok = getattr(loss, 'allow_channel_mismatch', False)
        same_rank = len(s_shape) == len(t_shape) and len(s_shape) >= 2
        ok = same_rank and s_shape[0] == t_shape[0]
        if ok and s_shape[1] != t_shape[1] and not channel_ok:
            ok = False
        if ok and s_shape[2:] != t_shape[2:] and not spatial_ok:
            ok = False
        if not ok:
            raise ValueError(
                f'{where}: student {self.student_path!r} has shape '
                f'{s_shape} after connectors but teacher '
                f'{self.teacher_path!r} has shape {t_shape}; add a connector '
                f"(dict(type='ConvConnector') for channels, "
                f"dict(type='ResizeConnector') for spatial size)")

    def _check_inputs(self, loss: nn.Module, has_data_samples: bool,
                      where: str) -> None:
        params = inspect.signature(loss.forward).parameters
        required = [
            n for n, p in params.items()
            if p.default is inspect.Parameter.empty and p.kind in (
                p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        extra = required[2:]
        if len(required) < 2 and not any(
                p.kind == p.VAR_POSITIONAL for p in params.values()):
            raise TypeError(f'{where}: {type(loss).__name__}.forward must '
                            f'take (preds_S, preds_T, ...)')
        unfeedable = [n for n in extra if n != 'data_samples']
        if unfeedable:
            raise TypeError(f'{where}: {type(loss).__name__}.forward needs '
                            f'{unfeedable}, which a distiller cannot feed '
                            f'(it gives preds_S, preds_T and data_samples)')
        if 'data_samples' in extra and not has_data_samples:
            raise TypeError(f'{where}: {type(loss).__name__} needs '
                            f'data_samples with ground truth, which this '
                            f'model does not provide')

    def _check_gt_field(self, loss: nn.Module, gt_field: Optional[str],
                        where: str) -> None:
        needed = getattr(loss, 'gt_field', None)
        if needed is None or gt_field is None or needed == gt_field:
            return
        raise TypeError(
            f'{where}: {type(loss).__name__} needs `{needed}` ground truth '
            f'in every data sample, but this distiller\'s models are trained '
            f'with `{gt_field}`; use a loss for this task (see the README '
            f'table of losses)')

    def _check_batch_gt(self, loss: nn.Module,
                        data_samples: Optional[list]) -> None:
        """Raise if the batch lacks the ground truth ``loss`` reads."""
        needed = getattr(loss, 'gt_field', None)
        if needed is None:
            return
        if data_samples is None or not all(
                hasattr(s, needed) for s in data_samples):
            raise ValueError(
                f'distill term {self.name!r}: {type(loss).__name__} needs '
                f'`{needed}` in every data sample but the batch has none; '
                f'load annotations in the train pipeline (LoadAnnotations) '
                f'and pass data_samples to the distiller')

    @staticmethod
    def _apply_connector(conn: nn.Module, s: torch.Tensor,
                         t: torch.Tensor) -> torch.Tensor:
        if 'target' in _forward_params(conn):
            return conn(s, target=t)
        return conn(s)

    def forward(self, student_levels: Sequence[torch.Tensor],
                teacher_levels: Sequence[torch.Tensor],
                data_samples: Optional[list] = None
                ) -> Dict[str, torch.Tensor]:
        """Weighted loss of every level, keyed ``loss_kd_<name>[_l<i>]``."""
        out = {}
        multi = len(student_levels) > 1
        for lvl, src in enumerate(self.level_ids):
            s = student_levels[src]
            t = teacher_levels[src].detach()
            for conn in self.connectors[lvl]:
                s = self._apply_connector(conn, s, t)
            loss_fn = self.losses[lvl]
            if self._wants_samples[lvl]:
                self._check_batch_gt(loss_fn, data_samples)
            value = self._loss_fp32(loss_fn, s, t, data_samples,
                                    self._wants_samples[lvl])
            w = self.weight * self.scale
            if self.level_weights is not None:
                w = w * float(self.level_weights[lvl])
            key = f'loss_kd_{self.name}'
            if multi:
                key += f'_l{src}'
            out[key] = value * w
        return out

    @staticmethod
    def _loss_fp32(loss_fn: nn.Module, s: torch.Tensor, t: torch.Tensor,
                   data_samples: Optional[list],
                   wants_samples: bool) -> torch.Tensor:
        """Run a loss in float32, outside any autocast region.

        Under mixed precision (``--amp``) the connectors run in half
        precision with the model, but softmax/log/KL, normalisations and
        large sums of the losses need float32: the inputs are cast up and
        autocast is switched off for the loss only.
        """
        device = s.device.type
        if not torch.is_autocast_enabled(device):
            return (loss_fn(s, t, data_samples) if wants_samples else
                    loss_fn(s, t))
        with torch.autocast(device_type=device, enabled=False):
            s32, t32 = s.float(), t.float()
            return (loss_fn(s32, t32, data_samples) if wants_samples else
                    loss_fn(s32, t32))

    @property
    def _wants_samples(self) -> List[bool]:
        cache = self.__dict__.get('_wants_samples_cache')
        if cache is None or len(cache) != len(self.losses):
            cache = ['data_samples' in _forward_params(m) for m in self.losses]
            self.__dict__['_wants_samples_cache'] = cache
        return cache

    def extra_repr(self) -> str:
        return (f'name={self.name!r}, student={self.student_path!r}, '
                f'teacher={self.teacher_path!r}, record={self.record!r}, '
                f'weight={self.weight}, levels={self.level_ids}')
