"""Shared helpers of the runner's tests."""
from typing import Any, Iterator, Tuple

__all__ = ['walk_config']


def walk_config(cfg: Any, path: str = '') -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) of every leaf and dict of a nested config;
    list items are keyed by their index."""
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            yield f'{path}{k}', v
            yield from walk_config(v, f'{path}{k}.')
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg):
            yield from walk_config(v, f'{path}{i}.')
