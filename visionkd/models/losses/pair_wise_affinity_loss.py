"""Pair-wise distillation of Structured Knowledge Distillation (SKD)."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import MODELS

from .seg_utils import check_same_size

__all__ = ['PairWiseAffinityLoss']


@MODELS.register_module()
class PairWiseAffinityLoss(nn.Module):
    """Pair-wise affinity distillation on max-pooled feature maps.

    *Structured Knowledge Distillation for Semantic Segmentation* (Liu et
    al., CVPR 2019), pair-wise term, as the official
    ``CriterionPairWiseforWholeFeatAfterPool`` / ``sim_dis_compute``
    (irfanICMLL/structure_knowledge_distillation):

    1. Both maps are max-pooled with kernel = stride =
       ``(int(H * pool_scale), int(W * pool_scale))`` (H, W of the teacher
       map), no padding, ``ceil_mode=True``; this gives ``M`` nodes.
    2. Each node's feature is divided by its L2 norm over channels plus
       ``1e-8``; as in the official code the norm is **detached** (treated
       as a constant in the backward pass: a stop-gradient of the method,
       so the student's gradient is not the derivative of the loss value).
    3. Affinity ``a_mn = f_m . f_n`` for all node pairs, shape (N, M, M).
    4. ``loss = sum((a_T - a_S)^2) / M^2 / N``, the mean over N*M*M.

    Because only M x M affinities are compared, the student and teacher may
    have different channel counts. Spatial sizes must be equal, as in the
    official code; add ``connector=dict(type='ResizeConnector')`` to the
    distillation term otherwise.

    Args:
        pool_scale: Pooling kernel as a fraction of the map size; the
            official default is 0.5 (2 x 2 nodes). Kernel sizes are at
            least 1. Defaults to 0.5.
        loss_weight: Weight of the loss (the official ``lambda_pa`` is 1.0).
            Defaults to 1.0.
    """

    #: Channels may differ: only (M x M) affinities are compared.
    allow_channel_mismatch = True

    def __init__(self,
                 pool_scale: float = 0.5,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if not 0 < pool_scale <= 1:
            raise ValueError(f'pool_scale must be in (0, 1], got '
                             f'{pool_scale}')
        self.pool_scale = float(pool_scale)
        self.loss_weight = float(loss_weight)

    def kernel_size(self, height: int, width: int) -> Tuple[int, int]:
        """Pooling kernel (= stride) for an (height, width) map."""
        return (max(1, int(height * self.pool_scale)),
                max(1, int(width * self.pool_scale)))

    def pool(self, feat: torch.Tensor, kernel: Tuple[int, int]
             ) -> torch.Tensor:
        """Max-pool (N, C, H, W) to the (N, C, h, w) graph nodes."""
        return F.max_pool2d(
            feat, kernel_size=kernel, stride=kernel, padding=0,
            ceil_mode=True)

    @staticmethod
    def similarity(feat: torch.Tensor) -> torch.Tensor:
        """Affinity of all node pairs: (N, C, h, w) -> (N, h*w, h*w)."""
        norm = feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-8
        feat = (feat / norm.detach()).flatten(2)
        return torch.einsum('icm,icn->imn', feat, feat)

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (N, C_s, H, W).
            preds_T: Teacher feature, shape (N, C_t, H, W).

        Returns:
            Scalar loss.
        """
        check_same_size(preds_S, preds_T, 'PairWiseAffinityLoss')
        kernel = self.kernel_size(*preds_T.shape[2:])
        pooled_S = self.pool(preds_S, kernel)
        pooled_T = self.pool(preds_T, kernel)
        N = pooled_T.shape[0]
        M = pooled_T.shape[-1] * pooled_T.shape[-2]
        diff = self.similarity(pooled_T) - self.similarity(pooled_S)
        loss = diff.pow(2).sum() / M**2 / N
        return self.loss_weight * loss
