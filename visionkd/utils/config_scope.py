"""The ``visionkd::`` config scope: inherit visionkd configs from anywhere.

Like ``mmdet::`` and ``mmseg::``, a config of another project can inherit a
visionkd config::

    _base_ = ['visionkd::kd/faster_rcnn_r101_to_r18.py']

The path after ``visionkd::`` is relative to visionkd's ``configs/``
folder. Where that folder is comes from the *imported* visionkd package:

* an installed wheel / ``pip install .``: ``visionkd/.mim/configs`` inside
  the package (``setup.py`` copies ``configs/`` there, as mmdet does);
* a source checkout (``pip install -e .``, or ``PYTHONPATH``): the
  ``configs/`` folder next to the ``visionkd`` package.

mmengine only knows the scopes of its ``MODULE2PACKAGE`` table, and looks
packages up through their pip distribution, which for an editable install
does not lead to the sources. :func:`register_config_scope`, run by
``import visionkd``, therefore adds ``visionkd`` to that table and resolves
``visionkd::`` paths itself (every other scope is left to mmengine). The
config that names ``visionkd::`` in ``_base_`` must be parsed after
``import visionkd``: visionkd's ``tools/train.py`` and ``tools/test.py``
import it first; for mmdet's/mmseg's own tools see ``docs/plugin.md``.
"""
import os
import os.path as osp
from typing import Optional, Tuple

__all__ = ['SCOPE', 'config_root', 'resolve_config', 'register_config_scope']

#: The scope name before ``::``.
SCOPE = 'visionkd'
_PREFIX = SCOPE + '::'


def config_root() -> str:
    """Folder of visionkd's configs for the imported package.

    Returns:
        ``<package>/.mim/configs`` if present (installed wheel), else the
        ``configs`` folder beside the package (source checkout).

    Raises:
        FileNotFoundError: Neither exists (an install without configs).
    """
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    candidates = [
        osp.join(package, '.mim', 'configs'),
        osp.join(osp.dirname(package), 'configs'),
    ]
    for path in candidates:
        if osp.isdir(osp.join(path, 'kd')):
            return path
    raise FileNotFoundError(
        f'visionkd configs not found in {candidates}: reinstall visionkd '
        f'(pip install .) so that its configs are installed with it')


def resolve_config(ref: str) -> str:
    """File of a ``visionkd::<relative path>`` reference.

    Args:
        ref: E.g. ``'visionkd::kd/faster_rcnn_r101_to_r18.py'``.

    Returns:
        The absolute path of the config file.

    Raises:
        ValueError: ``ref`` does not start with ``visionkd::``.
        FileNotFoundError: No such config (lists the folder's configs).
    """
    if not ref.startswith(_PREFIX):
        raise ValueError(f'{ref!r} is not a {_PREFIX} reference')
    root = config_root()
    rel = ref[len(_PREFIX):]
    path = osp.join(root, rel)
    if not osp.isfile(path):
        folder = osp.join(root, osp.dirname(rel))
        known = sorted(f for f in (
            os.listdir(folder) if osp.isdir(folder) else [])
            if f.endswith('.py'))
        raise FileNotFoundError(
            f'config {ref!r} does not exist ({path}); configs in '
            f'{_PREFIX}{osp.dirname(rel) or "."}: {known}')
    return path


def register_config_scope() -> None:
    """Make ``visionkd::`` usable in configs (idempotent).

    Adds ``visionkd`` to mmengine's ``MODULE2PACKAGE`` and wraps
    ``mmengine.config.Config._get_cfg_path`` (which resolves ``_base_``
    entries) so that ``visionkd::`` paths go to :func:`resolve_config`.
    The base is then read like a local file: its own ``mmdet::`` /
    ``mmseg::`` bases keep their scopes, its ``visionkd.`` types are
    prefixed, and dataset types resolve in the config's ``default_scope``.
    """
    from mmengine.config import Config
    from mmengine.config.utils import MODULE2PACKAGE

    MODULE2PACKAGE.setdefault(SCOPE, SCOPE)
    current = Config.__dict__['_get_cfg_path']
    original = getattr(current, '__func__', current)
    if getattr(original, '_visionkd_scope', False):
        return

    def _get_cfg_path(cfg_path: str,
                      filename: str) -> Tuple[str, Optional[str]]:
        if cfg_path.startswith(_PREFIX):
            return resolve_config(cfg_path), None
        return original(cfg_path, filename)

    _get_cfg_path._visionkd_scope = True  # type: ignore[attr-defined]
    _get_cfg_path.__doc__ = original.__doc__
    Config._get_cfg_path = staticmethod(_get_cfg_path)
