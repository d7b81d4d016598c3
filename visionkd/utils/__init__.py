"""Utilities: checkpoint loading, model-spec resolution, config scope."""
from .checkpoint import load_http_checkpoint, load_local_checkpoint
from .config_scope import config_root, register_config_scope, resolve_config
from .model_spec import config_path, merge_cfg, resolve_model_cfg
from .op_count import count_aten_calls

__all__ = [
    'config_path', 'config_root', 'count_aten_calls', 'register_config_scope',
    'resolve_config',
    'load_http_checkpoint', 'load_local_checkpoint',
    'merge_cfg',
    'resolve_model_cfg'
]
