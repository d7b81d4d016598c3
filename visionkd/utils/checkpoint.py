"""Checkpoint loading that works with torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and mmengine
0.10 calls ``torch.load`` without the argument, so checkpoints saved by
mmengine (their ``meta`` holds non-tensor objects) no longer load, neither
as teacher weights nor on ``--resume``. visionkd re-registers mmengine's
local-file and HTTP(S) checkpoint loaders through mmengine's public
:class:`~mmengine.runner.CheckpointLoader` scheme registry, loading with
``weights_only=False``. Only load checkpoints you trust: they are pickles.
"""
import os.path as osp
from typing import Any, Optional

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.runner import CheckpointLoader

__all__ = ['load_local_checkpoint', 'load_http_checkpoint']


def load_local_checkpoint(filename: str,
                          map_location: Optional[Any] = None) -> Any:
    """Load a checkpoint from a local path (``weights_only=False``)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def load_http_checkpoint(filename: str,
                         map_location: Optional[Any] = None,
                         model_dir: Optional[str] = None,
                         progress: bool = False) -> Any:
    """Download (rank 0 first) and load a checkpoint from an URL."""
    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = torch.hub.load_state_dict_from_url(
            filename,
            model_dir=model_dir,
            map_location=map_location,
            progress=progress,
            weights_only=False)
    if world_size > 1:
        barrier()
        if rank > 0:
            checkpoint = torch.hub.load_state_dict_from_url(
                filename,
                model_dir=model_dir,
                map_location=map_location,
                progress=progress,
                weights_only=False)
    return checkpoint


CheckpointLoader.register_scheme(prefixes='', force=True)(
    load_local_checkpoint)
CheckpointLoader.register_scheme(
    prefixes=('http://', 'https://'), force=True)(
        load_http_checkpoint)

