"""Mini-batch pixel-to-pixel part of Cross-Image Relational KD (CIRKD)."""
from typing import List, Tuple

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

    Operator count: the ordered pairs are evaluated in chunks, one batched
    matmul per map and chunk giving the similarities of all its pairs. A
    chunk holds as many pairs as ``max_block_elements`` (2**26 similarity
    entries) allows, and at least B: with ``B * B * (H*W)^2 <= 2**26``
    (e.g. B = 8 with 32 x 32 maps) all pairs are one chunk and the number
    of operator calls does not depend on B. Beyond, there are ``ceil(B^2 /
    max(B, 2**26 // (H*W)^2))`` chunks, each adding the calls of one chunk
    (about 105 for forward + backward); at real sizes (64 x 128 maps,
    (H*W)^2 = 2**26) that is B chunks, as the old per-image loop: all
    pairs at once would hold B^2 * 2**26 entries per map, 17 GB in float32
    for B = 8 (and autograd keeps 2 such maps for the backward pass in any
    case). Under ``gather`` the pairs that need autograd (touching a local
    image) and the others are chunked separately. The pairs are taken
    image-major in every case, so when they fit one chunk a process sums
    the gradient of each local image over the same pairs in the same order
    as a single process with the global batch (bit-identical gradients). A
    chunk of M pairs also copies the images of its pairs, M * H*W * 2 *
    (C_s + C_t) entries.

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

    #: Most similarity entries (image pairs x H*W x H*W) of one chunk of
    #: pairs, unless one image's B pairs alone are more (a chunk holds at
    #: least B pairs, what the per-image loop used to evaluate at once).
    #: 2**26 entries are 256 MB per map in float32 (about 5 such maps are
    #: alive while a chunk is evaluated; 2 per entry are kept for the
    #: backward pass whatever the chunking).
    max_block_elements = 2**26

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
                ) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
        """Global batch and the range of its local images.

        Returns:
            Student (B, C_s, P), teacher (B, C_t, P), first local image,
            world size.
        """
        rank, world_size = get_dist_info()
        if not self.gather or world_size <= 1:
            return feat_S, feat_T, 0, 1
        parts_S = list(all_gather(feat_S.detach()))
        parts_S[rank] = feat_S
        parts_T = all_gather(feat_T)
        start = rank * feat_S.shape[0]
        return torch.cat(parts_S), torch.cat(parts_T), start, world_size

    @staticmethod
    def _pairs(batch: int, start: int,
               stop: int) -> Tuple[List[Tuple[int, int]], list]:
        """Ordered pairs (i, j), i-major, that need autograd and the rest.

        Pairs touching a local image (``start <= i < stop``) need autograd,
        pairs of two remote images do not.
        """
        grad, rest = [], []
        for i in range(batch):
            for j in range(batch):
                local = start <= i < stop or start <= j < stop
                (grad if local else rest).append((i, j))
        return grad, rest

    def _chunk_kl(self, feat_S: torch.Tensor, feat_T: torch.Tensor,
                  pairs: List[Tuple[int, int]]) -> torch.Tensor:
        """Sum over ``pairs`` of their batchmean KL.

        One batched matmul per map gives the similarities of all pairs,
        ``sim[m, p, q] = f_i[p] . f_j[q] / temperature`` for pair ``m =
        (i, j)``; the softmax runs over ``q`` (the pixels of image j), as
        officially.

        Args:
            feat_S, feat_T: Global batch, pixels first: (B, P, C_s),
                (B, P, C_t).
            pairs: Image pairs (i, j).
        """
        index = torch.tensor(pairs, device=feat_S.device)
        i, j = index[:, 0], index[:, 1]
        sim_S = torch.bmm(feat_S[i], feat_S[j].transpose(1, 2))
        sim_T = torch.bmm(feat_T[i], feat_T[j].transpose(1, 2))
        log_p_S = F.log_softmax(sim_S / self.temperature, dim=-1)
        log_p_T = F.log_softmax(sim_T / self.temperature, dim=-1)
        kl = (log_p_T.exp() * (log_p_T - log_p_S)).sum()
        return kl / feat_S.shape[1]

    def _pair_sum(self, feat_S: torch.Tensor, feat_T: torch.Tensor,
                  start: int, stop: int) -> torch.Tensor:
        """Sum of the batchmean KL of all B * B ordered pairs.

        Args:
            feat_S, feat_T: Global batch, pixels first: (B, P, C_s),
                (B, P, C_t).
            start, stop: Range of the local images.
        """
        B, P = feat_S.shape[:2]
        step = max(B, self.max_block_elements // (P * P))
        loss = feat_S.new_zeros(())
        for pairs, grad in zip(self._pairs(B, start, stop), (True, False)):
            for k in range(0, len(pairs), step):
                with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                    term = self._chunk_kl(feat_S, feat_T, pairs[k:k + step])
                loss = loss + term
        return loss

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
        local = preds_S.shape[0]
        feat_S = F.normalize(preds_S, p=2, dim=1).flatten(2)
        feat_T = F.normalize(preds_T, p=2, dim=1).flatten(2)
        feat_S, feat_T, start, world_size = self._gather(feat_S, feat_T)
        B = feat_S.shape[0]
        loss = self._pair_sum(feat_S.transpose(1, 2).contiguous(),
                              feat_T.transpose(1, 2).contiguous(), start,
                              start + local) / (B * B)
        if world_size > 1:
            # Every process computes the same global loss but back-props
            # only into its local images; DDP then averages the gradients
            # over the processes. Scaling the gradient (not the value) by
            # world_size makes that average the single-process gradient of
            # the global batch, as the official GatherLayer's all-reduce.
            loss = loss + (world_size - 1) * (loss - loss.detach())
        return self.loss_weight * loss
