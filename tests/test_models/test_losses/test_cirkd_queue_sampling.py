"""CIRKDMemoryLoss queue_sampling: the official draws or one batched draw."""
import itertools
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from visionkd.models.losses.cirkd_memory_loss import CIRKDMemoryLoss
from visionkd.utils import count_aten_calls

IGNORE = 255


def as_samples(labels):
    return [SimpleNamespace(gt_sem_seg=SimpleNamespace(data=lb[None]))
            for lb in labels]


def memory(**kwargs):
    cfg = dict(num_classes=3, teacher_channels=4, pixel_memory_size=50,
               region_memory_size=10, pixel_contrast_size=6,
               region_contrast_size=3, pixel_update_freq=3)
    cfg.update(kwargs)
    return CIRKDMemoryLoss(**cfg)


def random_labels(n, h, w, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n, h, w), generator=gen)
    labels[:, 0, :2] = IGNORE
    return labels


def test_default_is_official_and_other_values_are_refused():
    assert memory().queue_sampling == 'official'
    assert memory(queue_sampling='batched').queue_sampling == 'batched'
    with pytest.raises(ValueError, match="queue_sampling must be one of "
                                         r"\('official', 'batched'\), got "
                                         "'fast'"):
        memory(queue_sampling='fast')


def test_official_mode_is_the_default_draw_for_draw():
    results = []
    for kwargs in (dict(), dict(queue_sampling='official')):
        torch.manual_seed(3)
        loss = memory(**kwargs)
        values = []
        for step in range(3):
            s, t = torch.randn(2, 2, 4, 4, 5).unbind(0)
            values.append(loss(s, t, as_samples(random_labels(2, 4, 5,
                                                              seed=step))))
        results.append((values, loss.state_dict(), torch.get_rng_state()))
    (v0, state0, rng0), (v1, state1, rng1) = results
    torch.testing.assert_close(v0, v1, rtol=0, atol=0)
    for key in state0:
        assert torch.equal(state0[key], state1[key]), key
    assert torch.equal(rng0, rng1)


def one_hot_teacher(n, h, w):
    """Teacher embeddings that name their pixel: one channel per pixel of
    the batch (normalising keeps them one-hot)."""
    p = n * h * w
    return torch.eye(p).reshape(n, h, w, p).permute(0, 3, 1, 2)


def test_batched_enqueues_min_count_freq_pixels_of_each_class():
    n, h, w, freq = 3, 4, 5, 3
    labels = random_labels(n, h, w)
    labels[1][labels[1] == 2] = 0  # class 2 absent from image 1
    t = one_hot_teacher(n, h, w)
    torch.manual_seed(0)
    loss = memory(teacher_channels=t.shape[1], pixel_update_freq=freq,
                  queue_sampling='batched')
    loss(torch.randn_like(t), t, as_samples(labels))
    flat = labels.reshape(n, -1)
    for k in range(3):
        per_image = [int((row == k).sum()) for row in flat]
        taken = sum(min(c, freq) for c in per_image)
        assert loss.pixel_queue_ptr[k] == taken
        assert loss.region_queue_ptr[k] == sum(c > 0 for c in per_image)
        pixels = loss.pixel_queue[k, :taken].argmax(1)
        assert len(set(pixels.tolist())) == taken  # without replacement
        assert (labels.reshape(-1)[pixels] == k).all()  # only class k
        images = Counter((pixels // (h * w)).tolist())
        assert [images[i] for i in range(n)] == [
            min(c, freq) for c in per_image]


def test_batched_draws_are_uniform_without_replacement():
    # one image, classes 0 and 1 interleaved on 4 pixels each; 2 pixels
    # per class and step into a 2-slot queue (rewritten every step)
    labels = torch.tensor([[[0, 1, 0, 1], [1, 0, 1, 0]]])
    t = one_hot_teacher(1, 2, 4)
    torch.manual_seed(0)
    loss = memory(num_classes=2, teacher_channels=8, pixel_memory_size=2,
                  pixel_update_freq=2, queue_sampling='batched')
    t = t / t.norm(dim=1, keepdim=True)
    steps = 600
    firsts, pairs = Counter(), Counter()
    for _ in range(steps):
        loss._dequeue_and_enqueue(t, labels)  # the update of a forward
        drawn = loss.pixel_queue.argmax(2).tolist()  # (class, slot)
        for k, (a, b) in enumerate(drawn):
            assert a != b and labels.reshape(-1)[[a, b]].eq(k).all()
            firsts[k, a] += 1  # the first drawn pixel
            pairs[k, min(a, b), max(a, b)] += 1

    def chi2(counts, cells):
        expected = steps / cells
        return sum((n - expected)**2 / expected for n in counts)

    for k, pixels in enumerate(([0, 2, 5, 7], [1, 3, 4, 6])):
        # every pixel of the class comes first equally often: chi-square
        # with 3 degrees of freedom, 21.1 is its 0.9999 quantile
        assert sorted(p for c, p in firsts if c == k) == pixels
        assert chi2([firsts[k, p] for p in pixels], 4) < 21.1
        # and every pair of them: 5 degrees of freedom, quantile 25.7
        combos = list(itertools.combinations(pixels, 2))
        assert sorted((a, b) for c, a, b in pairs if c == k) == combos
        assert chi2([pairs[(k, ) + ab] for ab in combos], 6) < 25.7


def op_count(loss, batch, h=8, w=8, classes=3):
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(batch, 4, h, w, generator=gen, requires_grad=True)
    t = torch.randn(batch, 4, h, w, generator=gen)
    samples = as_samples(random_labels(batch, h, w, classes))

    def fn():
        s.grad = None
        return loss(s, t, samples)

    fn().backward()
    return count_aten_calls(fn)


def test_batched_update_count_does_not_grow_with_the_batch():
    counts = {}
    for mode in ('official', 'batched'):
        counts[mode] = [op_count(memory(queue_sampling=mode), b)
                        for b in (2, 8)]
    small, large = counts['batched']
    assert large <= 1.05 * small, counts
    small, large = counts['official']
    assert large > small + 5 * 3 * 5, counts  # 5 calls per extra group


def test_modes_differ_only_in_the_pixels_drawn():
    labels = random_labels(2, 4, 5)
    s, t = torch.randn(2, 2, 4, 4, 5).unbind(0)
    states = []
    for mode in ('official', 'batched'):
        torch.manual_seed(0)
        loss = memory(queue_sampling=mode)
        loss(s, t, as_samples(labels))
        states.append(loss.state_dict())
    official, batched = states
    for key in ('region_queue', 'region_queue_ptr', 'pixel_queue_ptr'):
        assert torch.equal(official[key], batched[key]), key
    assert not torch.equal(official['pixel_queue'], batched['pixel_queue'])
