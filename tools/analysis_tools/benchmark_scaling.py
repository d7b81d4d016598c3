"""How the distill step grows with batch size, input size and GT boxes.

Runs :func:`benchmark_overhead.benchmark` once per point of each sweep
(one varied quantity, the others at their base value), prints a markdown
table and writes the raw JSON and a plot (step times vs the varied
quantity: student step, teacher forward, distill step)::

    python tools/analysis_tools/benchmark_scaling.py \
        configs/kd/faster_rcnn_r101_to_r18.py --batch-sizes 1 2 4 \
        --input-sizes 256 320 480 --boxes 2 10 50 --iters 3 \
        --out docs/results/benchmarks/scaling_cpu
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
from mmengine.config import Config, DictAction

from tools.analysis_tools.benchmark_overhead import benchmark

PHASES = ('student_step_s', 'teacher_forward_s', 'distill_step_s')


def sweep_points(args: argparse.Namespace) -> Dict[str, List[dict]]:
    """``{quantity: [benchmark kwargs]}``, one varied quantity each."""
    base = dict(batch_size=args.base_batch, size=args.base_size,
                num_boxes=args.base_boxes)
    out = {}
    for key, values, field in (('batch', args.batch_sizes, 'batch_size'),
                               ('input', args.input_sizes, 'size'),
                               ('boxes', args.boxes, 'num_boxes')):
        out[key] = [dict(base, **{field: v}) for v in values or []]
    return out


def run_sweeps(cfg: Config, args: argparse.Namespace) -> Dict[str, list]:
    results: Dict[str, list] = {}
    for key, points in sweep_points(args).items():
        for p in points:
            size = (p['size'], p['size'])
            row = benchmark(cfg.copy(), p['batch_size'], size, args.iters,
                            args.warmup, args.device, p['num_boxes'])
            results.setdefault(key, []).append(row)
            print(json.dumps(row), flush=True)
    return results


def markdown(results: Dict[str, list]) -> str:
    lines = ['| sweep | batch | input | boxes/img | student step | '
             'teacher fwd | distill step | ratio |', '|' + '---|' * 8]
    for key, rows in results.items():
        for r in rows:
            h, w = r['input_size']
            lines.append(
                f"| {key} | {r['batch_size']} | {h}x{w} | "
                f"{r['num_boxes'] if r['num_boxes'] is not None else '-'} | "
                f"{r['student_step_s']:.3f} s | "
                f"{r['teacher_forward_s']:.3f} s | "
                f"{r['distill_step_s']:.3f} s | {r['overhead_ratio']:.3f} |")
    return '\n'.join(lines)


def plot(results: Dict[str, list], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = [k for k in results if results[k]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4),
                             squeeze=False)
    xs = dict(batch=lambda r: r['batch_size'],
              input=lambda r: r['input_size'][0],
              boxes=lambda r: r['num_boxes'])
    labels = dict(batch='batch size', input='input side (px)',
                  boxes='GT boxes per image')
    for ax, key in zip(axes[0], keys):
        rows = results[key]
        for phase in PHASES:
            ax.plot([xs[key](r) for r in rows], [r[phase] for r in rows],
                    marker='o', label=phase[:-2].replace('_', ' '))
        ax.set_xlabel(labels[key])
        ax.set_ylabel('seconds')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--batch-sizes', type=int, nargs='*')
    parser.add_argument('--input-sizes', type=int, nargs='*')
    parser.add_argument('--boxes', type=int, nargs='*')
    parser.add_argument('--base-batch', type=int, default=2)
    parser.add_argument('--base-size', type=int, default=320)
    parser.add_argument('--base-boxes', type=int, default=8)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write OUT.json, OUT.md and OUT.png')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    results = run_sweeps(cfg, args)
    table = markdown(results)
    print(table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out + '.json', 'w') as f:
            json.dump(dict(config=args.config, results=results), f, indent=1)
        with open(args.out + '.md', 'w') as f:
            f.write(table + '\n')
        plot(results, args.out + '.png', f'{args.config} ({args.device})')


if __name__ == '__main__':
    main()
