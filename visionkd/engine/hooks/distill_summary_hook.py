"""One-screen summaries of a distillation run, at its start and its end."""
import contextlib
import time
from typing import Dict, Iterator, List, Optional

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionkd.models.distillers.layer_pairing import py_repr
from visionkd.registry import HOOKS

__all__ = ['DistillSummaryHook', 'StepTimer']

#: Metric shown when the hook is given none: the first of these in the
#: validation results, else the first result.
_METRIC_KEYS = ('coco/bbox_mAP', 'coco/segm_mAP', 'mIoU', 'pascal_voc/mAP')
_RULE = '=' * 72


def _sync() -> None:
    """Wait for the GPU (timings of asynchronous kernels), if one runs."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepTimer:
    """Wall time of named parts of the training step, while active.

    The distiller calls ``measure('teacher')`` around its teacher forward
    and ``measure('distill')`` around its terms when this object is its
    ``step_timer``; outside :attr:`active` iterations nothing is timed (and
    the GPU is not synchronised).
    """

    def __init__(self) -> None:
        self.active = False
        self.totals: Dict[str, float] = {}

    @contextlib.contextmanager
    def measure(self, part: str) -> Iterator[None]:
        """Add the block's wall time to ``totals[part]`` (if active)."""
        if not self.active:
            yield
            return
        _sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.totals[part] = self.totals.get(part, 0.0) + (
                time.perf_counter() - start)


def _count(params) -> int:
    return sum(p.numel() for p in params)


def _num(n: int) -> str:
    return f'{n:,}'


def _term_lines(name: str, term: nn.Module, cfg: dict) -> List[str]:
    """Summary lines of one term: layers, levels, connector, loss,
    weight and parameters."""
    levels = getattr(term, 'level_ids', None)
    where = f'levels {list(levels)}' if levels is not None and len(
        levels) > 1 else f'{term.num_levels} level(s)'
    lines = [f'    {name} [{term.mode}]: student {term.student_path} -> '
             f'teacher {term.teacher_path}, {where}']
    conn_keys = ('connector', 'teacher_connector')
    for key in conn_keys:
        if cfg.get(key) is not None:
            lines.append(f'        {key}={py_repr(cfg[key])}')
    for key in type(term).type_keys:
        if key not in conn_keys and cfg.get(key) is not None:
            lines.append(f'        {key}={py_repr(cfg[key])}')
    total = _count(term.parameters())
    conns = getattr(term, 'connectors', None)
    conn = _count(conns.parameters()) if isinstance(conns, nn.Module) else 0
    lines.append(f'        weight {term.weight:g}; parameters {_num(total)} '
                 f'(connectors {_num(conn)}, losses and other '
                 f'{_num(total - conn)})')
    return lines


def start_summary(model: nn.Module) -> str:
    """The start summary of a distiller: models, terms, parameters."""
    student_n = _count(model.student.parameters())
    precision = getattr(model.teacher_precision, 'precision', None)
    lines = [
        _RULE, f'distillation: {type(model).__name__} ({model.task})',
        f'  student: {type(model.student).__name__}, '
        f'{_num(student_n)} parameters',
        f'  teacher: {type(model.teacher).__name__} (frozen, '
        f'{_num(_count(model.teacher.parameters()))} parameters'
        + (f', {precision}' if precision else '') + ')',
        f'    teacher_ckpt: {model.teacher_ckpt}',
        f'  terms ({len(model.distill_terms)}; layers as resolved at '
        f'build):']
    cfgs = getattr(model, 'resolved_distill_terms', {}) or {}
    for name, term in model.distill_terms.items():
        lines += _term_lines(name, term, cfgs.get(name, {}))
    added = _count(model.distill_terms.parameters())
    share = f' ({100.0 * added / student_n:.2f}% of the student)' if (
        student_n) else ''
    lines += [f'  parameters added by connectors/losses: {_num(added)}'
              f'{share}', _RULE]
    return '\n'.join(lines)


def _fmt(value) -> str:
    if value is None:
        return 'n/a'
    return f'{value:.4f}' if isinstance(value, float) else str(value)


@HOOKS.register_module()
class DistillSummaryHook(Hook):
    """Print what a distillation run distils, and what it cost and gave.

    ``tools/train.py`` adds it to every distiller config (``--no-summary``
    leaves it out). At ``before_train`` (mmengine logger, INFO) it prints
    the student and the teacher (type, parameters, ``teacher_ckpt``), every
    term with its resolved layers, levels, connector(s), loss config and
    weight, and the parameters the connectors and losses add. At
    ``after_train`` it prints the student's last validation metric next to
    the teacher's and the baseline's (if known) and the training time per
    iteration split into teacher forward, distillation terms and the rest
    (student forward, backward of every loss, optimizer step); data loading
    is not included. Each validation also logs a one-line metric
    comparison.

    Timing synchronises the GPU around the parts, so only one iteration in
    ``time_interval`` is timed (the first ``skip_iters`` are warm-up and
    never timed); the distiller times nothing without this hook.

    Args:
        metric_key: Validation metric to show; default the first of
            ``coco/bbox_mAP``, ``coco/segm_mAP``, ``mIoU``,
            ``pascal_voc/mAP`` present, else the first one.
        teacher_metric: The teacher's value of that metric (same scale as
            the evaluator's, e.g. 0-1 for COCO mAP); default the config's
            top-level ``teacher_metric``.
        baseline_metric: The undistilled student's; default the config's
            ``baseline_metric``.
        timing: Time the iterations. Defaults to True.
        time_interval: Time one iteration in this many. Defaults to 10.
        skip_iters: Iterations of this session never timed. Defaults to 1.
    """

    priority = 'VERY_HIGH'  # after_train_iter before logging/checkpoints

    def __init__(self,
                 metric_key: Optional[str] = None,
                 teacher_metric: Optional[float] = None,
                 baseline_metric: Optional[float] = None,
                 timing: bool = True,
                 time_interval: int = 10,
                 skip_iters: int = 1) -> None:
        if not isinstance(time_interval, int) or time_interval < 1:
            raise ValueError('DistillSummaryHook: time_interval must be an '
                             f'int >= 1, got {time_interval!r}')
        if not isinstance(skip_iters, int) or skip_iters < 0:
            raise ValueError('DistillSummaryHook: skip_iters must be an int '
                             f'>= 0, got {skip_iters!r}')
        self.metric_key = metric_key
        self.teacher_metric = teacher_metric
        self.baseline_metric = baseline_metric
        self.timing = bool(timing)
        self.time_interval = time_interval
        self.skip_iters = skip_iters
        self.timer = StepTimer()
        self.metrics: Dict[str, float] = {}
        self.timed_iters = 0
        self.step_seconds = 0.0
        self._model: Optional[nn.Module] = None
        self._first_iter = 0
        self._start = 0.0

    # ------------------------------------------------------------------
    @staticmethod
    def _distiller(runner) -> Optional[nn.Module]:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        return model if hasattr(model, 'distill_terms') else None

    def before_train(self, runner) -> None:
        cfg = getattr(runner, 'cfg', None) or {}
        if self.teacher_metric is None:
            self.teacher_metric = cfg.get('teacher_metric')
        if self.baseline_metric is None:
            self.baseline_metric = cfg.get('baseline_metric')
        self._model = self._distiller(runner)
        if self._model is None:
            runner.logger.info('DistillSummaryHook: the model is no '
                               'distiller; nothing to summarise')
            return
        runner.logger.info('\n' + start_summary(self._model))
        self._first_iter = runner.iter
        if self.timing:
            self._model.step_timer = self.timer

    def _due(self, runner) -> bool:
        n = runner.iter - self._first_iter - self.skip_iters
        return n >= 0 and n % self.time_interval == 0

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self.timer.active = bool(self._model is not None and self.timing
                                 and self._due(runner))
        if self.timer.active:
            _sync()
            self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self.timer.active:
            return
        _sync()
        self.step_seconds += time.perf_counter() - self._start
        self.timed_iters += 1
        self.timer.active = False

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._model is None or not metrics:
            return
        self.metrics = dict(metrics)
        runner.logger.info('DistillSummaryHook: ' + self.metric_line())

    def after_train(self, runner) -> None:
        if self._model is None:
            return
        self._model.step_timer = None
        runner.logger.info('\n' + self.end_summary())

    # ------------------------------------------------------------------
    def _metric(self) -> Optional[str]:
        if self.metric_key is not None:
            return self.metric_key
        return next((k for k in _METRIC_KEYS if k in self.metrics),
                    next(iter(self.metrics), None))

    def metric_line(self) -> str:
        """``<metric>: student S | teacher T | baseline B``."""
        key = self._metric()
        student = self.metrics.get(key) if key else None
        return (f'{key or "metric"}: student {_fmt(student)} | teacher '
                f'{_fmt(self.teacher_metric)} | baseline '
                f'{_fmt(self.baseline_metric)}')

    def timing_lines(self) -> List[str]:
        """Time per timed iteration, split into its parts."""
        n = self.timed_iters
        if not n:
            return ['  time per iteration: not measured (no iteration '
                    f'after the first {self.skip_iters} was timed)']
        step = self.step_seconds / n
        teacher = self.timer.totals.get('teacher', 0.0) / n
        distill = self.timer.totals.get('distill', 0.0) / n
        rest = max(step - teacher - distill, 0.0)
        lines = [f'  time per iteration: {step:.4f} s (mean of {n} timed '
                 f'iteration(s), data loading excluded)']
        for label, value in (('teacher forward', teacher),
                             ('distillation terms', distill),
                             ('student forward/backward + optimizer', rest)):
            pct = 100.0 * value / step if step > 0 else 0.0
            lines.append(f'    {label:<38} {value:.4f} s  {pct:5.1f}%')
        return lines

    def end_summary(self) -> str:
        """The end summary: metrics and the time split."""
        lines = [_RULE, 'distillation run summary',
                 '  ' + (self.metric_line() if self.metrics else
                         'metric: no validation ran')]
        lines += self.timing_lines() + [_RULE]
        return '\n'.join(lines)
