"""Stop distillation at an iteration or an epoch."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionkd.registry import HOOKS

__all__ = ['DistillStopHook']


@HOOKS.register_module()
class DistillStopHook(Hook):
    """Turn the distillation terms off after a given iteration or epoch.

    The student's task losses continue; the teacher is no longer run. The
    decision is taken from the runner's iteration/epoch counters before each
    training iteration, so it holds after ``--resume`` too.

    Args:
        stop_iter: Distil during iterations ``[0, stop_iter)``.
        stop_epoch: Distil during epochs ``[0, stop_epoch)``.
    """

    priority = 'LOW'

    def __init__(self,
                 stop_iter: Optional[int] = None,
                 stop_epoch: Optional[int] = None) -> None:
        if (stop_iter is None) == (stop_epoch is None):
            raise ValueError('DistillStopHook takes exactly one of stop_iter '
                             'and stop_epoch')
        self.stop_iter = stop_iter
        self.stop_epoch = stop_epoch

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if self.stop_iter is not None:
            enabled = runner.iter < self.stop_iter
        else:
            enabled = runner.epoch < self.stop_epoch
        if model.distill_enabled and not enabled:
            runner.logger.info(
                f'DistillStopHook: distillation stops at iteration '
                f'{runner.iter} (epoch {runner.epoch})')
        model.distill_enabled = enabled
