"""Helpers shared by the segmentation distillation losses."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ['check_same_size', 'stack_seg_labels']


def check_same_size(preds_S: torch.Tensor, preds_T: torch.Tensor,
                    name: str) -> None:
    """Raise unless student and teacher are (N, C, H, W) maps of one size.

    Losses do not resize: ``connector=dict(type='ResizeConnector')`` in the
    distillation term resizes the student to the teacher (bilinear,
    ``align_corners=False``, what the losses used to do inside).

    Args:
        preds_S: Student map, shape (N, C_s, H, W).
        preds_T: Teacher map, shape (N, C_t, H, W).
        name: Loss name for the error message.
    """
    if preds_S.dim() != 4 or preds_T.dim() != 4:
        raise ValueError(f'{name} expects (N, C, H, W) maps, got student '
                         f'{tuple(preds_S.shape)} and teacher '
                         f'{tuple(preds_T.shape)}')
    if preds_S.shape[0] != preds_T.shape[0]:
        raise ValueError(f'{name}: student batch {preds_S.shape[0]} != '
                         f'teacher batch {preds_T.shape[0]}')
    if preds_S.shape[2:] != preds_T.shape[2:]:
        raise ValueError(
            f'{name} needs maps of the same (H, W), got student '
            f'{tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)}; '
            f"add connector=dict(type='ResizeConnector') to the "
            f'distillation term')


def _label_data(index: int, sample) -> torch.Tensor:
    """Label map of one data sample, (1, H, W) or (H, W), unconverted."""
    gt = getattr(sample, 'gt_sem_seg', None)
    data = getattr(gt, 'data', None)
    if data is None:
        raise ValueError(f'data sample {index} has no gt_sem_seg.data')
    if not isinstance(data, torch.Tensor):
        data = torch.as_tensor(data)
    if not (data.dim() == 2 or (data.dim() == 3 and data.shape[0] == 1)):
        raise ValueError(f'gt_sem_seg.data of sample {index} must have '
                         f'shape (1, H, W), got {tuple(data.shape)}')
    return data


def _resize_nearest(labels: torch.Tensor,
                    size: Sequence[int]) -> torch.Tensor:
    """(N, H, W) labels resized (legacy nearest) to (N, h, w), long."""
    out = F.interpolate(labels[:, None].float(), size=tuple(size),
                        mode='nearest')
    return out[:, 0].long()


def stack_seg_labels(data_samples: Optional[Sequence],
                     size: Sequence[int],
                     device: Optional[torch.device] = None,
                     batch_size: Optional[int] = None) -> torch.Tensor:
    """Label maps of ``data_samples`` resized (nearest) to ``size``.

    Label maps of different sizes are accepted (each is then resized on its
    own). Maps of one shape, dtype and device, the usual case, are stacked
    first and resized together, so the number of tensor operations does
    not depend on the batch size; nearest resizing maps every output pixel
    to one input pixel, so both ways give the same labels. Nearest resizing
    is PyTorch's legacy ``'nearest'`` mode, the
    ``nn.Upsample(mode='nearest')`` the official IFVD/CIRKD code uses.

    Args:
        data_samples: mmseg ``SegDataSample`` s (or any objects with
            ``gt_sem_seg.data`` of shape (1, H, W) or (H, W)).
        size: Target (h, w), normally the feature size.
        device: Device of the result. Defaults to the labels' device.
        batch_size: If given, the number of samples must equal it.

    Returns:
        Long tensor of shape (N, h, w).
    """
    if data_samples is None:
        raise ValueError('this loss needs data_samples with gt_sem_seg')
    if batch_size is not None and len(data_samples) != batch_size:
        raise ValueError(f'got {len(data_samples)} data samples for a batch '
                         f'of {batch_size} feature maps')
    datas = [_label_data(i, s) for i, s in enumerate(data_samples)]
    first = datas[0] if datas else None
    if first is not None and all(
            d.shape == first.shape and d.dtype == first.dtype
            and d.device == first.device for d in datas):
        batch = torch.cat(datas) if first.dim() == 3 else torch.stack(datas)
        out = _resize_nearest(batch, size)
    else:
        out = torch.stack([
            _resize_nearest(d.reshape(1, *d.shape[-2:]), size)[0]
            for d in datas])
    return out if device is None else out.to(device)
