"""Registries of visionkd.

They are children of mmengine's root registries with the scope ``visionkd``.
Registering into them makes a class reachable from any OpenMMLab config as
``type='visionkd.<ClassName>'`` (after ``import visionkd`` or
``custom_imports=dict(imports=['visionkd'])``), while mmdet/mmseg classes stay
reachable from inside visionkd through their own scopes.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

__all__ = ['MODELS', 'HOOKS', 'TERM_MODES']

#: Distillers, connectors and distillation losses.
MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='visionkd',
    locations=['visionkd.models'])

#: Training hooks (distillation schedules).
HOOKS = Registry(
    'hook',
    parent=MMENGINE_HOOKS,
    scope='visionkd',
    locations=['visionkd.engine'])

#: Distillation term modes, keyed by the ``mode`` of a ``distill_terms``
#: entry (``'feature'``, ``'roi'``, ``'ld'``, ...); see
#: :class:`visionkd.models.distillers.terms.BaseDistillTerm`.
TERM_MODES = Registry(
    'distill term mode',
    scope='visionkd',
    locations=['visionkd.models.distillers.terms'])
