"""Checkpoint loading: safe for files from outside, complete for a run's own.

torch >= 2.6 loads with ``weights_only=True`` by default: only tensors and
plain data (dicts, lists, numbers, strings) are unpickled, so a checkpoint
cannot run code when it is loaded. mmengine's training checkpoints hold more
than that (the message hub's ``HistoryBuffer`` objects and the bound methods
they refer to), so a plain ``torch.load`` refuses them on ``--resume``.

visionkd registers its own local-file and HTTP(S) loaders in mmengine's
:class:`~mmengine.runner.CheckpointLoader` (so every ``load_checkpoint``,
``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained')`` and
``teacher_ckpt`` goes through them):

* a run's own checkpoint is fully unpickled (read once): a local file in
  an mmengine work dir (mmengine writes its ``last_checkpoint`` file beside
  the checkpoints), or one a tool registered with :func:`trust_checkpoint`
  (``tools/train.py`` does so for ``--resume`` and its work dir);
* every other file is loaded with ``weights_only=True`` (numpy arrays and
  dtypes allowed: the RNG states of a run hold them), which is all a
  model-zoo checkpoint or an exported weights file needs;
* anything else (every URL, a loose file from elsewhere) is refused with a
  :class:`UnsafeCheckpointError` naming the objects it would unpickle, unless
  the user opts in with the environment variable
  ``VISIONKD_UNSAFE_CHECKPOINTS=1`` (logged as a warning for each file).

``python tools/export_weights.py SRC DST`` turns a training checkpoint into
a tensors-only file that loads anywhere with ``weights_only=True``.
"""
import os
import os.path as osp
import pickle
from typing import Any, List, Optional, Set

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

__all__ = [
    'UnsafeCheckpointError', 'UNSAFE_ENV', 'RUN_MARKER', 'data_globals',
    'is_run_checkpoint', 'load_local_checkpoint', 'load_http_checkpoint',
    'torch_load_weights', 'trust_checkpoint'
]

#: Environment variable that allows full unpickling of any checkpoint.
UNSAFE_ENV = 'VISIONKD_UNSAFE_CHECKPOINTS'
#: File mmengine's CheckpointHook writes beside a run's checkpoints.
RUN_MARKER = 'last_checkpoint'

_TRUSTED: Set[str] = set()


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint from outside the run would need full unpickling."""


def data_globals() -> List[Any]:
    """The non-torch globals allowed under ``weights_only=True``: numpy's
    array reconstruction, arrays, dtypes and scalars (data, no code)."""
    core = getattr(np, '_core', None) or np.core
    names = [core.multiarray._reconstruct, core.multiarray.scalar,
             np.ndarray, np.dtype]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        names += [getattr(dtypes, n) for n in dir(dtypes)
                  if n.endswith('DType')]
    return names


def trust_checkpoint(path: str) -> None:
    """Allow full unpickling for ``path`` (a file, or a directory and
    everything below it): for a run's own checkpoints only."""
    _TRUSTED.add(osp.abspath(osp.expanduser(path)))


def is_run_checkpoint(path: str) -> bool:
    """True for a file registered with :func:`trust_checkpoint` (or below a
    registered directory) and for a file in an mmengine work dir."""
    path = osp.abspath(osp.expanduser(path))
    for trusted in _TRUSTED:
        if path == trusted or path.startswith(trusted.rstrip(os.sep) + os.sep):
            return True
    return osp.isfile(osp.join(osp.dirname(path), RUN_MARKER))


def torch_load_weights(f: Any, map_location: Optional[Any] = None) -> Any:
    """``torch.load(f, weights_only=True)`` with numpy data allowed."""
    with torch.serialization.safe_globals(data_globals()):
        return torch.load(f, map_location=map_location, weights_only=True)


def _unsafe_names(filename: str) -> List[str]:
    """The globals a full unpickling of ``filename`` would import."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(
            filename)
    except Exception:  # not a zip checkpoint: no list to give
        return []
    allowed = {f'{g.__module__}.{g.__qualname__}' for g in data_globals()}
    return [n for n in names if n not in allowed]


def _refuse(filename: str, err: Exception) -> UnsafeCheckpointError:
    names = _unsafe_names(filename) if osp.isfile(filename) else []
    listed = f' ({", ".join(names[:6])})' if names else ''
    return UnsafeCheckpointError(
        f'checkpoint {filename!r} holds pickled Python objects beyond '
        f'tensors and plain data{listed}; visionkd loads checkpoints from '
        'outside a run with torch.load(weights_only=True) because '
        'unpickling them can run arbitrary code. If it is a training '
        'checkpoint you made, load it from its work dir (beside mmengine\'s '
        f'{RUN_MARKER!r} file) or export its weights with `python '
        'tools/export_weights.py SRC DST`; to unpickle it anyway set '
        f'{UNSAFE_ENV}=1 (only for files you trust). torch said: '
        f'{str(err).splitlines()[0]}')


def _full_load(filename: str, map_location: Optional[Any], why: str,
               warn: bool) -> Any:
    print_log(f'checkpoint {filename!r}: full unpickling ({why})',
              logger='current', level=30 if warn else 20)
    return torch.load(filename, map_location=map_location, weights_only=False)


def load_local_checkpoint(filename: str,
                          map_location: Optional[Any] = None) -> Any:
    """Load a local checkpoint, safely unless it is the run's own."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if is_run_checkpoint(filename):
        # Read once: a run's checkpoint holds its log state, which a
        # weights_only attempt would only reject after reading the weights.
        return _full_load(filename, map_location, 'a run\'s own file',
                          warn=False)
    try:
        return torch_load_weights(filename, map_location)
    except pickle.UnpicklingError as e:
        if not _needs_globals(e):  # not a checkpoint, or a corrupt one
            raise pickle.UnpicklingError(
                f'{filename} is not a readable torch checkpoint '
                f'({_detail(e)})') from e
        if os.environ.get(UNSAFE_ENV) == '1':
            return _full_load(filename, map_location, f'{UNSAFE_ENV}=1',
                              warn=True)
        raise _refuse(filename, e) from e


def _detail(err: Exception) -> str:
    """torch's reason without its generic weights_only advice."""
    text = str(err)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _needs_globals(err: Exception) -> bool:
    """True if torch refused the file for the objects it would build
    (not because it is no pickle at all)."""
    return 'unsupported global' in str(err).lower()


def _download(filename: str, map_location: Optional[Any],
              model_dir: Optional[str], progress: bool) -> Any:
    try:
        with torch.serialization.safe_globals(data_globals()):
            return torch.hub.load_state_dict_from_url(
                filename, model_dir=model_dir, map_location=map_location,
                progress=progress, weights_only=True)
    except pickle.UnpicklingError as e:
        if os.environ.get(UNSAFE_ENV) != '1':
            raise _refuse(filename, e) from e
        print_log(f'checkpoint {filename!r}: full unpickling '
                  f'({UNSAFE_ENV}=1)', logger='current', level=30)
        return torch.hub.load_state_dict_from_url(
            filename, model_dir=model_dir, map_location=map_location,
            progress=progress, weights_only=False)


def load_http_checkpoint(filename: str,
                         map_location: Optional[Any] = None,
                         model_dir: Optional[str] = None,
                         progress: bool = False) -> Any:
    """Download (rank 0 first) and load a checkpoint with
    ``weights_only=True`` (full unpickling only with the opt-in)."""
    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = _download(filename, map_location, model_dir, progress)
    if world_size > 1:
        barrier()
        if rank > 0:
            checkpoint = _download(filename, map_location, model_dir,
                                   progress)
    return checkpoint


CheckpointLoader.register_scheme(prefixes='', force=True)(
    load_local_checkpoint)
CheckpointLoader.register_scheme(
    prefixes=('http://', 'https://'), force=True)(
        load_http_checkpoint)
