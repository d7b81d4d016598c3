"""Intra-class Feature Variation Distillation (IFVD)."""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .seg_utils import check_same_size, stack_seg_labels

__all__ = ['IFVDLoss']


@MODELS.register_module()
class IFVDLoss(nn.Module):
    """Intra-class feature variation distillation.

    *Intra-class Feature Variation Distillation for Semantic Segmentation*
    (Wang et al., ECCV 2020), as the official ``CriterionIFV``
    (YukangWang/IFVD, ``utils/criterion.py``):

    1. The label map is resized (nearest) to the feature size.
    2. For each image and each class ``k`` present, the prototype is the
       masked mean ``sum_{p in k} f_p / (|k| + 1e-6)`` (the official
       ``1e-6``), computed for student and teacher separately.
    3. Each pixel's cosine similarity to its class prototype
       (``F.cosine_similarity``, ``eps=1e-8``) gives the IFV map, (N, H, W).
    4. ``loss = sum((ifv_S - ifv_T)^2) / (N * H * W)``.

    Pixels labelled ``ignore_index`` (or outside ``[0, num_classes)``) are
    excluded from the prototypes and contribute 0 to the sum but are still
    counted in the ``N * H * W`` denominator, which is what the official
    code does (there such a pixel's "prototype" is the pixel itself, so both
    maps are 1 and the difference vanishes). An all-ignore batch gives 0.
    The gradient also flows through the student prototypes, as officially.
    The prototypes of all images and classes come from one ``scatter_add``
    and the label maps are resized together, so the number of operator
    calls depends neither on the batch size nor on the classes present.

    Only (N, H, W) similarity maps are compared, so student and teacher may
    have different channel counts. Spatial sizes must be equal; add
    ``connector=dict(type='ResizeConnector')`` to the distillation term
    otherwise.

    Args:
        num_classes: Number of classes.
        ignore_index: Label to ignore. Defaults to 255.
        loss_weight: Weight of the loss. Defaults to 1.0.
    """

    #: Channels may differ: only per-pixel similarity maps are compared.
    allow_channel_mismatch = True

    #: Ground truth this loss reads from every data sample.
    gt_field = 'gt_sem_seg'

    def __init__(self,
                 num_classes: int,
                 ignore_index: int = 255,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.loss_weight = float(loss_weight)

    def valid_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Pixels that belong to a class: in range and not ignored."""
        return ((labels >= 0) & (labels < self.num_classes)
                & (labels != self.ignore_index))

    def prototype_similarity(self, feat: torch.Tensor,
                             labels: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each pixel to its class prototype.

        Args:
            feat: Feature, shape (N, C, H, W).
            labels: Labels at the feature size, shape (N, H, W).

        Returns:
            Similarity map of shape (N, H, W); 0 at invalid pixels.
        """
        N, C, H, W = feat.shape
        K = self.num_classes
        valid = self.valid_mask(labels).flatten(1)  # (N, P)
        # Invalid pixels go to an extra bucket K that is never used.
        index = torch.where(valid, labels.flatten(1), K)  # (N, P)
        pixels = feat.flatten(2).transpose(1, 2)  # (N, P, C)
        gather_index = index[..., None].expand(-1, -1, C)
        sums = pixels.new_zeros(N, K + 1, C).scatter_add(
            1, gather_index, pixels)
        counts = pixels.new_zeros(N, K + 1).scatter_add(
            1, index, pixels.new_ones(index.shape))
        protos = sums / (counts[..., None] + 1e-6)
        centers = protos.gather(1, gather_index)  # (N, P, C)
        sim = F.cosine_similarity(pixels, centers, dim=2, eps=1e-8)
        return (sim * valid).reshape(N, H, W)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                data_samples: Sequence) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C_s, H, W).
            preds_T: Teacher feature, shape (N, C_t, H, W).
            data_samples: N mmseg ``SegDataSample`` s with ``gt_sem_seg``
                (label map (1, H, W), any size: resized (nearest) to the
                feature size).

        Returns:
            Scalar loss.
        """
        check_same_size(preds_S, preds_T, 'IFVDLoss')
        N, _, H, W = preds_T.shape
        labels = stack_seg_labels(
            data_samples, (H, W), preds_T.device, batch_size=N)
        sim_S = self.prototype_similarity(preds_S, labels)
        sim_T = self.prototype_similarity(preds_T, labels)
        loss = (sim_S - sim_T).pow(2).sum() / (N * H * W)
        return self.loss_weight * loss
