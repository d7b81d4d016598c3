"""The README's main job: distil a detector on the embedded BCCD subset.

Trains, on 2 CPU cores and with no download:

1. the teacher (Faster R-CNN ResNet-18-FPN at half the usual width,
   longer schedule),
2. the baseline student (the same at a quarter of the usual width),
3. the distilled student (same student and schedule + the KD terms of
   ``configs/demo/faster_rcnn_r18x2_to_r18_bccd_pkd.py``),

evaluates all three on the 40 val images with COCO bbox mAP and prints a
table. Finished stages are reused (``--force`` retrains), so a second run
only re-prints the results. Work goes to ``work_dirs/demo``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = osp.join(REPO, 'configs', 'demo')
STAGES = (
    ('teacher', 'faster_rcnn_r18x2_bccd_teacher.py'),
    ('baseline', 'faster_rcnn_r18_bccd_student.py'),
    ('distilled', 'faster_rcnn_r18x2_to_r18_bccd_pkd.py'),
)


def last_checkpoint(work_dir: str) -> Optional[str]:
    """Checkpoint recorded by mmengine as the last one, if it exists."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def run(cmd: list) -> str:
    """Run a tool, stream its output, return it."""
    print('$', ' '.join(cmd), flush=True)
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        sys.stdout.write(line)
    if proc.wait() != 0:
        raise SystemExit(f'command failed ({proc.returncode}): {cmd}')
    return ''.join(lines)


def metrics_of(output: str) -> Dict[str, float]:
    for line in reversed(output.splitlines()):
        if line.startswith('test metrics: '):
            return json.loads(line[len('test metrics: '):])
    raise SystemExit('tools/test.py printed no metrics')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs',
                                                       'demo'))
    parser.add_argument('--force', action='store_true',
                        help='retrain stages that already finished')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    py = sys.executable
    results, times = {}, {}
    teacher_ckpt = None
    for name, cfg_name in STAGES:
        cfg = osp.join(CFG, cfg_name)
        work_dir = osp.join(args.work_dir, name)
        opts = [f'randomness.seed={args.seed}']
        if name == 'distilled':
            opts.append(f'model.teacher_ckpt={teacher_ckpt}')
        start = time.time()
        ckpt = None if args.force else last_checkpoint(work_dir)
        if ckpt is None:
            print(f'\n=== training the {name} ({cfg_name}) ===', flush=True)
            run([py, 'tools/train.py', cfg, '--work-dir', work_dir,
                 '--cfg-options', *opts])
            ckpt = last_checkpoint(work_dir)
        else:
            print(f'\n=== reusing the {name}: {ckpt} ===', flush=True)
        out = run([py, 'tools/test.py', cfg, ckpt, '--work-dir',
                   osp.join(work_dir, 'test'), '--cfg-options', *opts])
        results[name] = metrics_of(out)
        times[name] = time.time() - start
        if name == 'teacher':
            teacher_ckpt = ckpt

    print('\nBCCD mini (40 val images), COCO bbox metrics, 0-100:')
    print(f'{"model":<12}{"mAP":>8}{"mAP50":>8}{"time s":>9}')
    for name, _ in STAGES:
        m = results[name]
        print(f'{name:<12}{100 * m["coco/bbox_mAP"]:>8.1f}'
              f'{100 * m["coco/bbox_mAP_50"]:>8.1f}{times[name]:>9.0f}')
    t = results['teacher']['coco/bbox_mAP']
    b = results['baseline']['coco/bbox_mAP']
    d = results['distilled']['coco/bbox_mAP']
    if t > b:
        print(f'gap closed by distillation: {100 * (d - b) / (t - b):.0f}% '
              f'(one seed: run with --seed N for the spread)')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(metrics=results, seconds=times), f, indent=2)


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))
    main()
