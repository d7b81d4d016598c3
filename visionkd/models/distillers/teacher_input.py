"""A teacher's batch at its own input scale (``input=dict(scale_factor)``).

A high-resolution teacher distilling a low-resolution edge student sees the
student's batch resized by ``scale_factor`` (bilinear, the batch is already
normalised, so resizing commutes with normalisation). Its data samples are
scaled with it, so that a teacher's forward that reads image metas (an RPN
clipping proposals to ``img_shape``) or ground truth (an online teacher's
task loss) sees consistent values: ``img_shape``, ``pad_shape``,
``batch_input_shape`` and ``scale_factor`` in the metainfo, the boxes of
``gt_instances`` (and ``ignored_instances``), and ``gt_sem_seg`` (nearest
neighbour). Feature and logit terms then compare maps of different sizes:
the teacher's map is resized to the student's (see
:mod:`visionkd.models.connectors.inference`).

The scaled size is rounded to a multiple of the teacher's input divisor
(:func:`input_divisor`: its preprocessor's ``pad_size_divisor`` /
``size_divisor``, or the ``size_divisor`` of its test-time padding), as
the teacher's own preprocessor would pad: DDRNet adds its stride-8 branch
to maps of (h // 8, w // 8) and fails on a 1.5x batch of 270 rows. The
boxes and metas follow the size actually used.
"""
import copy
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['input_divisor', 'scaled_size', 'scale_inputs',
           'scale_data_samples']

_SHAPE_KEYS = ('img_shape', 'pad_shape', 'batch_input_shape')


def input_divisor(model: nn.Module) -> int:
    """The multiple a model's inputs are padded to (1 if none): mmdet's
    ``pad_size_divisor``, mmseg's ``size_divisor`` or its
    ``test_cfg['size_divisor']``, whichever is largest."""
    dp = getattr(model, 'data_preprocessor', None)
    test_cfg = getattr(dp, 'test_cfg', None) or {}
    found = [getattr(dp, 'pad_size_divisor', None),
             getattr(dp, 'size_divisor', None),
             test_cfg.get('size_divisor') if isinstance(test_cfg, dict)
             else None]
    return max([int(d) for d in found if d] + [1])


def scaled_size(size: Tuple[int, int], factor: float,
                divisor: int = 1) -> Tuple[int, int]:
    """(H, W) times ``factor``, rounded to the nearest multiple of
    ``divisor`` (at least ``divisor``)."""
    return tuple(max(1, int(round(s * factor / divisor))) * divisor
                 for s in size)


def scale_inputs(inputs: torch.Tensor, factor: float,
                 divisor: int = 1) -> torch.Tensor:
    """The batch (N, C, H, W) resized by ``factor`` (bilinear, antialiased
    when shrinking) to a multiple of ``divisor``; the batch itself when
    ``factor`` is 1."""
    if factor == 1.0:
        return inputs
    size = scaled_size(tuple(inputs.shape[-2:]), factor, divisor)
    return F.interpolate(inputs, size=size, mode='bilinear',
                         align_corners=False, antialias=factor < 1.0)


def _scale_meta(sample, fy: float, fx: float) -> None:
    meta = {}
    for key in _SHAPE_KEYS:
        shape = sample.metainfo.get(key)
        if shape is not None:
            meta[key] = (int(round(shape[0] * fy)), int(round(shape[1] * fx)))
    scale = sample.metainfo.get('scale_factor')
    if scale is not None:
        meta['scale_factor'] = (scale[0] * fx, scale[1] * fy)
    sample.set_metainfo(meta)


def _scale_boxes(instances, fx: float, fy: float) -> None:
    boxes = getattr(instances, 'bboxes', None)
    if isinstance(boxes, torch.Tensor):
        instances.bboxes = boxes * boxes.new_tensor([fx, fy, fx, fy])
    elif boxes is not None:  # an mmdet BaseBoxes
        boxes.rescale_([fx, fy])


def _scale_sem_seg(sample, size: Tuple[int, int]) -> None:
    seg = sample.gt_sem_seg
    data = seg.data
    resized = F.interpolate(data[None].float(), size=size,
                            mode='nearest')[0].to(data.dtype)
    sample.gt_sem_seg = type(seg)(data=resized, metainfo=seg.metainfo)


def scale_data_samples(samples: Optional[list], factor: float,
                       input_size: Tuple[int, int],
                       divisor: int = 1) -> Optional[list]:
    """Copies of the batch's data samples for a teacher at ``factor``.

    Args:
        samples: The student's data samples (mmdet ``DetDataSample`` /
            mmseg ``SegDataSample``), or None.
        factor: The teacher's input scale.
        input_size: (H, W) of the student's batch (the padded input).
        divisor: The teacher's input divisor (as :func:`scale_inputs`).

    Returns:
        New samples (the given ones are not changed), or ``samples`` itself
        when ``factor`` is 1 or there are none.
    """
    if factor == 1.0 or not samples:
        return samples
    h, w = input_size
    new_h, new_w = scaled_size((h, w), factor, divisor)
    fy, fx = new_h / h, new_w / w
    out: List = []
    for sample in samples:
        sample = copy.deepcopy(sample)
        _scale_meta(sample, fy, fx)
        for field in ('gt_instances', 'ignored_instances'):
            if hasattr(sample, field):
                _scale_boxes(getattr(sample, field), fx, fy)
        if hasattr(sample, 'gt_sem_seg'):
            seg_h, seg_w = sample.gt_sem_seg.data.shape[-2:]
            _scale_sem_seg(sample, (max(1, int(round(seg_h * fy))),
                                    max(1, int(round(seg_w * fx)))))
        out.append(sample)
    return out
