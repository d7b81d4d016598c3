"""Save the torch random state in checkpoints so that resuming is exact."""
from typing import List, Optional

import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook

from visionkd.registry import HOOKS

__all__ = ['RNGStateHook']

_KEY = 'visionkd_rng_state'


def _get_state() -> dict:
    state = dict(cpu=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_state(state: dict) -> None:
    torch.set_rng_state(state['cpu'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda']
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make ``--resume`` continue the exact random stream of the run.

    mmengine checkpoints do not hold the random state: a resumed run
    re-seeds and then draws different dropout masks, RPN/RoI samples, MGD
    masks or CIRKD memory samples than the uninterrupted run would have.
    This hook

    * snapshots the torch CPU (and CUDA) generator state at the end of every
      training iteration (one copy of a few KB) and restores that snapshot
      at the start of the next one, so whatever draws random numbers in
      between (validation, logging) never shifts the training stream;
    * stores the snapshot in every checkpoint and restores it at the first
      iteration after a resume. Under distributed training each process
      has its own stream: the snapshots are gathered every iteration (one
      small ``all_gather_object``, since only rank 0 saves) and each
      process gets its own back.

    The data pipeline is not affected: mmengine replays the sampler and the
    pipeline's numpy draws when it advances the dataloader on resume.
    ``tools/train.py`` adds this hook to every config.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._snapshot: Optional[dict] = None
        self._all: Optional[List[dict]] = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        self._snapshot = _get_state()
        _, world_size = get_dist_info()
        self._all = (all_gather_object(self._snapshot)
                     if world_size > 1 else [self._snapshot])

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if self._snapshot is not None:
            _set_state(self._snapshot)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # rank 0 only (Runner.save_checkpoint is master-only)
        checkpoint[_KEY] = self._all or [_get_state()]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get(_KEY)
        if not states:
            return
        rank, _ = get_dist_info()
        if rank < len(states):
            self._snapshot = states[rank]
