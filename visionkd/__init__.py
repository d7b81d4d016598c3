"""visionkd: knowledge distillation for mmdet 3.x and mmseg 1.x.

``import visionkd`` registers every distiller, connector, loss and hook in
the ``visionkd`` registry scope, makes mmengine load checkpoints with
torch >= 2.6 (see :mod:`visionkd.utils.checkpoint`) and lets configs inherit
``visionkd::<path under configs/>`` (see :mod:`visionkd.utils.config_scope`).
"""
from . import engine, models, utils  # noqa: F401
from .registry import HOOKS, MODELS
from .utils.config_scope import register_config_scope
from .version import __version__

register_config_scope()

__all__ = ['HOOKS', 'MODELS', '__version__']
