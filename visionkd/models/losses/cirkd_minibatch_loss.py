"""Mini-batch pixel-to-pixel part of Cross-Image Relational KD (CIRKD)."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_gather, get_dist_info

from visionkd.registry import MODELS

from .seg_utils import check_same_size

__all__ = ['CIRKDMiniBatchLoss']


@MODELS.register_module()
class CIRKDMiniBatchLoss(nn.Module):
    """Cross-image pixel-to-pixel relation distillation over a mini-batch.

    *Cross-Image Relational Knowledge Distillation for Semantic
    Segmentation* (Yang et al., CVPR 2022), mini-batch-based pixel-to-pixel
    term, as the official ``CriterionMiniBatchCrossImagePair``
    (winycg/CIRKD, ``losses/cirkd_mini_batch.py``):

    1. Features are L2-normalised over channels (``F.normalize``).
    2. For every ordered pair of images ``(i, j)`` of the batch (``i == j``
       included) the pixel similarity ``A_ij = f_i^T f_j / temperature``
       has shape (H*W, H*W), for student and teacher separately.
    3. ``KL(softmax(A_ij^T) || softmax(A_ij^S))`` over the last dim, with
       ``reduction='batchmean'`` (summed, divided by the H*W rows).
    4. The B*B pair terms are averaged: ``loss = sum_ij KL_ij / B^2``.

    No ``temperature^2`` factor, as officially. The official training uses
    ``temperature=0.1`` (``--contrast-temperature``) and weight 1.0
    (``--lambda-minibatch-pixel``).

    Distributed training (``gather=True``): teacher and student features of
    all processes are gathered with :func:`mmengine.dist.all_gather`, so
    the batch is the global one; the gradient reaches the local part of the
    student only (it is concatenated with the detached remote parts), as
    the official ``GatherLayer``, with the gradient scaled by world_size so
    that DDP's gradient average equals the single-process gradient of the
    global batch. Pairs of two remote images are evaluated
    without autograd. All processes must feed maps of the same shape. The
    released official code has these gather lines commented out, i.e. it
    uses the per-GPU batch only; ``gather=False`` reproduces that. Note
    that gathering multiplies the number of (H*W x H*W) similarity maps
    by up to world_size^2. Outside distributed training the local batch is
    used either way.

    Only (H*W x H*W) similarities are compared, so student and teacher may
    have different channel counts. Spatial sizes must be equal; add
    ``connector=dict(type='ResizeConnector')`` to the distillation term
    otherwise.

    Args:
        temperature: Temperature of the similarity distributions.
            Defaults to 0.1.
        loss_weight: Weight of the loss. Defaults to 1.0.
        gather: Gather the features of all processes under distributed
            training. Defaults to True.
    """

    #: Channels may differ: only pixel-pixel similarities are compared.
    allow_channel_mismatch = True

    def __init__(self,
                 temperature: float = 0.1,
                 loss_weight: float = 1.0,
                 gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature must be positive, got '
                             f'{temperature}')
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.gather = bool(gather)

    def _gather(self, feat_S: torch.Tensor, feat_T: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global batch and the mask of its local images.

        Returns:
            Student (B, C_s, P), teacher (B, C_t, P), local mask (B,).
        """
        rank, world_size = get_dist_info()
        b = feat_S.shape[0]
        if not self.gather or world_size <= 1:
            local = torch.ones(b, dtype=torch.bool)
            return feat_S, feat_T, local
        parts_S = list(all_gather(feat_S.detach()))
        parts_S[rank] = feat_S
        parts_T = all_gather(feat_T)
        local = torch.zeros(b * world_size, dtype=torch.bool)
        local[rank * b:(rank + 1) * b] = True
        return torch.cat(parts_S), torch.cat(parts_T), local

    def _pair_kl(self, s_i: torch.Tensor, S: torch.Tensor,
                 t_i: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """Sum over pairs (i, j) of the batchmean KL, for j over S/T.

        Args:
            s_i, t_i: Image i, shapes (C_s, P), (C_t, P).
            S, T: Images j, shapes (J, C_s, P), (J, C_t, P).
        """
        sim_S = torch.einsum('cp,jcq->jpq', s_i, S) / self.temperature
        sim_T = torch.einsum('cp,jcq->jpq', t_i, T) / self.temperature
        log_p_S = F.log_softmax(sim_S, dim=-1)
        log_p_T = F.log_softmax(sim_T, dim=-1)
        kl = (log_p_T.exp() * (log_p_T - log_p_S)).sum()
        return kl / s_i.shape[-1]

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            preds_S: Student feature, shape (B, C_s, H, W).
            preds_T: Teacher feature, shape (B, C_t, H, W).

        Returns:
            Scalar loss.
        """
        check_same_size(preds_S, preds_T, 'CIRKDMiniBatchLoss')
        feat_S = F.normalize(preds_S, p=2, dim=1).flatten(2)
        feat_T = F.normalize(preds_T, p=2, dim=1).flatten(2)
        feat_S, feat_T, local = self._gather(feat_S, feat_T)
        B = feat_S.shape[0]
        loss = feat_S.new_zeros(())
        for i in range(B):
            # Pairs touching a local image need autograd, the rest do not.
            with_grad = local | bool(local[i])
            for mask, grad in ((with_grad, True), (~with_grad, False)):
                if not mask.any():
                    continue
                idx = mask.nonzero(as_tuple=True)[0].to(feat_S.device)
                with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                    term = self._pair_kl(
                        feat_S[i], feat_S[idx], feat_T[i], feat_T[idx])
                loss = loss + term
        loss = loss / (B * B)
        world_size = int(local.numel() // max(int(local.sum()), 1))
        if world_size > 1:
            # Every process computes the same global loss but back-props
            # only into its local images; DDP then averages the gradients
            # over the processes. Scaling the gradient (not the value) by
            # world_size makes that average the single-process gradient of
            # the global batch, as the official GatherLayer's all-reduce.
            loss = loss + (world_size - 1) * (loss - loss.detach())
        return self.loss_weight * loss
