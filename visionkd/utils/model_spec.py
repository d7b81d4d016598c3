"""Turn a teacher/student specification into a model config dict."""
import copy
import os.path as osp
from typing import Any, Union

from mmengine.config import Config, ConfigDict

from .config_scope import SCOPE, resolve_config

__all__ = ['resolve_model_cfg', 'merge_cfg', 'config_path',
           'without_pretrained_init']


def config_path(ref: str) -> str:
    """File path of a config reference.

    ``'mmdet::faster_rcnn/x.py'`` becomes the file inside the installed
    package's ``.mim/configs`` (``visionkd::`` refs: see
    :func:`~visionkd.utils.config_scope.resolve_config`); anything else is
    returned unchanged.
    """
    if '::' not in ref:
        return ref
    package, rel = ref.split('::', 1)
    if package == SCOPE:
        return resolve_config(ref)
    from mmengine.utils import get_installed_path, is_installed
    if not is_installed(package):
        raise FileNotFoundError(f'config {ref!r}: package {package!r} is '
                                f'not installed')
    return osp.join(get_installed_path(package), '.mim', 'configs', rel)


def merge_cfg(base: dict, overrides: dict) -> dict:
    """Recursively merge ``overrides`` into a copy of ``base``.

    Follows mmengine's config inheritance: a dict with ``_delete_=True``
    replaces the base entry instead of being merged into it.
    """
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, dict):
            value = dict(value)
            if value.pop('_delete_', False) or not isinstance(
                    out.get(key), dict):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge_cfg(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_model_cfg(spec: Union[str, dict], default_scope: str,
                      role: str) -> ConfigDict:
    """Resolve a model specification into a buildable model config.

    Args:
        spec: One of
            - a config reference ``'mmdet::faster_rcnn/xxx.py'``,
              ``'mmseg::...'`` or a local ``.py`` file: its ``model`` is used;
            - ``dict(config=<reference>, **overrides)``: that model with the
              overrides merged in (mmengine semantics, ``_delete_`` works);
            - an inline model dict with ``type``.
        default_scope: Registry scope used when the spec names none
            (``'mmdet'`` or ``'mmseg'``).
        role: ``'student'`` or ``'teacher'``, for error messages.

    Returns:
        A ConfigDict with ``type`` and ``_scope_``.
    """
    if isinstance(spec, str):
        spec = dict(config=spec)
    if not isinstance(spec, dict):
        raise TypeError(f'{role} must be a config path or a model dict, got '
                        f'{type(spec).__name__}')
    spec = dict(spec)
    scope = default_scope
    ref = spec.pop('config', None)
    if ref is not None:
        if '::' in ref and ref.split('::', 1)[0] != SCOPE:
            scope = ref.split('::', 1)[0]
        try:
            ref_cfg = Config.fromfile(config_path(ref))
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'{role} config {ref!r} was not found: {e}') from e
        except Exception as e:  # a syntax error, a bad _base_ ...
            raise ValueError(
                f'{role} config {ref!r} could not be read: {e}') from e
        if 'model' not in ref_cfg:
            raise ValueError(f'{role} config {ref!r} defines no `model`')
        base = ref_cfg.model.to_dict() if isinstance(
            ref_cfg.model, ConfigDict) else dict(ref_cfg.model)
        cfg = merge_cfg(base, spec)
    else:
        cfg = spec.to_dict() if isinstance(spec, ConfigDict) else spec
        cfg = copy.deepcopy(cfg)
    if 'type' not in cfg:
        raise ValueError(f'{role} model dict has no `type`; give an inline '
                         f'model dict or `config=<path or mmdet::ref>`')
    cfg.setdefault('_scope_', scope)
    # mmdet/mmseg models read nested configs by attribute (train_cfg.rpn)
    return ConfigDict(cfg)


def without_teacher_weights(model_cfg) -> None:
    """Set every teacher checkpoint of a distiller config to None, in place.

    ``teacher_ckpt`` of the one-teacher form and ``ckpt`` of each entry of
    ``teachers``: the model builds with random teacher weights and nothing
    is read or downloaded (tests, benchmarks, dry runs).

    Args:
        model_cfg: The ``model`` dict (or ``ConfigDict``) of a distiller
            config.
    """
    teachers = model_cfg.get('teachers')
    if teachers:
        for entry in teachers.values():
            if isinstance(entry, dict) and 'model' in entry:
                entry['ckpt'] = None
    else:
        model_cfg['teacher_ckpt'] = None


def without_pretrained_init(init_cfg: Any) -> Any:
    """An ``init_cfg`` less its ``type='Pretrained'`` entries: a list keeps
    the others (None if none is left), a Pretrained dict becomes None,
    anything else is returned unchanged."""
    def pretrained(c: Any) -> bool:
        return isinstance(c, dict) and c.get('type') == 'Pretrained'

    if isinstance(init_cfg, (list, tuple)):
        return [c for c in init_cfg if not pretrained(c)] or None
    return None if pretrained(init_cfg) else init_cfg
