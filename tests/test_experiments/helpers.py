"""Shared helpers of the runner's tests."""
from typing import Any, Iterator, Tuple

import torch

__all__ = ['walk_config', 'seg_batch']


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


def seg_batch(crop: Tuple[int, int], n: int = 2,
              num_classes: int = 11) -> dict:
    """A seeded segmentation batch of ``n`` images of ``crop`` (h, w):
    random pixels and labels, as a dataloader yields it."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = crop
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, num_classes, (1, h, w), generator=g))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=[torch.rand(3, h, w, generator=g) * 255
                        for _ in range(n)], data_samples=samples)
