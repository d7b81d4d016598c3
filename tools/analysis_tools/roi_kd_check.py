"""What the teacher's RoI head tells the student on the student's RoIs.

RoI-level KD (``RoIKDLoss``, configs/roi_kd) pulls the student's class
scores on the RoIs it sampled for its own loss towards the teacher's
scores on the same RoIs, and its box deltas towards the teacher's. That
can only help where the teacher is right about those RoIs. For a distilled
run config (e.g. ``work_dirs/x/configs/roi_kd.py`` of
``tools/run_experiments.py``, whose teacher checkpoint it loads) this runs
``--iters`` train batches in ``loss`` mode (no optimizer step) and prints,
over all the RoIs of those batches:

* RoIs per image and the foreground share (sampling label < C);
* how often the teacher's top class is the RoI's sampling label, and its
  mean probability of that label (at temperature 1), on foreground and
  on background RoIs; the same for the student;
* the loss's parts at their weights (foreground KL, background KL, box
  L1) beside the task loss (mean per batch)::

    python tools/analysis_tools/roi_kd_check.py \\
        work_dirs/facemask/configs/roi_kd.py --iters 10 \\
        [--student-ckpt work_dirs/facemask/runs/baseline_seed0/iter_900.pth]

``--student-ckpt`` loads a trained student (a baseline or a distilled
run's checkpoint) instead of the initialisation: it shows what the teacher
tells a student at the end of its training instead of at the start.
"""
import argparse
import copy
import inspect
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import load_checkpoint  # noqa: E402

import visionkd  # noqa: F401,E402
from tools.analysis_tools import calibrate_weights as cw  # noqa: E402
from visionkd.engine.hooks.auto_weight_hook import distiller_of  # noqa: E402
from visionkd.models.distillers.grad_share import split_losses  # noqa: E402
from visionkd.models.losses import RoIKDLoss  # noqa: E402

__all__ = ['roi_stats', 'check', 'main']


def _parts(loss: RoIKDLoss, call: dict) -> Dict[str, float]:
    """The loss's three parts, each with the others' weights at zero (the
    loss's own code computes them)."""
    out = {}
    for part in ('fg', 'bg', 'bbox'):
        if part == 'bbox' and loss.loss_weight_bbox == 0:
            out[part] = 0.0
            continue
        only = copy.copy(loss)
        for other in ('fg', 'bg', 'bbox'):
            if other != part:
                setattr(only, f'loss_weight_{other}', 0.0)
        out[part] = float(only(**call))
    return out


def roi_stats(preds_S: torch.Tensor, preds_T: torch.Tensor,
              labels: torch.Tensor) -> Dict[str, float]:
    """Agreement and label probability of the teacher and the student.

    Args:
        preds_S: Student class logits of the RoIs, (N, C + 1).
        preds_T: Teacher class logits, (N, C + 1).
        labels: Sampling labels, (N,), ``C`` for background.

    Returns:
        ``{'{who}_{fg|bg}_top1', '{who}_{fg|bg}_p'}`` for ``who`` in
        teacher, student (fractions; NaN without such RoIs) and the counts
        ``n_fg``, ``n_bg``.
    """
    num_classes = preds_T.size(1) - 1
    fg = labels < num_classes
    out = dict(n_fg=int(fg.sum()), n_bg=int((~fg).sum()))
    for who, logits in (('teacher', preds_T), ('student', preds_S)):
        prob = logits.float().softmax(1)
        top1 = prob.argmax(1) == labels
        p_label = prob.gather(1, labels[:, None])[:, 0]
        for name, mask in (('fg', fg), ('bg', ~fg)):
            n = int(mask.sum())
            out[f'{who}_{name}_top1'] = float(top1[mask].float().mean()) \
                if n else float('nan')
            out[f'{who}_{name}_p'] = float(p_label[mask].mean()) \
                if n else float('nan')
    return out


def _bound(loss: RoIKDLoss, args, kwargs) -> dict:
    call = inspect.signature(loss.forward).bind(*args, **kwargs).arguments
    return {k: (v.detach() if torch.is_tensor(v) else v)
            for k, v in call.items()}


def check(cfg: Config, iters: int = 10,
          student_ckpt: Optional[str] = None) -> dict:
    """Run the batches and gather the statistics (see the module doc)."""
    seed = cw.setup(cfg)
    model = distiller_of(cw.build_model(cfg, 'cpu'))
    if student_ckpt:  # a baseline's keys, or a distilled run's student.*
        load_checkpoint(model.student, student_ckpt, map_location='cpu',
                        strict=False, logger='current',
                        revise_keys=[(r'^module\.', ''),
                                     (r'^student\.', '')])
    losses = [m for m in model.modules() if isinstance(m, RoIKDLoss)]
    if not losses:
        raise ValueError('the config has no RoIKDLoss term')
    calls: List[dict] = []
    handles = [m.register_forward_pre_hook(
        lambda mod, a, kw: calls.append(dict(loss=mod,
                                             call=_bound(mod, a, kw))),
        with_kwargs=True) for m in losses]
    model.train()
    images, task = 0, []
    try:
        # with autograd on: split_losses counts the losses that need grad
        for _, batch in zip(range(iters), cw.train_batches(cfg, seed)):
            data = model.data_preprocessor(batch, True)
            images += len(data['data_samples'])
            out = model(**data, mode='loss')
            total, _ = split_losses(model.distill_terms, out)
            task.append(float(total.detach()))
    finally:
        for h in handles:
            h.remove()
    return _summary(calls, images, task)


def _summary(calls: List[dict], images: int, task: List[float]) -> dict:
    cat = {k: torch.cat([c['call'][k] for c in calls])
           for k in ('preds_S', 'preds_T', 'labels')}
    stats = roi_stats(cat['preds_S'], cat['preds_T'], cat['labels'])
    parts = [_parts(c['loss'], c['call']) for c in calls]
    n = max(len(task), 1)
    stats.update(
        images=images, rois_per_image=(stats['n_fg'] + stats['n_bg']) /
        max(images, 1), fg_share=stats['n_fg'] / max(
            stats['n_fg'] + stats['n_bg'], 1), task_loss=sum(task) / n,
        **{f'loss_{k}': sum(p[k] for p in parts) / n
           for k in ('fg', 'bg', 'bbox')})
    return stats


def report(stats: dict) -> List[str]:
    """The printed lines."""
    lines = [f'{stats["images"]} images, {stats["rois_per_image"]:.1f} '
             f'RoIs per image, {stats["fg_share"]:.1%} foreground',
             f'{"":<9}{"top-1 = label (fg)":>20}{"p(label) (fg)":>15}'
             f'{"top-1 (bg)":>12}{"p(label) (bg)":>15}']
    for who in ('teacher', 'student'):
        lines.append(
            f'{who:<9}{stats[f"{who}_fg_top1"]:>20.3f}'
            f'{stats[f"{who}_fg_p"]:>15.3f}{stats[f"{who}_bg_top1"]:>12.3f}'
            f'{stats[f"{who}_bg_p"]:>15.3f}')
    lines.append(f'loss per batch: task {stats["task_loss"]:.3f}; RoI KD '
                 f'fg KL {stats["loss_fg"]:.3f}, bg KL '
                 f'{stats["loss_bg"]:.3f}, box L1 {stats["loss_bbox"]:.3f}')
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a distilled run config with a '
                        'RoIKDLoss term')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--student-ckpt', help='a trained student to load')
    parser.add_argument('--json', metavar='OUT.json')
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error('--iters must be >= 1')
    stats = check(Config.fromfile(args.config), args.iters,
                  args.student_ckpt)
    print('\n'.join(report(stats)))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(stats, f, indent=1)
    return stats


if __name__ == '__main__':
    main()
