"""Memory-based pixel/region part of Cross-Image Relational KD (CIRKD)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_gather, get_dist_info

from visionkd.registry import MODELS

from .seg_utils import check_same_size, stack_seg_labels

__all__ = ['CIRKDMemoryLoss']


@MODELS.register_module()
class CIRKDMemoryLoss(nn.Module):
    """Pixel-to-memory relation distillation with teacher memory banks.

    *Cross-Image Relational Knowledge Distillation for Semantic
    Segmentation* (Yang et al., CVPR 2022), memory-based pixel-to-pixel and
    pixel-to-region terms, as the official ``StudentSegContrast``
    (winycg/CIRKD, ``losses/cirkd_memory.py``) and its use in
    ``train_cirkd.py``:

    * Two class-wise queues of L2-normalised **teacher** embeddings are
      registered buffers (saved in checkpoints): ``pixel_queue`` (K,
      ``pixel_memory_size``, C) and ``region_queue`` (K,
      ``region_memory_size``, C), initialised with normalised ``randn``;
      ``pixel_queue_ptr`` / ``region_queue_ptr`` (K,) are the write
      pointers. Memory: 4 * K * (pixel_memory_size + region_memory_size)
      * C bytes (390 MB for K=19, C=256 with the defaults).
    * Every forward in training mode first enqueues the batch (gathered
      over all processes under distributed training when ``gather``): labels
      are resized (nearest) to the feature size; for each image and each
      class present, the normalised mean teacher embedding goes to the
      region queue at its pointer (pointer + 1, wrapping), and
      ``min(#pixels, pixel_update_freq)`` randomly chosen pixel embeddings
      of that class go to the pixel queue at its pointer; if they would
      reach the end they overwrite the last slots and the pointer returns
      to 0 (both as officially).
    * Anchors are the student and teacher embeddings (normalised over
      channels) of all non-ignored pixels. ``pixel_contrast_size //
      num_classes + 1`` memory slots per class (one random index set shared
      by the classes, as ``train_cirkd.py`` passes the per-class sizes) are
      drawn from the pixel queue, likewise for the region queue.
    * For each memory, ``logits = anchors @ memory^T / temperature`` and the
      term is ``kd_temperature^2 * KL(softmax(logits_T / kd_temperature) ||
      softmax(logits_S / kd_temperature))`` with ``batchmean`` reduction
      (divided by the number of anchors).
    * ``loss = loss_weight * (pixel_weight * pixel + region_weight *
      region)``. The official training weights both terms by 0.1
      (``--lambda-memory-pixel`` / ``--lambda-memory-region``): use
      ``loss_weight=0.1``.

    Random choices use PyTorch's default CPU generator (the batched pixel
    draws that of the features' device), so :func:`torch.manual_seed`
    makes them reproducible. The queues are data
    (teacher embeddings), not parameters: they are stored in the buffers'
    dtype and cast to the embeddings' dtype when they are used, so the loss
    computes in the dtype it is given. Student and teacher must have the
    same spatial size (``connector=dict(type='ResizeConnector')`` in the
    distillation term aligns them).

    Operator count: the update is batched over images and classes (one
    ``bincount`` for the group sizes, one ``index_add_`` for the region
    means, one stable sort that orders the pixels by group, one indexed
    write per queue) and so is the loss, except the pixel draws, which
    ``queue_sampling`` chooses:

    * ``'official'`` (default): as the official code, one
      ``torch.randperm(#pixels)`` per image and class present, on the CPU
      generator. A permutation's draws depend on its length, so keeping
      the seeded draws (and the values they give) needs one call per
      (image, class) group: 5 ATen calls each (``randperm`` into a slice
      of one buffer). The count thus grows by 5 per group present, about
      5 * N * (classes per image): with 19 classes per image, 32 x 32
      maps, forward + backward make 705 calls at batch 2 and 1255 at
      batch 8 (1.78x).
    * ``'batched'``: one ``torch.randperm`` of all the batch's pixels (on
      their device's generator) and one stable sort by group; each group
      takes its first ``min(#pixels, pixel_update_freq)`` pixels in that
      random order. Same distribution (a uniform sample without
      replacement of the same number of pixels of the group, in uniformly
      random order), other draws than the official ones for a given seed;
      the count no longer depends on N (526 calls at batch 2 and 8 on the
      maps above).

    Deviations from the official code:

    * The official pixel enqueue takes ``this_feat[:, perm[:K]]`` with
      ``perm`` a permutation of the *number* of pixels of the class, i.e.
      it stores pixels from the start of the image whatever their class.
      This follows the paper: the pixels are drawn among those of the
      class.
    * With no valid anchor the official code returns
      ``0 * (empty ** 2).mean()``, which is NaN; this returns an exact 0
      that is still connected to the student.
    * The official loss contains a learnable projection head (1x1 conv,
      SyncBN, ReLU, 1x1 conv) from student to teacher channels; here the
      student must already have ``teacher_channels`` channels: add a
      connector to the distillation term (e.g. ``ConvConnector``).
    * Labels outside ``[0, num_classes)`` are ignored like ``ignore_index``
      (the official code would index out of the queues).
    * Nothing is enqueued in eval mode, and at most ``pixel_memory_size``
      pixels are enqueued at once (the official code fails otherwise).

    Args:
        num_classes: Number of classes K.
        teacher_channels: Channels C of the teacher embedding (filled in by
            the distiller).
        pixel_memory_size: Pixel queue length per class. Defaults to 20000.
        region_memory_size: Region queue length per class. Defaults to
            2000.
        pixel_contrast_size: Pixel memory samples per step, over all
            classes. Defaults to 4096.
        region_contrast_size: Region memory samples per step, over all
            classes. Defaults to 1024.
        temperature: Temperature of the similarities
            (``--contrast-temperature``). Defaults to 0.1.
        kd_temperature: Temperature of the KL
            (``--contrast-kd-temperature``). Defaults to 1.0.
        pixel_update_freq: Pixels enqueued per class and image. Defaults to
            16.
        pixel_weight: Relative weight of the pixel term. Defaults to 1.0.
        region_weight: Relative weight of the region term. Defaults to 1.0.
        ignore_index: Label to ignore. Defaults to 255.
        loss_weight: Weight of the loss. Defaults to 1.0.
        gather: Enqueue the embeddings of all processes under distributed
            training, as officially. Defaults to True.
        queue_sampling: How the enqueued pixels are drawn: ``'official'``
            (one permutation per image and class, the official draws) or
            ``'batched'`` (one draw for the batch, same distribution, an
            operator count independent of the batch). Defaults to
            ``'official'``.
    """

    #: Ground truth this loss reads from every data sample.
    gt_field = 'gt_sem_seg'
    #: Values of ``queue_sampling``.
    QUEUE_SAMPLING = ('official', 'batched')

    def __init__(self,
                 num_classes: int,
                 teacher_channels: int,
                 pixel_memory_size: int = 20000,
                 region_memory_size: int = 2000,
                 pixel_contrast_size: int = 4096,
                 region_contrast_size: int = 1024,
                 temperature: float = 0.1,
                 kd_temperature: float = 1.0,
                 pixel_update_freq: int = 16,
                 pixel_weight: float = 1.0,
                 region_weight: float = 1.0,
                 ignore_index: int = 255,
                 loss_weight: float = 1.0,
                 gather: bool = True,
                 queue_sampling: str = 'official') -> None:
        super().__init__()
        if queue_sampling not in self.QUEUE_SAMPLING:
            raise ValueError(
                f'queue_sampling must be one of {self.QUEUE_SAMPLING}, got '
                f"{queue_sampling!r}; use 'official' (the official draws) "
                f"or 'batched' (one draw per batch)")
        for name, value in (('num_classes', num_classes),
                            ('teacher_channels', teacher_channels),
                            ('pixel_memory_size', pixel_memory_size),
                            ('region_memory_size', region_memory_size),
                            ('pixel_update_freq', pixel_update_freq)):
            if int(value) < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        for name, value in (('pixel_contrast_size', pixel_contrast_size),
                            ('region_contrast_size', region_contrast_size)):
            if int(value) < 0:
                raise ValueError(f'{name} must be >= 0, got {value}')
        if temperature <= 0 or kd_temperature <= 0:
            raise ValueError('temperature and kd_temperature must be '
                             f'positive, got {temperature}, {kd_temperature}')
        self.num_classes = int(num_classes)
        self.teacher_channels = int(teacher_channels)
        self.pixel_memory_size = int(pixel_memory_size)
        self.region_memory_size = int(region_memory_size)
        self.pixel_contrast_size = int(pixel_contrast_size)
        self.region_contrast_size = int(region_contrast_size)
        self.temperature = float(temperature)
        self.kd_temperature = float(kd_temperature)
        self.pixel_update_freq = int(pixel_update_freq)
        self.pixel_weight = float(pixel_weight)
        self.region_weight = float(region_weight)
        self.ignore_index = int(ignore_index)
        self.loss_weight = float(loss_weight)
        self.gather = bool(gather)
        self.queue_sampling = queue_sampling
        self._register_queues()

    def _register_queues(self) -> None:
        """The queues (normalised ``randn``) and their pointers."""
        K, C = self.num_classes, self.teacher_channels
        self.register_buffer(
            'region_queue',
            F.normalize(torch.randn(K, self.region_memory_size, C), dim=2))
        self.register_buffer('region_queue_ptr',
                             torch.zeros(K, dtype=torch.long))
        self.register_buffer(
            'pixel_queue',
            F.normalize(torch.randn(K, self.pixel_memory_size, C), dim=2))
        self.register_buffer('pixel_queue_ptr',
                             torch.zeros(K, dtype=torch.long))

    @property
    def pixel_contrast_per_class(self) -> int:
        """Pixel memory slots drawn per class (official: size // K + 1)."""
        return self.pixel_contrast_size // self.num_classes + 1

    @property
    def region_contrast_per_class(self) -> int:
        """Region memory slots drawn per class (official: size // K + 1)."""
        return self.region_contrast_size // self.num_classes + 1

    def valid_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Pixels that belong to a class: in range and not ignored."""
        return ((labels >= 0) & (labels < self.num_classes)
                & (labels != self.ignore_index))

    def _enqueue_plan(self, counts: List[int]
                      ) -> Tuple[Optional[torch.Tensor], dict, dict, tuple]:
        """Random draws and queue slots of one update, in official order.

        Walks the (image, class) groups image by image, classes ascending,
        as the official per-image loop, so that with ``queue_sampling=
        'official'`` ``torch.randperm`` is called with the same sizes in
        the same order (one call per group: the draws of a permutation
        depend on its size, so they cannot be batched without changing
        them; ``'batched'`` draws nothing here). Pointers are advanced on
        Python ints; a slot written twice keeps the later write.

        Args:
            counts: Pixels of group ``g = image * K + class``, length N * K.

        Returns:
            The permutations of the non-empty groups, concatenated (CPU;
            None for ``'batched'``), ``{(class, slot): g}`` of the region
            queue, ``{(class, slot): (g, rank)}`` of the pixel queue
            (``rank``: position in the group's random order) and the new
            region and pixel pointers.
        """
        K, M = self.num_classes, self.pixel_memory_size
        region_ptr = self.region_queue_ptr.tolist()
        pixel_ptr = self.pixel_queue_ptr.tolist()
        sizes = [num for num in counts if num > 0]
        perm, pieces = None, iter(())
        if self.queue_sampling == 'official':
            perm = torch.empty(sum(sizes), dtype=torch.long)
            pieces = iter(perm.split(sizes) if sizes else ())
        region, pixel = {}, {}
        for g, num in enumerate(counts):
            if num == 0:
                continue
            lb = g % K
            region[lb, region_ptr[lb]] = g
            region_ptr[lb] = (region_ptr[lb] + 1) % self.region_memory_size
            if perm is not None:
                torch.randperm(num, out=next(pieces))
            take = min(num, self.pixel_update_freq, M)
            ptr = pixel_ptr[lb]
            first = M - take if ptr + take >= M else ptr
            pixel_ptr[lb] = 0 if ptr + take >= M else (ptr + take) % M
            for rank in range(take):
                pixel[lb, first + rank] = (g, rank)
        return perm, region, pixel, (region_ptr, pixel_ptr)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor,
                             labels: torch.Tensor) -> None:
        """Write teacher embeddings into the queues.

        The (image, class) groups are handled together: one bincount gives
        their sizes, one ``index_add_`` their sums (region means) and one
        stable sort their pixels. Only the official pixel draws are made
        per group (see :meth:`_enqueue_plan`; ``queue_sampling='batched'``
        draws once, :meth:`_chosen_pixels`). The update computes in the
        queues' dtype.

        Args:
            keys: Normalised teacher embeddings, shape (N, C, H, W).
            labels: Labels at the same size, shape (N, H, W).
        """
        _, world_size = get_dist_info()
        if self.gather and world_size > 1:
            keys = torch.cat(all_gather(keys.contiguous()))
            labels = torch.cat(all_gather(labels.contiguous()))
        N, C = keys.shape[:2]
        G, dev = N * self.num_classes, keys.device
        feats = keys.permute(0, 2, 3, 1).reshape(-1, C).to(
            self.pixel_queue.dtype)
        image = torch.arange(N, device=dev).repeat_interleave(
            labels[0].numel())
        group = torch.where(self.valid_mask(labels).reshape(-1),
                            image * self.num_classes + labels.reshape(-1), G)
        counts = torch.bincount(group, minlength=G + 1)[:G]
        perm, region, pixel, ptrs = self._enqueue_plan(counts.tolist())
        if not region:
            return
        sums = feats.new_zeros(G + 1, C).index_add_(0, group, feats)[:G]
        means = sums / counts.clamp(min=1)[:, None].to(sums.dtype)
        self._write(self.region_queue, region,
                    F.normalize(means[torch.tensor(list(region.values()),
                                                   device=dev)], dim=1))
        chosen = self._chosen_pixels(group, counts, perm, torch.tensor(
            list(pixel.values()), device=dev))
        self._write(self.pixel_queue, pixel,
                    F.normalize(feats[chosen], dim=1))
        self.region_queue_ptr.copy_(torch.tensor(ptrs[0]))
        self.pixel_queue_ptr.copy_(torch.tensor(ptrs[1]))

    @staticmethod
    def _chosen_pixels(group: torch.Tensor, counts: torch.Tensor,
                       perm: Optional[torch.Tensor],
                       g_rank: torch.Tensor) -> torch.Tensor:
        """Flat pixel indices of the pixels to enqueue.

        Args:
            group: Group of every pixel (``G`` for invalid ones), (P,).
            counts: Pixels per group, (G,).
            perm: The groups' permutations (official draws), or None: one
                random order of all pixels is drawn here (``'batched'``).
            g_rank: ``(group, rank)`` of every pixel to enqueue, (E, 2).
        """
        # the pixels of group g, grouped, start at starts[g]
        starts = torch.cumsum(counts, 0) - counts
        start = starts[g_rank[:, 0]]
        if perm is not None:  # grouped by pixel index, official draws
            order = torch.argsort(group, stable=True)
            return order[start + perm.to(group.device)[start + g_rank[:, 1]]]
        # grouped in a random order: rank r is a uniform draw
        shuffle = torch.randperm(group.numel(), device=group.device)
        order = shuffle[torch.argsort(group[shuffle], stable=True)]
        return order[start + g_rank[:, 1]]

    @staticmethod
    def _write(queue: torch.Tensor, slots: dict,
               values: torch.Tensor) -> None:
        """``queue[class, slot] = value`` for the ``(class, slot)`` keys."""
        index = torch.tensor(list(slots), device=queue.device)
        queue[index[:, 0], index[:, 1]] = values.to(queue.dtype)

    @staticmethod
    def _sample(queue: torch.Tensor, per_class: int) -> torch.Tensor:
        """``per_class`` random slots of every class, (K * per_class, C)."""
        index = torch.randperm(queue.shape[1])[:per_class]
        return queue[:, index.to(queue.device)].reshape(-1, queue.shape[2])

    def _contrast_kd(self, anchors_S: torch.Tensor,
                     anchors_T: torch.Tensor,
                     memory: torch.Tensor) -> torch.Tensor:
        """KD between the anchors' similarity distributions to memory."""
        memory = memory.to(anchors_S.dtype)
        logits_S = anchors_S @ memory.t() / self.temperature
        logits_T = anchors_T @ memory.t() / self.temperature
        if self.kd_temperature != 1.0:  # x / 1.0 is x: skip two passes
            logits_S = logits_S / self.kd_temperature
            logits_T = logits_T / self.kd_temperature
        log_p_S = F.log_softmax(logits_S, dim=1)
        log_p_T = F.log_softmax(logits_T, dim=1)
        kl = (log_p_T.exp() * (log_p_T - log_p_S)).sum()
        return kl / anchors_S.shape[0] * self.kd_temperature**2

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                data_samples: Sequence) -> torch.Tensor:
        """Compute the loss (and, in training mode, update the memory).

        Args:
            preds_S: Student embedding, shape (N, C, H, W), C =
                ``teacher_channels``.
            preds_T: Teacher embedding, shape (N, C, H, W).
            data_samples: N mmseg ``SegDataSample`` s with ``gt_sem_seg``.

        Returns:
            Scalar loss.
        """
        check_same_size(preds_S, preds_T, 'CIRKDMemoryLoss')
        C = self.teacher_channels
        if preds_S.shape[1] != C or preds_T.shape[1] != C:
            raise ValueError(
                f'CIRKDMemoryLoss was built for {C} channels but got student '
                f'{preds_S.shape[1]} and teacher {preds_T.shape[1]}; add a '
                f'connector that maps the student to the teacher channels')
        N, _, H, W = preds_T.shape
        feat_S = F.normalize(preds_S, p=2, dim=1)
        feat_T = F.normalize(preds_T, p=2, dim=1)
        labels = stack_seg_labels(
            data_samples, (H, W), preds_T.device, batch_size=N)
        if self.training:
            self._dequeue_and_enqueue(feat_T, labels)

        valid = self.valid_mask(labels).reshape(-1)
        if not bool(valid.any()):
            return preds_S.sum() * 0.0
        anchors_S = feat_S.permute(0, 2, 3, 1).reshape(-1, C)[valid]
        anchors_T = feat_T.permute(0, 2, 3, 1).reshape(-1, C)[valid]

        pixel_memory = self._sample(self.pixel_queue,
                                    self.pixel_contrast_per_class)
        pixel = self._contrast_kd(anchors_S, anchors_T, pixel_memory)
        region_memory = self._sample(self.region_queue,
                                     self.region_contrast_per_class)
        region = self._contrast_kd(anchors_S, anchors_T, region_memory)
        loss = self.pixel_weight * pixel + self.region_weight * region
        return self.loss_weight * loss
