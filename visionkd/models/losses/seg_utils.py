"""Helpers shared by the segmentation distillation losses."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['align_spatial', 'stack_seg_labels']


def align_spatial(preds_S: torch.Tensor,
                  preds_T: torch.Tensor,
                  resize_stu: bool = True
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Give student and teacher maps the same spatial size.

    Args:
        preds_S: Student map, shape (N, C_s, H_s, W_s).
        preds_T: Teacher map, shape (N, C_t, H_t, W_t).
        resize_stu: Resize the student to the teacher's size (True) or the
            teacher to the student's (False); bilinear, ``align_corners``
            False (mmseg's ``resize`` default).

    Returns:
        The two maps, now of equal (H, W).
    """
    if preds_S.dim() != 4 or preds_T.dim() != 4:
        raise ValueError(f'expected (N, C, H, W) maps, got student '
                         f'{tuple(preds_S.shape)} and teacher '
                         f'{tuple(preds_T.shape)}')
    if preds_S.shape[0] != preds_T.shape[0]:
        raise ValueError(f'student batch {preds_S.shape[0]} != teacher '
                         f'batch {preds_T.shape[0]}')
    if preds_S.shape[2:] != preds_T.shape[2:]:
        if resize_stu:
            preds_S = F.interpolate(
                preds_S, preds_T.shape[2:], mode='bilinear',
                align_corners=False)
        else:
            preds_T = F.interpolate(
                preds_T, preds_S.shape[2:], mode='bilinear',
                align_corners=False)
    return preds_S, preds_T


def stack_seg_labels(data_samples: Optional[Sequence],
                     size: Sequence[int],
                     device: Optional[torch.device] = None,
                     batch_size: Optional[int] = None) -> torch.Tensor:
    """Label maps of ``data_samples`` resized (nearest) to ``size``.

    Each sample is resized on its own, so label maps of different sizes are
    accepted. Nearest resizing is PyTorch's legacy ``'nearest'`` mode, the
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
    labels = []
    for i, sample in enumerate(data_samples):
        gt = getattr(sample, 'gt_sem_seg', None)
        data = getattr(gt, 'data', None)
        if data is None:
            raise ValueError(f'data sample {i} has no gt_sem_seg.data')
        data = torch.as_tensor(data)
        if data.dim() == 2:
            data = data[None]
        if data.dim() != 3 or data.shape[0] != 1:
            raise ValueError(f'gt_sem_seg.data of sample {i} must have shape'
                             f' (1, H, W), got {tuple(data.shape)}')
        data = F.interpolate(
            data[None].float(), size=tuple(size), mode='nearest')
        labels.append(data[0, 0].long())
    out = torch.stack(labels)
    return out if device is None else out.to(device)
