"""Ground-truth helpers shared by the GT-driven detection losses.

The losses receive the batch's mmdet ``DetDataSample`` list; any object with
``gt_instances.bboxes`` (an (n, 4) xyxy tensor, or an mmdet ``BaseBoxes``
such as ``HorizontalBoxes``) and a ``metainfo`` dict works. Boxes are in
pixels of the padded batch input, whose size is
``metainfo['batch_input_shape']`` (``pad_shape`` is used if it is absent).
"""
import math
from typing import Sequence, Tuple

import torch

__all__ = [
    'gt_bboxes_of', 'batch_input_hw', 'check_samples', 'check_level_inputs',
    'infer_stride', 'padded_gt_bboxes'
]


def gt_bboxes_of(sample, device: torch.device) -> torch.Tensor:
    """GT boxes of one data sample as an (n, 4) float32 xyxy tensor.

    Args:
        sample: A ``DetDataSample``-like object with ``gt_instances.bboxes``.
        device: Device of the returned tensor.

    Returns:
        Tensor of shape (n, 4), ``n`` may be 0.
    """
    boxes = sample.gt_instances.bboxes
    boxes = getattr(boxes, 'tensor', boxes)  # mmdet BaseBoxes
    if not isinstance(boxes, torch.Tensor):
        boxes = torch.as_tensor(boxes)
    return boxes.reshape(-1, 4).to(device=device, dtype=torch.float32)


def padded_gt_bboxes(data_samples: Sequence, device: torch.device
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GT boxes of a whole batch as one padded tensor.

    Lets a loss build its masks for every image and box with one set of
    tensor operations (no Python loop over images or boxes in its math).

    Args:
        data_samples: One ``DetDataSample``-like object per image.
        device: Device of the returned tensors.

    Returns:
        ``(boxes, valid, input_hw)``: boxes (N, M, 4) float32 xyxy with
        ``M = max(1, most boxes of an image)``, padding rows zero;
        valid (N, M) bool, True for real boxes; input_hw (N, 2) float32,
        the (H_in, W_in) of the padded batch input each image's boxes
        refer to.
    """
    raw = []
    for sample in data_samples:  # gathering the inputs, no per-image math
        b = sample.gt_instances.bboxes
        b = getattr(b, 'tensor', b)  # mmdet BaseBoxes
        raw.append(b if isinstance(b, torch.Tensor) else torch.as_tensor(b))
    counts = [b.numel() // 4 for b in raw]
    num_img, num = len(raw), max([1] + counts)
    boxes = torch.zeros(num_img * num, 4, device=device)
    present = [b for b, n in zip(raw, counts) if n]
    if present:
        rows = [i * num + j for i, n in enumerate(counts) for j in range(n)]
        flat = torch.cat(present).reshape(-1, 4)
        boxes[torch.tensor(rows, device=device)] = flat.to(
            device=device, dtype=torch.float32)
    boxes = boxes.reshape(num_img, num, 4)
    valid = torch.arange(num, device=device) < torch.tensor(
        counts, device=device)[:, None]
    input_hw = torch.tensor([batch_input_hw(s) for s in data_samples],
                            device=device, dtype=torch.float32)
    return boxes, valid, input_hw.reshape(-1, 2)


def batch_input_hw(sample) -> Tuple[float, float]:
    """(H_in, W_in) of the padded batch input that the boxes refer to."""
    meta = sample.metainfo
    for key in ('batch_input_shape', 'pad_shape'):
        if key in meta and meta[key] is not None:
            h, w = meta[key][:2]
            return float(h), float(w)
    raise KeyError('data sample metainfo needs `batch_input_shape` (set by '
                   'mmdet DetDataPreprocessor) to map GT boxes onto feature '
                   f'maps; got keys {sorted(meta)}')


def check_samples(data_samples: Sequence, num_images: int,
                  name: str) -> None:
    """Raise a clear error if ``data_samples`` does not match the batch."""
    if data_samples is None or len(data_samples) != num_images:
        got = None if data_samples is None else len(data_samples)
        raise ValueError(f'{name} needs one data sample per image: batch of '
                         f'{num_images} but got {got}')


def check_level_inputs(preds_S: torch.Tensor, preds_T: torch.Tensor,
                       data_samples: Sequence, name: str) -> None:
    """Raise unless student and teacher maps share (H, W) and every image
    of the batch has its data sample."""
    if preds_S.shape[-2:] != preds_T.shape[-2:]:
        raise ValueError(f'{name} needs maps of equal size, got student '
                         f'{tuple(preds_S.shape)} and teacher '
                         f'{tuple(preds_T.shape)}')
    check_samples(data_samples, preds_T.shape[0], name)


def infer_stride(input_hw: Tuple[float, float],
                 feat_hw: Tuple[int, int]) -> int:
    """Stride of a feature map, rounded to the nearest power of two.

    ``2 ** round(log2(mean(H_in / H, W_in / W)))``: 16 for a 600x1000 input
    and a 38x63 map (``ceil`` division by 16).
    """
    ratio = (input_hw[0] / feat_hw[0] + input_hw[1] / feat_hw[1]) / 2
    return int(2**round(math.log2(ratio)))
