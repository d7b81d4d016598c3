"""Build losses and connectors from the visionkd registry (clear errors)."""
import difflib
import inspect
import typing
from typing import Any, Iterator, Sequence, Tuple

import torch.nn as nn

from visionkd.registry import MODELS

__all__ = ['build_registered', 'check_arg_types', 'term_loss_cfgs']


def term_loss_cfgs(term_cfg: dict) -> Iterator[Tuple[str, dict]]:
    """``(name, loss config)`` of each loss config of a term config.

    A term keeps its losses under keys that start with ``loss`` (``loss``,
    ``loss_cls``, ...), each a dict or a list of dicts; the name is the key
    for a dict and ``key.i`` for the ``i``-th dict of a list.
    """
    for key, value in term_cfg.items():
        if not key.startswith('loss'):
            continue
        subs = value if isinstance(value, (list, tuple)) else [value]
        for i, sub in enumerate(subs):
            if isinstance(sub, dict):
                yield (key if len(subs) == 1 else f'{key}.{i}'), sub


def build_registered(cfg: dict, what: str, **defaults) -> nn.Module:
    """Build ``cfg`` from the visionkd registry with clear errors.

    Args:
        cfg: Config dict with ``type``.
        what: Description used in error messages (e.g. "loss of term 'fpn'").
        **defaults: Arguments filled in only if the class accepts them and
            the config does not set them (channel counts read off layers).
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'{what} must be a dict with a `type`, got {cfg!r}')
    cfg = dict(cfg)
    obj_type = cfg.pop('type')
    cls = obj_type if inspect.isclass(obj_type) else MODELS.get(obj_type)
    if cls is None:
        names = sorted(MODELS.module_dict)
        close = difflib.get_close_matches(
            str(obj_type).split('.')[-1], names, n=5, cutoff=0.4)
        raise KeyError(f'{what}: unknown type {obj_type!r} in the visionkd '
                       f'registry. Close names: {close or names}')
    params = inspect.signature(cls.__init__).parameters
    for key, value in defaults.items():
        if key in params and key not in cfg and value is not None:
            cfg[key] = value
    check_arg_types(cls, cfg, what)
    try:
        return cls(**cfg)
    except (TypeError, ValueError) as e:
        raise type(e)(f'{what} ({cls.__name__}) could not be built from '
                      f'{cfg}: {e}') from e


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a simple type hint (unknown hints: True)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (
            list, tuple):
        return isinstance(value, (list, tuple))
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True


def check_arg_types(cls: type, cfg: dict, what: str) -> None:
    """Raise ``TypeError`` for an argument that contradicts its hint.

    Catches e.g. ``tau='2'`` or ``gather='no'`` at build time instead of a
    silent conversion or an error deep inside the first iteration.
    """
    params = inspect.signature(cls.__init__).parameters
    if any(k not in params for k in cfg):
        return  # the constructor reports the unexpected argument itself
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: nothing to check
        return
    for key, value in cfg.items():
        hint = hints.get(key)
        if hint is not None and not _type_ok(value, hint):
            name = getattr(hint, '__name__', None) or str(hint).replace(
                'typing.', '')
            raise TypeError(
                f'{what} ({cls.__name__}): argument {key}={value!r} has '
                f'type {type(value).__name__}, expected {name}; fix the '
                f'value in the config (see the {cls.__name__} docstring)')
