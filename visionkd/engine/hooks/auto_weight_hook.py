"""Choose the distillation terms' weights from their gradient shares.

A term's *gradient share* is the one :mod:`visionkd.models.distillers.
grad_share` logs: the L2 norm of the term's gradient on the parameters of
the student layer it distils (e.g. the FPN for ``student='neck'``, the
parameters that both the task loss and the term reach first), divided by
the task loss's gradient norm on the same parameters. The term's losses
are multiplied by its ``weight`` (see :class:`~visionkd.models.distillers.
terms.BaseDistillTerm`), so its gradient, and its share, are linear in
``weight``: a share ``r`` measured at weight ``w`` becomes ``target`` at

    ``w* = w * target / r``.

With ``max_factor`` the factor ``target / r`` is capped: ``max_factor=1``
only lowers weights (a term pulling harder than ``target`` is brought down
to it, a weaker one keeps its weight). A share measured on the first
batches underestimates a term whose pull on the layer grows as it trains,
e.g. DeFeat's adapter, initialised at 1e-4 scale: uncapped, its weight
would be multiplied by ~100 (docs/results/weight_rule).

``r`` is the **median** over a few training batches (one outlier batch,
e.g. with few objects, does not move it; a mean would). The measurement
runs the distiller's ``loss`` mode on those batches without an optimizer
step, and leaves no trace: BatchNorm statistics and the random states are
restored afterwards, so training sees the same data and random stream as
without it. A loss whose gradient is not linear in its weight would need
iterating the measurement; no loss of visionkd is one.

:class:`AutoWeightHook` does this at the start of training;
``tools/analysis_tools/calibrate_weights.py`` prints (and writes) the
weights before a run, and ``kd_doctor.py`` checks the shares.
"""
import copy
import math
import random
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.dist import broadcast_object_list, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionkd.models.distillers.grad_share import GradShare, split_losses
from visionkd.registry import HOOKS

__all__ = [
    'AutoWeightHook', 'Measurement', 'TermMeasurement', 'calibrated_weights',
    'distiller_of', 'measure_terms', 'pasteable'
]

#: Checkpoint key of the hook's state.
CKPT_KEY = 'visionkd_auto_weight'


@dataclass
class TermMeasurement:
    """One term over the measured batches.

    Attributes:
        weight: The term's ``weight`` during the measurement.
        losses: Its loss (weighted, summed over its keys) per batch.
        shares: Its gradient share per batch (absent where its layer got
            no gradient).
    """

    weight: float
    losses: List[float] = field(default_factory=list)
    shares: List[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        """Median loss (NaN if any batch gave a non-finite one)."""
        return _median(self.losses)

    @property
    def share(self) -> float:
        """Median gradient share (NaN if none or any is non-finite)."""
        return _median(self.shares)


@dataclass
class Measurement:
    """What :func:`measure_terms` measured.

    Attributes:
        task_losses: The task loss (every loss no term owns) per batch.
        terms: Per term name, its :class:`TermMeasurement`.
    """

    task_losses: List[float] = field(default_factory=list)
    terms: Dict[str, TermMeasurement] = field(default_factory=dict)

    @property
    def task_loss(self) -> float:
        """Median task loss."""
        return _median(self.task_losses)

    @property
    def iters(self) -> int:
        """How many batches were measured."""
        return len(self.task_losses)


def _median(values: List[float]) -> float:
    if not values or not all(math.isfinite(v) for v in values):
        return float('nan')
    return float(statistics.median(values))


def distiller_of(model: nn.Module) -> nn.Module:
    """The visionkd distiller inside ``model`` (a wrapper or the model).

    Raises:
        TypeError: ``model`` is not a distiller.
    """
    inner = model.module if is_model_wrapper(model) else model
    if not hasattr(inner, 'distill_terms'):
        raise TypeError(f'needs a visionkd distiller (a config whose model '
                        f'has distill_terms), got {type(inner).__name__}')
    return inner


@contextmanager
def _no_trace(model: nn.Module, check_finite: bool) -> Iterator[None]:
    """Train mode, distillation on, schedules at 1; then everything back:
    buffers (BatchNorm statistics), flags, scales, random states and EMA
    teachers (which ``loss`` mode updates)."""
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    ema = model.ema_snapshot()
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    cuda = torch.cuda.get_rng_state_all() if (
        torch.cuda.is_available() and torch.cuda.is_initialized()) else None
    flags = (model.training, model.distill_enabled, model.check_finite)
    scales = {n: t.scale for n, t in model.distill_terms.items()}
    model.train()
    model.distill_enabled, model.check_finite = True, check_finite
    for term in model.distill_terms.values():
        term.scale = 1.0
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        model.restore_ema(ema)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        model.train(flags[0])
        model.distill_enabled, model.check_finite = flags[1], flags[2]
        for name, term in model.distill_terms.items():
            term.scale = scales[name]


def _measure_batch(model: nn.Module, batch: dict, out: Measurement) -> None:
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    task, totals = split_losses(model.distill_terms, losses)
    shares = GradShare.compute(model.student, model.distill_terms, losses)
    out.task_losses.append(float('nan') if task is None else float(
        task.detach()))
    for name, term in model.distill_terms.items():
        meas = out.terms.setdefault(name, TermMeasurement(term.weight))
        if name in totals:
            meas.losses.append(float(totals[name].detach()))
        if name in shares:
            meas.shares.append(float(shares[name]))


def measure_terms(model: nn.Module, batches: Iterable[dict], iters: int,
                  check_finite: bool = True) -> Measurement:
    """Each term's loss and gradient share on the first ``iters`` batches.

    No optimizer step; BatchNorm statistics, flags and random states are
    restored afterwards (see the module docstring).

    Args:
        model: A distiller (or a wrapper of one).
        batches: Data batches as the train dataloader gives them.
        iters: How many batches to measure (fewer if ``batches`` ends).
        check_finite: Keep the distiller's NaN/Inf stop during the
            measurement (False: non-finite values are measured as such).

    Returns:
        The :class:`Measurement`.
    """
    model = distiller_of(model)
    out = Measurement()
    with _no_trace(model, check_finite):
        for _, batch in zip(range(iters), batches):
            _measure_batch(model, batch, out)
    return out


def calibrated_weights(measurement: Measurement, target: float,
                       terms: Optional[Sequence[str]] = None,
                       max_factor: Optional[float] = None
                       ) -> Dict[str, float]:
    """``{term: weight}`` that brings each term's median share to
    ``target`` (``w * target / r``), the factor ``target / r`` capped at
    ``max_factor`` when given (1: weights are only lowered).

    Terms left out: those not in ``terms`` (when given) and those whose
    share is 0 or not finite (no weight can fix them; the doctor says why).
    """
    out = {}
    for name, meas in measurement.terms.items():
        if terms is not None and name not in terms:
            continue
        share = meas.share
        if math.isfinite(share) and share > 0:
            factor = target / share
            if max_factor is not None:
                factor = min(factor, max_factor)
            out[name] = meas.weight * factor
    return out


def pasteable(weights: Dict[str, float]) -> str:
    """The weights as a config snippet to paste into a distiller config."""
    inner = ', '.join(f'{n}=dict(weight={w:.4g})'
                      for n, w in weights.items())
    return f'model=dict(distill_terms=dict({inner}))'


def _positive_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(
        value, (int, float)) and value > 0


@HOOKS.register_module()
class AutoWeightHook(Hook):
    """Calibrate the terms' weights on the first batches of training.

    Before the first iteration, the gradient share of every term is
    measured on the first ``iters`` batches of the train data (see the
    module docstring: median, no optimizer step, no trace left), each
    term's ``weight`` is set to bring its share to ``target``, and the
    weights are logged as a config snippet to paste, so later runs can fix
    them. The weights are stored in every checkpoint: ``--resume`` applies
    the stored ones instead of calibrating again on the partly trained
    student. A fresh run (iteration 0, also with ``load_from``)
    calibrates. Schedule hooks still scale the weights
    (``DistillLossWeightScheduleHook``: the calibrated weight is the one
    at factor 1). Under distributed training rank 0's weights are used by
    every rank. Enable it with::

        custom_hooks = [dict(type='visionkd.AutoWeightHook', target=1.0,
                             iters=10)]

    Args:
        target: Gradient share to reach (1.0: the term pulls the distilled
            layer as hard as the task loss).
        iters: Batches measured.
        terms: Names of the terms to calibrate; None for all. The others
            keep their weights.
        max_factor: Cap on the factor a weight is multiplied by; None for
            no cap, 1.0 to only lower weights (a term weaker than
            ``target`` keeps its weight; see the module docstring).
    """

    priority = 'NORMAL'

    def __init__(self, target: float = 1.0, iters: int = 10,
                 terms: Optional[Sequence[str]] = None,
                 max_factor: Optional[float] = None) -> None:
        if not _positive_number(target):
            raise ValueError(f'AutoWeightHook: target must be a number > 0 '
                             f'(a gradient share, e.g. 1.0), got {target!r}')
        if max_factor is not None and not _positive_number(max_factor):
            raise ValueError(f'AutoWeightHook: max_factor must be None or a '
                             f'number > 0 (1.0: only lower weights), got '
                             f'{max_factor!r}')
        if isinstance(iters, bool) or not isinstance(iters,
                                                     int) or iters < 1:
            raise ValueError(f'AutoWeightHook: iters must be an int >= 1, '
                             f'got {iters!r}')
        self.target = float(target)
        self.iters = iters
        self.terms = None if terms is None else list(terms)
        self.max_factor = None if max_factor is None else float(max_factor)
        #: The weights in use (None until calibrated or resumed).
        self.weights: Optional[Dict[str, float]] = None
        self._loaded: Optional[Dict[str, float]] = None

    def before_train(self, runner) -> None:
        model = distiller_of(runner.model)
        names = list(model.distill_terms.keys())
        unknown = [t for t in (self.terms or []) if t not in names]
        if unknown:
            raise KeyError(f'AutoWeightHook: unknown term(s) {unknown} in '
                           f'`terms`; the distiller has {names}')
        resumed = runner.iter > 0 or runner.epoch > 0
        if resumed and self._loaded is not None:
            self.weights = dict(self._loaded)
            how = 'restored from the resumed checkpoint'
        else:
            if resumed:
                runner.logger.warning(
                    'AutoWeightHook: the resumed checkpoint holds no '
                    'calibrated weights; calibrating on the current student')
            self.weights = self._calibrate(runner, model)
            cap = ('' if self.max_factor is None else
                   f', factor capped at {self.max_factor:g}')
            how = (f'calibrated to gradient share {self.target:g} (median '
                   f'over {self.iters} batches{cap})')
        for name, weight in self.weights.items():
            model.distill_terms[name].weight = weight
        runner.logger.info(f'AutoWeightHook: weights {how}; to fix them, '
                           f'paste: {pasteable(self.weights)}')

    def _calibrate(self, runner, model: nn.Module) -> Dict[str, float]:
        meas = measure_terms(model, self._loader(runner), self.iters)
        weights = calibrated_weights(meas, self.target, self.terms,
                                     self.max_factor)
        for name, m in meas.terms.items():
            if self.terms is not None and name not in self.terms:
                continue
            runner.logger.info(
                f'AutoWeightHook: {name}: share {m.share:.4g} at weight '
                f'{m.weight:g} -> weight {weights.get(name, m.weight):.4g}')
            if name not in weights:
                runner.logger.warning(
                    f'AutoWeightHook: term {name!r} has gradient share '
                    f'{m.share} on its layer; its weight is kept (run '
                    f'tools/analysis_tools/kd_doctor.py on the config)')
        if get_dist_info()[1] > 1:
            box = [weights]
            broadcast_object_list(box, src=0)
            weights = box[0]
        return weights

    @staticmethod
    def _loader(runner) -> Iterable[dict]:
        """A fresh loader over the train dataset with the train sampler's
        seed: the batches training starts with, without touching the train
        loop's own iterator (nor persistent workers)."""
        from mmengine.runner import Runner
        cfg = runner.cfg.get('train_dataloader', None)
        if not isinstance(cfg, dict):  # a runner built from objects
            return runner.train_dataloader
        cfg = copy.deepcopy(cfg)
        cfg['dataset'] = runner.train_dataloader.dataset
        cfg['persistent_workers'] = False
        return Runner.build_dataloader(cfg, seed=runner.seed)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.weights is not None:
            checkpoint[CKPT_KEY] = dict(target=self.target,
                                        weights=dict(self.weights))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CKPT_KEY)
        if state is not None:
            self._loaded = dict(state['weights'])
