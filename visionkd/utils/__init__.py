"""Utilities: checkpoint loading and model-spec resolution."""
from .checkpoint import load_http_checkpoint, load_local_checkpoint
from .model_spec import config_path, merge_cfg, resolve_model_cfg

__all__ = [
    'config_path', 'load_http_checkpoint', 'load_local_checkpoint',
    'merge_cfg',
    'resolve_model_cfg'
]
