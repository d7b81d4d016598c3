"""visionkd: knowledge distillation for mmdet 3.x and mmseg 1.x.

``import visionkd`` registers every distiller, connector, loss and hook in
the ``visionkd`` registry scope and makes mmengine load checkpoints with
torch >= 2.6 (see :mod:`visionkd.utils.checkpoint`).
"""
from . import engine, models, utils  # noqa: F401
from .registry import HOOKS, MODELS
from .version import __version__

__all__ = ['HOOKS', 'MODELS', '__version__']
