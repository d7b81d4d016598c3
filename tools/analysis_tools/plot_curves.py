"""Plot distillation / task loss curves and metric curves of a run.

Reads mmengine's scalar log of a work dir (``<work_dir>/<timestamp>/
vis_data/scalars.json``, one JSON object per logged step; the newest run
when several exist) or the given ``.json`` files, and writes one PNG with
up to four panels:

* distillation losses: every ``loss_kd_*`` key, plus their sum;
* task losses: the other ``loss*`` keys (``loss`` is the total);
* gradient shares: the ``grad_share_*`` keys (``grad_share_interval``);
* metrics: the validation scalars (``coco/bbox_mAP``, ``mIoU``, ...) over
  the evaluation steps, or as bars when there was a single evaluation.

::

    python tools/analysis_tools/plot_curves.py work_dirs/kd --out curves.png
    python tools/analysis_tools/plot_curves.py a/vis_data/scalars.json \\
        --keys loss_kd_fpn_l0 loss --out fpn.png
"""
import argparse
import glob
import json
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt

__all__ = ['find_scalar_logs', 'read_scalars', 'plot_curves', 'main']

#: Keys of a training line that are not curves.
_NOT_CURVES = {'iter', 'epoch', 'step', 'lr', 'time', 'data_time', 'memory',
               'base_lr', 'grad_norm'}

Series = Dict[str, Tuple[List[float], List[float]]]


def find_scalar_logs(path: str) -> List[str]:
    """The ``scalars.json`` files that ``path`` (file or work dir) means."""
    if osp.isfile(path):
        return [path]
    found = sorted(glob.glob(osp.join(path, '**', 'vis_data',
                                      'scalars.json'), recursive=True),
                   key=osp.getmtime)
    if not found:
        raise FileNotFoundError(
            f'no vis_data/scalars.json under {path!r}: give a work dir of '
            f'tools/train.py or the json file')
    return [found[-1]]


def read_scalars(paths: List[str]) -> Tuple[Series, Series]:
    """Training and validation curves: ``{key: (steps, values)}``.

    A line with ``lr`` or a ``loss*`` key is a training line (x = its
    ``iter``, or ``step``); any other line is a validation line (x = its
    ``step``, the training iteration or epoch it was run at).
    """
    train: Series = defaultdict(lambda: ([], []))
    val: Series = defaultdict(lambda: ([], []))
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                is_train = 'lr' in rec or any(
                    k.startswith('loss') for k in rec)
                x = rec.get('iter', rec.get('step')) if is_train else rec.get(
                    'step')
                target = train if is_train else val
                for key, value in rec.items():
                    if key in _NOT_CURVES or not isinstance(
                            value, (int, float)):
                        continue
                    target[key][0].append(x)
                    target[key][1].append(float(value))
    return dict(train), dict(val)


def _bars(ax, val: Series) -> None:
    keys = sorted(val)
    values = [val[k][1][0] for k in keys]
    ax.barh(keys, values, color='tab:blue')
    for i, v in enumerate(values):
        ax.text(v, i, f' {v:.4g}', va='center', fontsize=7)
    step = val[keys[0]][0][0]
    ax.set_title(f'validation metrics (one evaluation, step {step})')
    ax.tick_params(axis='y', labelsize=7)
    ax.grid(alpha=0.3, axis='x')


def plot_curves(paths: List[str], out: str,
                keys: Optional[List[str]] = None) -> str:
    """Write the PNG (one panel per kind of curve) to ``out``; return ``out``.

    Args:
        paths: ``scalars.json`` files (concatenated, e.g. a resumed run).
        out: PNG path.
        keys: Only these keys (in whichever panel they belong to).
    """
    train, val = read_scalars(paths)
    if keys:
        train = {k: v for k, v in train.items() if k in keys}
        val = {k: v for k, v in val.items() if k in keys}
    kd = {k: v for k, v in train.items() if k.startswith('loss_kd_')}
    share = {k: v for k, v in train.items() if k.startswith('grad_share_')}
    task = {k: v for k, v in train.items()
            if k.startswith('loss') and k not in kd}
    if len(kd) > 1:
        steps = kd[next(iter(kd))][0]
        total = [sum(vals) for vals in zip(*(v[1] for v in kd.values()))]
        kd['distill total'] = (steps[:len(total)], total)
    if not (kd or task or val or share):
        raise ValueError(f'no loss or metric curves in {paths}')
    panels = [('distillation losses', kd, 'iteration'),
              ('task losses', task, 'iteration'),
              ('gradient share (term / task, grad_share_interval)', share,
               'iteration'),
              ('validation metrics', val, 'step (iteration / epoch)')]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4),
                             squeeze=False)
    for ax, (title, series, xlabel) in zip(axes[0], panels):
        if series is val and max(len(xs) for xs, _ in val.values()) == 1:
            _bars(ax, val)  # a single evaluation: no curve to draw
            continue
        for key, (xs, ys) in sorted(series.items()):
            style = dict(marker='o') if len(xs) < 20 else {}
            ax.plot(xs, ys, label=key, linewidth=1.2, **style)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(osp.relpath(paths[0]) if len(paths) == 1 else
                 f'{len(paths)} logs', fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('logs', nargs='+',
                        help='work dir(s) or vis_data/scalars.json file(s)')
    parser.add_argument('--out', default='curves.png', help='PNG to write')
    parser.add_argument('--keys', nargs='+', help='only these scalar keys')
    args = parser.parse_args(argv)
    paths = [p for log in args.logs for p in find_scalar_logs(log)]
    print(plot_curves(paths, args.out, args.keys))


if __name__ == '__main__':
    sys.exit(main())
