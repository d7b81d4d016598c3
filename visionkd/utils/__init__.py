"""Utilities: checkpoint loading, model-spec resolution, config scope."""
from .checkpoint import (
    UnsafeCheckpointError,
    is_run_checkpoint,
    load_http_checkpoint,
    load_local_checkpoint,
    torch_load_weights,
    trust_checkpoint,
)
from .config_scope import config_root, register_config_scope, resolve_config
from .model_spec import (
    config_path,
    merge_cfg,
    resolve_model_cfg,
    without_pretrained_init,
    without_teacher_weights,
)
from .op_count import count_aten_calls

__all__ = [
    'config_path', 'config_root', 'count_aten_calls', 'register_config_scope',
    'resolve_config',
    'UnsafeCheckpointError', 'is_run_checkpoint', 'load_http_checkpoint',
    'load_local_checkpoint', 'torch_load_weights', 'trust_checkpoint',
    'merge_cfg',
    'resolve_model_cfg', 'without_pretrained_init', 'without_teacher_weights'
]
