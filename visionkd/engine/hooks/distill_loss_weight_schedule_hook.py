"""Warm-up and decay of the distillation-loss weights by iteration."""
import math
from typing import List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionkd.registry import HOOKS

__all__ = ['DistillLossWeightScheduleHook']

_DECAYS = ('constant', 'linear', 'cosine', 'step')


@HOOKS.register_module()
class DistillLossWeightScheduleHook(Hook):
    """Scale the distillation terms' weights by a function of the iteration.

    The factor multiplies each selected term's ``weight`` (and so every
    level of it); the student's task losses are not touched. With ``it``
    the 0-based training iteration (``runner.iter``):

    * warm-up, ``it < warmup_iters``: linear from ``warmup_start`` to 1 at
      ``warmup_iters``;
    * then ``decay``, over ``[warmup_iters, end_iter)`` (``end_iter``
      defaults to the run's ``max_iters``), from 1 to ``end_factor``:
      ``'constant'`` (stays 1), ``'linear'``, ``'cosine'`` (half cosine),
      or ``'step'`` (times ``gamma`` at each of ``milestones``);
    * after ``end_iter``: ``end_factor`` (``'step'``: the last step value).

    The factor is recomputed from ``runner.iter`` before every iteration
    and never stored, so a resumed run continues the schedule exactly.
    Combine with :class:`DistillStopHook` to switch the terms off.

    Args:
        warmup_iters: Iterations of linear warm-up (0: none).
        warmup_start: Factor at iteration 0 of the warm-up.
        decay: ``'constant'``, ``'linear'``, ``'cosine'`` or ``'step'``.
        end_factor: Factor reached at ``end_iter`` (linear/cosine).
        end_iter: Last iteration of the decay; defaults to ``max_iters``.
        milestones: Iterations where ``'step'`` multiplies by ``gamma``.
        gamma: Step factor of ``'step'``.
        terms: Names of the terms to schedule; None for all.
    """

    priority = 'LOW'

    def __init__(self,
                 warmup_iters: int = 0,
                 warmup_start: float = 0.0,
                 decay: str = 'constant',
                 end_factor: float = 0.0,
                 end_iter: Optional[int] = None,
                 milestones: Sequence[int] = (),
                 gamma: float = 0.1,
                 terms: Optional[Sequence[str]] = None) -> None:
        if decay not in _DECAYS:
            raise ValueError(f'DistillLossWeightScheduleHook: decay must be '
                             f'one of {_DECAYS}, got {decay!r}')
        if not isinstance(warmup_iters, int) or warmup_iters < 0:
            raise ValueError(f'DistillLossWeightScheduleHook: warmup_iters '
                             f'must be an int >= 0, got {warmup_iters!r}')
        if end_iter is not None and end_iter < warmup_iters:
            raise ValueError(f'DistillLossWeightScheduleHook: end_iter '
                             f'{end_iter} is before warmup_iters '
                             f'{warmup_iters}')
        if decay == 'step' and not milestones:
            raise ValueError("DistillLossWeightScheduleHook: decay='step' "
                             'needs milestones')
        self.warmup_iters = warmup_iters
        self.warmup_start = float(warmup_start)
        self.decay = decay
        self.end_factor = float(end_factor)
        self.end_iter = end_iter
        self.milestones: List[int] = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.terms = None if terms is None else list(terms)

    def factor(self, it: int, max_iters: Optional[int] = None) -> float:
        """The weight factor at 0-based iteration ``it``."""
        if it < self.warmup_iters:
            frac = it / self.warmup_iters
            return self.warmup_start + (1.0 - self.warmup_start) * frac
        if self.decay == 'constant':
            return 1.0
        if self.decay == 'step':
            return self.gamma**sum(it >= m for m in self.milestones)
        end = self.end_iter if self.end_iter is not None else max_iters
        if end is None:
            raise ValueError('DistillLossWeightScheduleHook: end_iter is '
                             'needed outside a runner')
        span = end - self.warmup_iters
        if span <= 0 or it >= end:
            return self.end_factor
        frac = (it - self.warmup_iters) / span
        if self.decay == 'linear':
            return 1.0 + (self.end_factor - 1.0) * frac
        return self.end_factor + (1.0 - self.end_factor) * 0.5 * (
            1.0 + math.cos(math.pi * frac))

    def before_train(self, runner) -> None:
        model = self._model(runner)
        names = list(model.distill_terms.keys())
        unknown = [t for t in (self.terms or []) if t not in names]
        if unknown:
            raise KeyError(f'DistillLossWeightScheduleHook: unknown term(s) '
                           f'{unknown}; the distiller has {names}')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        model = self._model(runner)
        value = self.factor(runner.iter, runner.max_iters)
        for name, term in model.distill_terms.items():
            if self.terms is None or name in self.terms:
                term.scale = value

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if not hasattr(model, 'distill_terms'):
            raise TypeError('DistillLossWeightScheduleHook needs a visionkd '
                            f'distiller, got {type(model).__name__}')
        return model
