"""Batched IFVD / CIRKD losses equal their old per-image implementations.

The references below are the per-image (and per-class) implementations the
losses had before they were batched (label stacking, IFVD prototypes,
CIRKD's per-image pair loop and per-image, per-class memory update),
copied here. Values, student gradients, memory queues, pointers and the
state of the random generator must agree, on batches with an image whose
labels are all ignored (255) and classes missing from some images. The
operator counts of forward + backward must not grow with the batch
(``tests`` of issue #16), except CIRKD's memory update, which makes one
``torch.randperm`` per (image, class) group to keep the official draws.
"""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from visionkd.models.losses import cirkd_minibatch_loss
from visionkd.models.losses.cirkd_memory_loss import CIRKDMemoryLoss
from visionkd.models.losses.cirkd_minibatch_loss import CIRKDMiniBatchLoss
from visionkd.models.losses.ifvd_loss import IFVDLoss
from visionkd.models.losses.seg_utils import stack_seg_labels
from visionkd.utils import count_aten_calls

K = 4
IGNORE = 255


def as_samples(labels):
    """Duck-typed SegDataSamples from (N, H, W) labels."""
    return [SimpleNamespace(gt_sem_seg=SimpleNamespace(data=lbl[None]))
            for lbl in labels]


def make_labels(n, h, w, seed=0):
    """Labels at (h, w): image 1 all ignored, class 3 only in image 0,
    class 2 absent from image 2, a few ignored pixels elsewhere."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K - 1, (n, h, w), generator=g)
    labels[0, :, :2] = K - 1
    labels[:, 0, 0] = IGNORE
    if n > 1:
        labels[1] = IGNORE
    if n > 2:
        labels[2][labels[2] == 2] = 0
    return labels


def features(n, c, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    t = torch.randn(n, c + 2, h, w, generator=g, dtype=torch.float64)
    return s.requires_grad_(True), t


def fresh(s):
    return s.detach().clone().requires_grad_(True)


# ------------------------------------------------------------ references
def ref_stack_seg_labels(data_samples, size):
    """Old ``stack_seg_labels``: every sample resized on its own."""
    labels = []
    for sample in data_samples:
        data = torch.as_tensor(sample.gt_sem_seg.data)
        if data.dim() == 2:
            data = data[None]
        data = F.interpolate(data[None].float(), size=tuple(size),
                             mode='nearest')
        labels.append(data[0, 0].long())
    return torch.stack(labels)


def ref_ifvd(preds_S, preds_T, samples, num_classes):
    """IFVD (Wang et al., ECCV 2020) with a loop over images and classes."""
    N, _, H, W = preds_T.shape
    labels = ref_stack_seg_labels(samples, (H, W))

    def similarity(feat):
        maps = []
        for n in range(N):
            f = feat[n].flatten(1)
            lab = labels[n].flatten()
            out = f.new_zeros(lab.shape)
            for k in range(num_classes):
                mask = lab == k
                if not bool(mask.any()):
                    continue
                proto = (f * mask).sum(1) / (mask.sum() + 1e-6)
                sim = F.cosine_similarity(f, proto[:, None], dim=0,
                                          eps=1e-8)
                out = torch.where(mask, sim, out)
            maps.append(out)
        return torch.stack(maps)

    diff = similarity(preds_S) - similarity(preds_T)
    return diff.pow(2).sum() / (N * H * W)


class RefMiniBatch(CIRKDMiniBatchLoss):
    """Old CIRKD mini-batch loss: a loop over the images i of the pairs."""

    def _gather(self, feat_S, feat_T):
        rank, world_size = cirkd_minibatch_loss.get_dist_info()
        b = feat_S.shape[0]
        if not self.gather or world_size <= 1:
            return feat_S, feat_T, torch.ones(b, dtype=torch.bool)
        parts_S = list(cirkd_minibatch_loss.all_gather(feat_S.detach()))
        parts_S[rank] = feat_S
        parts_T = cirkd_minibatch_loss.all_gather(feat_T)
        local = torch.zeros(b * world_size, dtype=torch.bool)
        local[rank * b:(rank + 1) * b] = True
        return torch.cat(parts_S), torch.cat(parts_T), local

    def _pair_kl(self, s_i, S, t_i, T):
        sim_S = torch.einsum('cp,jcq->jpq', s_i, S) / self.temperature
        sim_T = torch.einsum('cp,jcq->jpq', t_i, T) / self.temperature
        log_p_S = F.log_softmax(sim_S, dim=-1)
        log_p_T = F.log_softmax(sim_T, dim=-1)
        kl = (log_p_T.exp() * (log_p_T - log_p_S)).sum()
        return kl / s_i.shape[-1]

    def forward(self, preds_S, preds_T):
        feat_S = F.normalize(preds_S, p=2, dim=1).flatten(2)
        feat_T = F.normalize(preds_T, p=2, dim=1).flatten(2)
        feat_S, feat_T, local = self._gather(feat_S, feat_T)
        B = feat_S.shape[0]
        loss = feat_S.new_zeros(())
        for i in range(B):
            with_grad = local | bool(local[i])
            for mask, grad in ((with_grad, True), (~with_grad, False)):
                if not mask.any():
                    continue
                idx = mask.nonzero(as_tuple=True)[0]
                with torch.set_grad_enabled(grad):
                    term = self._pair_kl(
                        feat_S[i], feat_S[idx], feat_T[i], feat_T[idx])
                loss = loss + term
        loss = loss / (B * B)
        world_size = int(local.numel() // max(int(local.sum()), 1))
        if world_size > 1:
            loss = loss + (world_size - 1) * (loss - loss.detach())
        return self.loss_weight * loss


class RefMemory(CIRKDMemoryLoss):
    """Old CIRKD memory loss: update looped over images and classes."""

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys, labels):
        N, C = keys.shape[:2]
        valid = self.valid_mask(labels)
        for n in range(N):
            this_feat = keys[n].reshape(C, -1)
            this_label = labels[n].reshape(-1)
            for lb in torch.unique(this_label[valid[n].reshape(-1)]):
                lb = int(lb)
                idxs = (this_label == lb).nonzero(as_tuple=True)[0]
                feat = this_feat[:, idxs].mean(dim=1)
                ptr = int(self.region_queue_ptr[lb])
                self.region_queue[lb, ptr] = F.normalize(feat, dim=0)
                self.region_queue_ptr[lb] = (ptr + 1) % (
                    self.region_memory_size)
                num_pixel = idxs.numel()
                perm = torch.randperm(num_pixel)
                k = min(num_pixel, self.pixel_update_freq,
                        self.pixel_memory_size)
                chosen = idxs[perm[:k]]
                feat = F.normalize(this_feat[:, chosen].t(), dim=1)
                ptr = int(self.pixel_queue_ptr[lb])
                if ptr + k >= self.pixel_memory_size:
                    self.pixel_queue[lb, -k:] = feat
                    self.pixel_queue_ptr[lb] = 0
                else:
                    self.pixel_queue[lb, ptr:ptr + k] = feat
                    self.pixel_queue_ptr[lb] = (ptr + k) % (
                        self.pixel_memory_size)

    def _contrast_kd(self, anchors_S, anchors_T, memory):
        memory = memory.to(anchors_S.dtype)
        logits_S = anchors_S @ memory.t() / self.temperature
        logits_T = anchors_T @ memory.t() / self.temperature
        log_p_S = F.log_softmax(logits_S / self.kd_temperature, dim=1)
        log_p_T = F.log_softmax(logits_T / self.kd_temperature, dim=1)
        kl = (log_p_T.exp() * (log_p_T - log_p_S)).sum()
        return kl / anchors_S.shape[0] * self.kd_temperature**2

    def forward(self, preds_S, preds_T, data_samples):
        C = self.teacher_channels
        N, _, H, W = preds_T.shape
        feat_S = F.normalize(preds_S, p=2, dim=1)
        feat_T = F.normalize(preds_T, p=2, dim=1)
        labels = ref_stack_seg_labels(data_samples, (H, W))
        if self.training:
            self._dequeue_and_enqueue(feat_T, labels)
        valid = self.valid_mask(labels).reshape(-1)
        if not bool(valid.any()):
            return preds_S.sum() * 0.0
        anchors_S = feat_S.permute(0, 2, 3, 1).reshape(-1, C)[valid]
        anchors_T = feat_T.permute(0, 2, 3, 1).reshape(-1, C)[valid]
        pixel = self._contrast_kd(anchors_S, anchors_T, self._sample(
            self.pixel_queue, self.pixel_contrast_per_class))
        region = self._contrast_kd(anchors_S, anchors_T, self._sample(
            self.region_queue, self.region_contrast_per_class))
        loss = self.pixel_weight * pixel + self.region_weight * region
        return self.loss_weight * loss


# ------------------------------------------------------------ labels
def test_stack_seg_labels_batched_equals_per_sample():
    labels = make_labels(4, 13, 11)
    for size in ((13, 11), (5, 4), (20, 30)):
        samples = as_samples(labels)
        expected = ref_stack_seg_labels(samples, size)
        assert torch.equal(stack_seg_labels(samples, size), expected)
        # (H, W) maps, uint8 maps and numpy arrays
        flat = [SimpleNamespace(gt_sem_seg=SimpleNamespace(data=lbl))
                for lbl in labels]
        assert torch.equal(stack_seg_labels(flat, size), expected)
        small = as_samples(labels.to(torch.uint8))
        assert torch.equal(stack_seg_labels(small, size), expected)
        arrays = [SimpleNamespace(gt_sem_seg=SimpleNamespace(
            data=lbl[None].numpy())) for lbl in labels]
        assert torch.equal(stack_seg_labels(arrays, size), expected)


def test_stack_seg_labels_mixed_sizes_resized_one_by_one():
    a, b = make_labels(1, 8, 8)[0], make_labels(1, 16, 12, seed=3)[0]
    samples = as_samples([a, b]) + [
        SimpleNamespace(gt_sem_seg=SimpleNamespace(data=a))]
    expected = ref_stack_seg_labels(samples, (4, 6))
    assert torch.equal(stack_seg_labels(samples, (4, 6)), expected)
    with pytest.raises(ValueError, match=r'\(1, H, W\)'):
        stack_seg_labels(as_samples(torch.zeros(1, 2, 3, 3)), (3, 3))


# ------------------------------------------------------------ IFVD
@pytest.mark.parametrize('size', [(6, 5), (3, 4)])
def test_ifvd_equals_per_image_reference(size):
    s, t = features(4, 3, *size)
    samples = as_samples(make_labels(4, 6, 5))
    value = IFVDLoss(num_classes=K)(s, t, samples)
    ref_s = fresh(s)
    ref = ref_ifvd(ref_s, t, samples, K)
    torch.testing.assert_close(value, ref)
    value.backward()
    ref.backward()
    torch.testing.assert_close(s.grad, ref_s.grad)
    assert s.grad[1].abs().max() == 0  # the all-ignored image


# ------------------------------------------------- CIRKD mini-batch
@pytest.mark.parametrize('budget', [2**26, 1])
def test_cirkd_minibatch_equals_per_image_reference(budget):
    s, t = features(5, 3, 3, 4)
    loss = CIRKDMiniBatchLoss(temperature=0.5, loss_weight=2.0)
    loss.max_block_elements = budget  # 1: chunks of B pairs
    value = loss(s, t)
    ref_s = fresh(s)
    ref = RefMiniBatch(temperature=0.5, loss_weight=2.0)(ref_s, t)
    torch.testing.assert_close(value, ref)
    value.backward()
    ref.backward()
    torch.testing.assert_close(s.grad, ref_s.grad)


@pytest.mark.parametrize('rank', [0, 1, 2])
def test_cirkd_minibatch_gather_equals_reference(monkeypatch, rank):
    """Rank ``rank`` of 3 (2 images each) against the old gather loop."""
    s_all, t_all = features(6, 3, 2, 3)
    parts = [[F.normalize(x[2 * r:2 * r + 2], dim=1).flatten(2)
              for r in range(3)] for x in (s_all.detach(), t_all)]
    calls = []

    def fake_all_gather(x):
        part = parts[len(calls) % 2]
        calls.append(x)
        return [x if r == rank else part[r] for r in range(3)]

    monkeypatch.setattr(cirkd_minibatch_loss, 'get_dist_info',
                        lambda: (rank, 3))
    monkeypatch.setattr(cirkd_minibatch_loss, 'all_gather', fake_all_gather)
    local = slice(2 * rank, 2 * rank + 2)
    results = []
    for cls in (CIRKDMiniBatchLoss, RefMiniBatch):
        s = s_all.detach()[local].clone().requires_grad_(True)
        value = cls()(s, t_all[local])
        value.backward()
        results.append((value, s.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


# ------------------------------------------------------- CIRKD memory
def memory_pair(**kwargs):
    cfg = dict(num_classes=K, teacher_channels=3, pixel_memory_size=7,
               region_memory_size=2, pixel_contrast_size=8,
               region_contrast_size=4, pixel_update_freq=3,
               temperature=0.5, kd_temperature=2.0)
    cfg.update(kwargs)
    torch.manual_seed(0)
    new = CIRKDMemoryLoss(**cfg).double()
    ref = RefMemory(**cfg).double()
    ref.load_state_dict(new.state_dict())
    return new, ref


@pytest.mark.parametrize('kwargs', [
    dict(), dict(kd_temperature=1.0, pixel_update_freq=16),
    dict(pixel_memory_size=2, region_memory_size=1)])
def test_cirkd_memory_equals_per_image_reference(kwargs):
    new, ref = memory_pair(**kwargs)
    shape = (6, 3, 4, 5)
    for step in range(4):  # queues wrap; slots are written twice a step
        labels = make_labels(6, 4, 5, seed=step)
        s, t = features(*shape[:2], *shape[2:], seed=10 + step)
        t = t[:, :3]
        samples = as_samples(labels)
        outputs = []
        for loss in (new, ref):
            torch.manual_seed(100 + step)
            x = fresh(s)
            value = loss(x, t, samples)
            value.backward()
            outputs.append((value, x.grad, torch.get_rng_state()))
        (value, grad, rng), (ref_value, ref_grad, ref_rng) = outputs
        torch.testing.assert_close(value, ref_value)
        torch.testing.assert_close(grad, ref_grad)
        assert torch.equal(rng, ref_rng)  # the same draws were made
        for key, buf in ref.state_dict().items():
            torch.testing.assert_close(new.state_dict()[key], buf, msg=key)


def test_cirkd_memory_all_ignored_batch_changes_nothing():
    new, ref = memory_pair()
    s, t = features(3, 3, 2, 2)
    samples = as_samples(torch.full((3, 2, 2), IGNORE))
    state = {k: v.clone() for k, v in new.state_dict().items()}
    torch.manual_seed(0)
    value = new(s, t[:, :3], samples)
    assert value.item() == 0.0
    for key, buf in new.state_dict().items():
        assert torch.equal(buf, state[key])


# ------------------------------------------------------ operator counts
def op_count(loss, batch, c=3, h=4, w=4, seg=True):
    s, t = features(batch, c, h, w)
    if isinstance(loss, CIRKDMemoryLoss):
        t = t[:, :c]
    args = (as_samples(make_labels(batch, h, w)), ) if seg else ()

    def fn():
        s.grad = None
        return loss(s, t, *args)

    fn().backward()
    return count_aten_calls(fn)


@pytest.mark.parametrize('make,seg', [
    (lambda: IFVDLoss(num_classes=K), True),
    (lambda: CIRKDMiniBatchLoss(), False),
    (lambda: CIRKDMemoryLoss(num_classes=K, teacher_channels=3,
                             pixel_memory_size=20, region_memory_size=5,
                             pixel_contrast_size=8,
                             region_contrast_size=4).double().eval(), True),
])
def test_op_count_does_not_grow_with_batch(make, seg):
    small, large = op_count(make(), 2, seg=seg), op_count(make(), 8, seg=seg)
    assert large <= 1.05 * small, (small, large)


def test_memory_update_grows_by_the_pixel_draws_only():
    def groups(batch):
        labels = make_labels(batch, 4, 4)
        return sum(len(torch.unique(lb[lb != IGNORE])) for lb in labels)

    def build():
        return CIRKDMemoryLoss(num_classes=K, teacher_channels=3,
                               pixel_memory_size=20, region_memory_size=5,
                               pixel_contrast_size=8,
                               region_contrast_size=4).double()

    small, large = op_count(build(), 2), op_count(build(), 8)
    # one torch.randperm per (image, class) group, 5 ATen calls each
    assert large - small <= 5 * (groups(8) - groups(2)), (small, large)
