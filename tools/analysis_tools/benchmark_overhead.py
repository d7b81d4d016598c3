"""Measure what distillation costs per training iteration.

For a distiller config, in one process and on the same batch, it times

* ``student_step``: the student's own loss + backward + SGD step,
* ``teacher_forward``: the teacher's forward as the distiller runs it
  (``no_grad``, stopped after the recorded layers),
* ``distill_step``: the full distiller loss + backward + step,

interleaved over ``--iters`` rounds (medians), and prints JSON with
``overhead_ratio = distill_step_s / (student_step_s + teacher_forward_s)``
(1.0 = distillation adds nothing beyond running the teacher) and the peak
memory of each phase (CUDA: ``max_memory_allocated``; CPU: the most
malloc'ed heap in use, sampled every millisecond, above the phase's
start). Every phase of a round
starts from the same random state, so the student part of the distill
step samples the same RoIs as the student step of that round (RoIAlign's
cost depends on the sampled boxes and otherwise dominates the noise)::

    python tools/analysis_tools/benchmark_overhead.py \
        configs/kd/faster_rcnn_r101_to_r18.py --input-size 320 320

``--teachers N`` replaces the config's teacher by N copies fused by every
term (the cost of each extra teacher), ``--teacher-scale S`` gives the
teacher(s) the batch at S x the student's input.
"""
import argparse
import copy
import ctypes
import json
import os
import os.path as osp
import statistics
import sys
import threading
import time
from typing import Callable, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope

import visionkd  # noqa: F401
from visionkd.models.distillers import DetectionDistiller
from visionkd.registry import MODELS
from visionkd.utils import without_teacher_weights


def rss_mb() -> float:
    """Resident set size of this process, MiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
        'fsmblks', 'uordblks', 'fordblks', 'keepcost')]


def _heap_reader() -> Callable[[], float]:
    """Bytes in use by malloc (glibc ``mallinfo2``), MiB; RSS without it.

    ``mallinfo2`` counts what is allocated now (all arenas, plus mmapped
    blocks), so a phase that reuses memory freed by an earlier phase still
    shows what it holds; the resident set would only show growth.
    """
    try:
        libc = ctypes.CDLL('libc.so.6')
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return rss_mb
    fn.restype = _MallInfo2

    def heap_mb() -> float:
        info = fn()
        return (info.uordblks + info.hblkhd) / 2**20
    return heap_mb


heap_mb = _heap_reader()


class PeakMemory:
    """Peak memory growth of a code block, in MiB.

    CUDA: ``max_memory_allocated`` above the start. CPU: the most heap in
    use (``heap_mb``), sampled every millisecond by a thread, above the
    start; a peak shorter than the sampling interval can be missed.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0.0

    def __enter__(self) -> 'PeakMemory':
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = heap_mb()
            self.high = self.base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.high = max(self.high, heap_mb())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.peak = (torch.cuda.max_memory_allocated() -
                         self.base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.high, heap_mb()) - self.base


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random (samplers draw from all three)."""
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_batch(model, batch_size: int, size: Tuple[int, int],
               num_boxes: int = 8) -> dict:
    """A synthetic batch of the model's task, preprocessed (detection:
    ``num_boxes`` GT boxes per image)."""
    h, w = size
    if isinstance(model, DetectionDistiller):
        from mmdet.testing import demo_mm_inputs
        n_cls = getattr(getattr(model.student, 'roi_head', None),
                        'bbox_head', None)
        n_cls = getattr(n_cls, 'num_classes', None) or getattr(
            model.student.bbox_head, 'num_classes', 80)
        batch = demo_mm_inputs(batch_size, (3, h, w),
                               num_items=[num_boxes] * batch_size,
                               num_classes=n_cls)
    else:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        inputs, samples = [], []
        n_cls = model.student.decode_head.num_classes
        for _ in range(batch_size):
            inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
            s = SegDataSample(metainfo=dict(img_shape=(h, w),
                                            ori_shape=(h, w),
                                            pad_shape=(h, w)))
            s.gt_sem_seg = PixelData(
                data=torch.randint(0, n_cls, (1, h, w)))
            samples.append(s)
        batch = dict(inputs=inputs, data_samples=samples)
    return model.data_preprocessor(batch, True)


def with_teachers(model_cfg, num_teachers: int = 1,
                  teacher_scale: Optional[float] = None):
    """A one-teacher distiller config with ``num_teachers`` copies of its
    teacher (``teachers=dict(t0=..., t1=...)``, every term fusing all of
    them by their mean) and/or the teacher(s) at ``teacher_scale`` x the
    student's input; the cost of each extra teacher and of a bigger
    teacher input.

    Raises:
        ValueError: for a config with ``teachers`` already, or N < 1.
    """
    if num_teachers < 1:
        raise ValueError(f'--teachers must be >= 1, got {num_teachers}')
    if num_teachers == 1 and teacher_scale is None:
        return model_cfg
    if 'teachers' in model_cfg:
        raise ValueError('--teachers / --teacher-scale need a one-teacher '
                         'config (teacher=...), this one has teachers=')
    if teacher_scale is not None:
        model_cfg['teacher_input'] = dict(scale_factor=teacher_scale)
    if num_teachers == 1:
        return model_cfg
    one = dict(model=model_cfg.pop('teacher'),
               ckpt=model_cfg.pop('teacher_ckpt', None))
    if 'teacher_input' in model_cfg:
        one['input'] = model_cfg.pop('teacher_input')
    names = tuple(f't{i}' for i in range(num_teachers))
    model_cfg['teachers'] = {n: copy.deepcopy(one) for n in names}
    for term in model_cfg['distill_terms'].values():
        term['from_teacher'] = names
        term['fuse'] = 'mean'
    return model_cfg


def benchmark(cfg: Config, batch_size: int, size: Tuple[int, int],
              iters: int, warmup: int, device: str,
              num_boxes: int = 8) -> dict:
    without_teacher_weights(cfg.model)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model).to(device)
    model.train()
    dev = torch.device(device)
    data = make_batch(model, batch_size, size, num_boxes)
    inputs, samples = data['inputs'], data['data_samples']
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=1e-5, momentum=0.9)

    def sync() -> None:
        if dev.type == 'cuda':
            torch.cuda.synchronize()

    def student_step() -> None:
        losses = model.student.loss(inputs, samples)
        total, _ = model.parse_losses(losses)
        total.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        model.records.clear()

    def teacher_forward() -> None:
        model.run_teacher(inputs, samples)
        model.records.clear()

    def distill_step() -> None:
        losses = model.loss(inputs, samples)
        total, _ = model.parse_losses(losses)
        total.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    phases = dict(student_step=student_step, teacher_forward=teacher_forward,
                  distill_step=distill_step)
    times = {k: [] for k in phases}
    peaks = {k: 0.0 for k in phases}
    names = list(phases)
    for it in range(warmup + iters):
        order = names[it % 3:] + names[:it % 3]
        for name in order:
            fn: Callable[[], None] = phases[name]
            seed_everything(it)
            sync()
            with PeakMemory(dev) as mem:
                start = time.perf_counter()
                fn()
                sync()
                elapsed = time.perf_counter() - start
            if it >= warmup:
                times[name].append(elapsed)
                peaks[name] = max(peaks[name], mem.peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(
        device=str(dev) if dev.type == 'cpu' else torch.cuda.get_device_name(),
        batch_size=batch_size,
        input_size=list(size),
        num_boxes=num_boxes if isinstance(model, DetectionDistiller) else None,
        iters=iters,
        threads=torch.get_num_threads(),
        student_step_s=round(med['student_step'], 4),
        teacher_forward_s=round(med['teacher_forward'], 4),
        distill_step_s=round(med['distill_step'], 4),
        overhead_ratio=round(
            med['distill_step'] /
            (med['student_step'] + med['teacher_forward']), 4),
        student_step_peak_mb=round(peaks['student_step'], 1),
        teacher_forward_peak_mb=round(peaks['teacher_forward'], 1),
        distill_step_peak_mb=round(peaks['distill_step'], 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--input-size', type=int, nargs=2,
                        default=[320, 320], metavar=('H', 'W'))
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--num-boxes', type=int, default=8,
                        help='detection: GT boxes per image')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--teachers', type=int, default=1,
                        help='copies of the (one) teacher, every term '
                        'fusing all of them (cost of each extra teacher)')
    parser.add_argument('--teacher-scale', type=float,
                        help='teacher input scale (teacher_input)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.model = with_teachers(cfg.model, args.teachers, args.teacher_scale)
    result = benchmark(cfg, args.batch_size, tuple(args.input_size),
                       args.iters, args.warmup, args.device, args.num_boxes)
    result['config'] = args.config
    result['teachers'] = args.teachers
    result['teacher_scale'] = args.teacher_scale
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
