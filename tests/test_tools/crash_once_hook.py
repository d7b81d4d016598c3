"""A hook that kills its training process once, for the runner's tests."""
import os
import os.path as osp

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class CrashOnceHook(Hook):
    """Exit the process hard after ``at_iter`` (after its checkpoint).

    Only in work dirs whose path contains ``name_contains``, and only while
    ``marker`` does not exist (it is created just before the crash).
    """

    priority = 'LOWEST'  # after the CheckpointHook

    def __init__(self, marker: str, at_iter: int = 1,
                 name_contains: str = '') -> None:
        self.marker = marker
        self.at_iter = at_iter
        self.name_contains = name_contains

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if (runner.iter + 1 == self.at_iter
                and self.name_contains in runner.work_dir
                and not osp.exists(self.marker)):
            open(self.marker, 'w').close()
            os._exit(3)
