"""Feature/logit term: student layer, teacher layer, connectors, loss."""
import inspect
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn

from visionkd.models.connectors.inference import infer_connectors
from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered

__all__ = ['FeatureDistillTerm']


def _forward_params(module: nn.Module) -> List[str]:
    return list(inspect.signature(module.forward).parameters)


def apply_connector(conn: nn.Module, s: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
    """Run a connector (with the teacher tensor if it takes a target)."""
    if 'target' in _forward_params(conn):
        return conn(s, target=t)
    return conn(s)


def _settings(module: nn.Module) -> dict:
    """A module's public attributes (a loss's hyper-parameters)."""
    return {k: v for k, v in vars(module).items() if not k.startswith('_')}


def _called_as_is(module: nn.Module) -> bool:
    """Whether calling ``module`` is just its class's ``forward``: no
    forward (pre-)hooks, no ``forward`` replaced on the instance (as
    ``compile_losses`` does)."""
    hooks = (module._forward_hooks, module._forward_pre_hooks,
             nn.modules.module._global_forward_hooks,
             nn.modules.module._global_forward_pre_hooks)
    return 'forward' not in vars(module) and not any(hooks)


def _as_list(cfg) -> List[dict]:
    if cfg is None:
        return []
    return list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]


@TERM_MODES.register_module(name='feature')
class FeatureDistillTerm(BaseDistillTerm):
    """The default mode: a loss between two recorded layers, per level.

    The entry of a distiller's ``distill_terms`` looks like::

        fpn=dict(student='neck', teacher='neck',        # module paths
                 record='output',                       # or 'input'
                 connector=dict(type='ConvConnector'),  # optional
                 teacher_connector=dict(type='NormConnector'),  # optional
                 loss=dict(type='PKDLoss', loss_weight=6.0),
                 weight=1.0,                            # optional
                 levels=[0, 1, 2, 3],                   # optional subset
                 level_weights=[1, 1, 1, 1])            # optional

    A layer returning a tuple (FPN levels) or called once per level gives one
    connector and one loss instance per level, so per-level parameters (e.g.
    FGD's GcBlocks) stay separate; the keys are ``loss_kd_<name>_l<i>``.
    A parameter-free loss with the same math on every level (PKD, CWD, AT,
    FitNets MSE) can run once on all levels instead, with the same
    per-level values and far fewer operator calls (kernel launches); see
    :attr:`batch_levels` and :meth:`one_call_for_all_levels`.
    ``levels`` keeps a subset of them (e.g. P2-P5 of a five-level FPN);
    ``level_weights`` then has one entry per kept level; with ``levels``
    the two layers may record different numbers of levels (e.g. a
    five-level RetinaNet FPN teacher and a three-level RTMDet student,
    ``levels=[0, 1, 2]``). Connectors and losses are built from the dry
    run's shapes (channels inferred), and the shapes after the connectors
    are checked against the loss. ``teacher_connector`` (optional, a dict
    or a list) runs parameter-free modules on the teacher's map, without
    grad, before the loss (e.g. the RTMDet recipe's BatchNorm without
    affine on both maps); it is never trained, so a module with parameters
    or buffers is rejected.

    Args:
        name: Term name.
        cfg: The entry (see above).
        ctx: Models and dry-run records.
    """

    mode = 'feature'
    supports_teacher_scale = True
    supports_fusion = True
    #: When a loss that can (``batches_levels``) runs once on all levels:
    #: ``'auto'`` on accelerators (a GPU: fewer kernel launches), per level
    #: on the CPU (there the per-level kernels are faster, see
    #: :mod:`visionkd.models.losses.level_batch`); ``True`` always;
    #: ``False`` never. Set on the class or a term instance.
    batch_levels: Union[str, bool] = 'auto'
    cfg_keys = ('mode', 'student', 'teacher', 'loss', 'connector',
                'teacher_connector', 'weight', 'level_weights', 'levels',
                'record')
    type_keys = ('loss', 'connector', 'teacher_connector')

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        self.record: str = cfg.get('record', 'output')
        self.level_weights: Optional[List[float]] = cfg.get('level_weights')
        self.loss_cfg: dict = cfg['loss']
        self.connector_cfgs = _as_list(cfg.get('connector'))
        self.teacher_connector_cfgs = _as_list(cfg.get('teacher_connector'))
        s_levels, t_levels = self._select_levels(ctx, cfg.get('levels'))
        # tokens <-> maps, class logits of other strides (see the module)
        self.connector_cfgs, self.teacher_connector_cfgs = infer_connectors(
            self, ctx, s_levels, t_levels)
        self.num_levels = len(self.level_ids)
        self.connectors = nn.ModuleList()
        #: parameter-free, so never in the state dict
        self.teacher_connectors = nn.ModuleList()
        self.losses = nn.ModuleList()
        for lvl, (s, t) in enumerate(zip(s_levels, t_levels)):
            where = f'distill term {self.name!r}'
            if self.num_levels > 1:
                where += f' level {self.level_ids[lvl]}'
            t_chain, t = self._build_teacher_chain(t, s, where)
            chain, loss = self._build_level(s, t, where, ctx)
            self.teacher_connectors.append(t_chain)
            self.connectors.append(chain)
            self.losses.append(loss)
        self._wants_samples = [
            'data_samples' in _forward_params(m) for m in self.losses]
        multi = len(ctx.student_levels) > 1
        suffixes = [f'l{src}' if multi else '' for src in self.level_ids]
        self.set_key_suffixes(suffixes)
        self._suffixes = suffixes
        if self.level_weights is not None:
            self.key_weights = {
                sfx: float(w) for sfx, w in zip(suffixes, self.level_weights)}

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> None:
        """The base checks plus ``record`` and ``levels``."""
        super().check_cfg(name, cfg)
        record = cfg.get('record', 'output')
        if record not in ('output', 'input'):
            raise ValueError(f"distill term {name!r}: record must be "
                             f"'output' or 'input', got {record!r}")
        levels = cfg.get('levels')
        if isinstance(levels, dict):
            if sorted(levels) != ['student', 'teacher'] or len(
                    levels['student']) != len(levels['teacher']):
                raise TypeError(
                    f'distill term {name!r}: levels as a dict pairs level '
                    f'indices of two layers of other strides, '
                    f'dict(student=[...], teacher=[...]) of equal length, '
                    f'got {levels!r}')
            sides = list(levels.values())
        else:
            sides = [levels]
        for ids in sides:
            if ids is not None and (
                    not isinstance(ids, (list, tuple)) or not ids
                    or not all(isinstance(i, int) for i in ids)):
                raise TypeError(
                    f'distill term {name!r}: levels must be a non-empty '
                    f'list of level indices (or dict(student=[...], '
                    f'teacher=[...])), got {levels!r}')

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        cls.check_cfg(name, cfg)
        record = cfg.get('record', 'output')
        return TermLayers(student=(cfg['student'], record),
                          teacher=(cfg['teacher'], record))

    # ------------------------------------------------------------------
    # build
    def _select_levels(self, ctx: TermContext, levels) -> tuple:
        """Check the recorded levels; keep those of ``levels`` (a list of
        indices on both layers, or ``dict(student=[...], teacher=[...])``
        pairing levels of other indices, e.g. P3-P6 of a P2-P6 FPN with
        P3-P6 of a P3-P7 one)."""
        student_levels, teacher_levels = ctx.student_levels, ctx.teacher_levels
        n_s, n_t = len(student_levels), len(teacher_levels)
        if n_s == 0:
            raise ValueError(
                f'distill term {self.name!r}: student layer '
                f'{self.student_path!r} did not run in the student '
                f'forward; record a layer that does')
        if n_s != n_t and levels is None:
            raise ValueError(
                f'distill term {self.name!r}: student layer '
                f'{self.student_path!r} gives {n_s} level(s) but teacher '
                f'layer {self.teacher_path!r} gives {n_t}; record layers '
                f'with the same number of levels (e.g. both FPNs) or keep '
                f'the matching ones with levels=[...]')
        if isinstance(levels, dict):
            s_ids, t_ids = list(levels['student']), list(levels['teacher'])
            bad = [i for i in s_ids if not 0 <= i < n_s] + [
                i for i in t_ids if not 0 <= i < n_t]
            where = f'{n_s} student / {n_t} teacher level(s)'
        else:
            n = min(n_s, n_t)
            ids = list(range(n_s)) if levels is None else list(levels)
            bad = [i for i in ids if not 0 <= i < n] if n_s != n_t else [
                i for i in ids if not -n_s <= i < n_s]
            s_ids = t_ids = [i % n_s for i in ids]
            where = f'{n} level(s) recorded on both models'
        if bad:
            raise ValueError(f'distill term {self.name!r}: levels {bad} out '
                             f'of range for {where}')
        #: indices of the recorded levels this term uses (student's)
        self.level_ids: List[int] = s_ids
        #: the teacher's level paired with each of :attr:`level_ids`
        self.teacher_level_ids: List[int] = t_ids
        s_levels = [student_levels[i] for i in s_ids]
        t_levels = [teacher_levels[i] for i in t_ids]
        for side, recorded in (('student', s_levels), ('teacher', t_levels)):
            for t in recorded:
                if not isinstance(t, torch.Tensor):
                    raise TypeError(
                        f'distill term {self.name!r}: the {side} layer '
                        f'records a {type(t).__name__}, not a tensor; '
                        f"record another layer or use record='input'")
        if self.level_weights is not None and len(
                self.level_weights) != len(self.level_ids):
            raise ValueError(
                f'distill term {self.name!r}: level_weights has '
                f'{len(self.level_weights)} entries for '
                f'{len(self.level_ids)} level(s)')
        return s_levels, t_levels

    def _build_teacher_chain(self, t: torch.Tensor, s: torch.Tensor,
                             where: str) -> tuple:
        """Parameter-free teacher connectors of one level, and their
        output on the dry-run map (``s``, the student's map, is the target
        of a connector that takes one, e.g. ``ResizeConnector``)."""
        chain = nn.ModuleList()
        channels = t.shape[1] if t.dim() > 1 else None
        for c_cfg in self.teacher_connector_cfgs:
            conn = build_registered(c_cfg, f'teacher_connector of {where}',
                                    in_channels=channels,
                                    out_channels=channels)
            if any(True for _ in conn.parameters()) or any(
                    True for _ in conn.buffers()):
                raise TypeError(
                    f'teacher_connector of {where} ({type(conn).__name__}) '
                    f'has parameters or buffers, but a teacher connector is '
                    f'never trained or saved; use a parameter-free module '
                    f"(e.g. dict(type='NormConnector'))")
            chain.append(conn)
            with torch.no_grad():
                t = apply_connector(conn, t, s)
        return chain, t

    def _build_level(self, s: torch.Tensor, t: torch.Tensor, where: str,
                     ctx: TermContext) -> tuple:
        """Connector chain and loss of one level, checked on dry-run data."""
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
                cur = apply_connector(conn, cur, t)
            conn.train(was_training)
        loss = build_registered(
            self.loss_cfg,
            f'loss of {where}',
            student_channels=cur.shape[1] if cur.dim() > 1 else None,
            teacher_channels=t.shape[1] if t.dim() > 1 else None)
        self._check_shapes(loss, cur, t, where)
        self._check_inputs(loss, ctx.has_data_samples, where)
        self._check_gt_field(loss, ctx.gt_field, where)
        return chain, loss

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

    @staticmethod
    def _check_inputs(loss: nn.Module, has_data_samples: bool,
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

    @staticmethod
    def _check_gt_field(loss: nn.Module, gt_field: Optional[str],
                        where: str) -> None:
        needed = getattr(loss, 'gt_field', None)
        if needed is None or gt_field is None or needed == gt_field:
            return
        raise TypeError(
            f'{where}: {type(loss).__name__} needs `{needed}` ground truth '
            f'in every data sample, but this distiller\'s models are trained '
            f'with `{gt_field}`; use a loss for this task (see the README '
            f'table of losses)')

    # ------------------------------------------------------------------
    # per step
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

    def _connect(self, lvl: int, student: list, teacher: list) -> tuple:
        """Student and teacher map of kept level ``lvl`` after their
        connectors."""
        s = student[self.level_ids[lvl]]
        t = teacher[self.teacher_level_ids[lvl]]
        if len(self.teacher_connectors[lvl]):
            with torch.no_grad():
                for conn in self.teacher_connectors[lvl]:
                    t = apply_connector(conn, t, s)
        for conn in self.connectors[lvl]:
            s = apply_connector(conn, s, t)
        return s, t

    def one_call_for_all_levels(self, device: torch.device) -> bool:
        """Whether one ``forward_levels`` call computes all levels.

        True, where :attr:`batch_levels` allows it on ``device``, for
        several levels of a loss that offers it (``batches_levels``, see
        :mod:`visionkd.models.losses.level_batch`) when every level's loss
        module has the same settings, none reads data samples, and each
        would run its class's ``forward`` as it is: a compiled loss
        (``compile_losses``) or one with forward hooks is called per level.
        """
        mode = self.batch_levels
        if not (isinstance(mode, bool) or mode == 'auto'):
            raise ValueError(f'distill term {self.name!r}: batch_levels '
                             f"must be 'auto', True or False, got {mode!r}")
        if mode is False or (mode == 'auto' and device.type == 'cpu'):
            return False
        first = self.losses[0]
        if self.num_levels < 2 or any(self._wants_samples) or not getattr(
                first, 'batches_levels', False):
            return False
        settings = _settings(first)
        return all(type(m) is type(first) and _called_as_is(m)
                   and _settings(m) == settings for m in self.losses)

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """The loss of every kept level after its connectors (one call for
        all levels where :meth:`one_call_for_all_levels`)."""
        device = student[self.level_ids[0]].device
        if self.one_call_for_all_levels(device):
            pairs = [self._connect(lvl, student, teacher)
                     for lvl in range(self.num_levels)]
            values = self.run_loss(self.losses[0].forward_levels,
                                   [s for s, _ in pairs],
                                   [t for _, t in pairs])
            return dict(zip(self._suffixes, values.unbind()))
        out = {}
        for lvl in range(self.num_levels):
            s, t = self._connect(lvl, student, teacher)
            loss_fn = self.losses[lvl]
            if self._wants_samples[lvl]:
                self._check_batch_gt(loss_fn, data_samples)
                value = self.run_loss(loss_fn, s, t, data_samples)
            else:
                value = self.run_loss(loss_fn, s, t)
            out[self._suffixes[lvl]] = value
        return out

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', record={self.record!r}, '
                f'levels={self.level_ids}')
