"""Helpers shared by the command-line tools."""
import os.path as osp
from typing import Optional

from mmengine.config import Config


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config with a clear error for a missing or broken file."""
    if not osp.isfile(path):
        raise SystemExit(f'error: config file {path!r} does not exist')
    try:
        cfg = Config.fromfile(path)
    except Exception as e:  # syntax errors, missing _base_ ...
        raise SystemExit(
            f'error: config file {path!r} is invalid: {type(e).__name__}: '
            f'{e}; fix its Python syntax / `_base_` paths') from e
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    return cfg
