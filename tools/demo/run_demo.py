"""The README's main job: distil a detector on the embedded BCCD subset.

Trains, on 2 CPU cores and with no download:

1. the teacher (Faster R-CNN ResNet-18-FPN at half the usual width,
   longer schedule),
2. the baseline student (the same at a quarter of the usual width),
3. the distilled student: the same student and schedule plus the
   distillation terms of the method our evidence ranks first
   (``docs/results/ranking.json``, written by ``tools/demo/ranking.py``
   from the published ``docs/results/*/results.json``). The terms are the
   experiment runner's for its ``cpu-small`` preset, whose Faster R-CNN
   pair is this demo's (``configs/demo``): what the evidence trained. The
   config is written to ``<work-dir>/configs/``.

It evaluates the three on the 40 val images with COCO bbox mAP, draws
``predictions.png`` (ground truth and each model's boxes on the first val
images) and ``results.png`` (mAP bars, task and distillation losses) and
prints teacher / baseline / distilled, the gain, the share of the
teacher-baseline gap closed and where the PNGs and the log
(``demo.log``) are. Finished stages are reused (``--force``
retrains), so a second run only re-evaluates and re-prints. Work goes to
``work_dirs/demo``; ``--method NAME`` distils with another method.
"""
import argparse
import json
import os
import os.path as osp
import pprint
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # figures.py
CFG = osp.join(REPO, 'configs', 'demo')
TEACHER_CFG = osp.join(CFG, 'faster_rcnn_r18x2_bccd_teacher.py')
STUDENT_CFG = osp.join(CFG, 'faster_rcnn_r18_bccd_student.py')
RANKING = osp.join(REPO, 'docs', 'results', 'ranking.json')
#: The demo's model family in the runner's ``cpu-small`` preset.
FAMILY = 'faster_rcnn'
CLASSES = ('RBC', 'WBC', 'Platelets')
NUM_CLASSES = len(CLASSES)
#: Training skips the config's final validation: the test that follows
#: gives the same metrics and the predictions for the PNG.
NO_VAL = ('val_dataloader=None', 'val_cfg=None', 'val_evaluator=None')
_LOG: List[TextIO] = []


def say(line: str = '') -> None:
    """Print a line and append it to the demo's log."""
    print(line, flush=True)
    for f in _LOG:
        f.write(line + '\n')
        f.flush()


def last_checkpoint(work_dir: str) -> Optional[str]:
    """Checkpoint recorded by mmengine as the last one, if it exists."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def run(cmd: list) -> str:
    """Run a tool, stream its output (and log it), return it."""
    say('$ ' + ' '.join(cmd))
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        sys.stdout.write(line)
        for f in _LOG:
            f.write(line)
    if proc.wait() != 0:
        raise SystemExit(f'command failed ({proc.returncode}): {cmd}')
    return ''.join(lines)


def metrics_of(output: str) -> Dict[str, float]:
    for line in reversed(output.splitlines()):
        if line.startswith('test metrics: '):
            return json.loads(line[len('test metrics: '):])
    raise SystemExit('tools/test.py printed no metrics')


def demo_methods() -> Dict[str, object]:
    """The runner's detection methods that run on the demo's models."""
    from visionkd.experiments import methods_for
    return {m.name: m for m in methods_for('det')
            if (m.arch or FAMILY) == FAMILY}


def _ordinal(n: int) -> str:
    teen = n % 100 // 10 == 1
    suffix = 'th' if teen else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')
    return f'{n}{suffix}'


def _evidence(row: dict, datasets: dict) -> str:
    """``bccd: +6.95 bbox_mAP, 87 % of the gap, 2 seeds``, per dataset."""
    parts = []
    for name, s in row['datasets'].items():
        closed = '' if s['gap_closed'] is None else \
            f', {100 * s["gap_closed"]:.0f} % of the gap'
        metric = datasets.get(name, {}).get('metric', '')
        parts.append(f'{name}: {s["gain"]:+.2f} {metric}{closed}, '
                     f'{s["seeds"]} seed(s)')
    return '; '.join(parts)


def choose_method(ranking: dict, available, method: Optional[str] = None,
                  source: str = RANKING) -> Tuple[str, str]:
    """The demo's method and the line saying why.

    Args:
        ranking: ``docs/results/ranking.json``.
        available: Names of the methods that run on the demo's models.
        method: ``--method`` (None: the best ranked available one).
        source: The ranking's path, quoted in the line.

    Returns:
        (method name, explanation).
    """
    det = ranking['tasks']['det']
    rows = det['ranking']
    where = osp.relpath(source, REPO)
    if method is not None:
        if method not in available:
            raise SystemExit(f'--method {method!r} does not run on the demo '
                             f'models; choose from {sorted(available)}')
        rank = next((r['rank'] for r in rows if r['method'] == method), None)
        note = f'ranked {_ordinal(rank)} of {len(rows)}' if rank else \
            'not ranked'
        return method, f'{method} (chosen with --method; {note} in {where})'
    skipped = []
    for row in rows:
        if row['method'] in available:
            note = f' (ahead of it but not on these models: ' \
                f'{", ".join(skipped)})' if skipped else ''
            datasets = det['datasets']
            return row['method'], (
                f'{row["method"]}, ranked {_ordinal(row["rank"])} of '
                f'{len(rows)} detection methods in {where}{note}: mean share '
                f'of the teacher-baseline gap closed over {len(datasets)} '
                f'dataset(s) ({_evidence(row, datasets)})')
        skipped.append(row['method'])
    raise SystemExit(f'no method of {where} runs on the demo models '
                     f'{sorted(available)}; pass --method')


def write_distill_config(spec, path: str) -> str:
    """The distilled stage's config: the runner's terms of ``spec``."""
    from visionkd.experiments import get_preset
    from visionkd.experiments.run_configs import model_cfgs, model_info
    preset = get_preset('det', 'cpu-small')
    teacher, student = model_cfgs(preset, FAMILY, NUM_CLASSES)
    terms = spec.build_terms(model_info(preset, teacher, student,
                                        NUM_CLASSES))
    os.makedirs(osp.dirname(path), exist_ok=True)
    body = pprint.pformat(terms, width=72).replace('\n', '\n    ')
    with open(path, 'w') as f:
        f.write(
            f'# The README demo\'s distilled student ({spec.name}), written '
            f'by tools/demo/run_demo.py:\n# the baseline student\'s data and '
            f'schedule, the 2x-wide teacher and the\n# distillation terms of '
            f'the experiment runner\'s cpu-small preset.\n'
            f'_base_ = [{STUDENT_CFG!r}]\n'
            f'model = dict(\n    _delete_=True,\n'
            f"    type='visionkd.DetectionDistiller',\n"
            f'    student={STUDENT_CFG!r},\n    teacher={TEACHER_CFG!r},\n'
            f'    teacher_ckpt=None,  # the demo passes its teacher\n'
            f'    distill_terms={body})\n')
    return path


def run_stage(name: str, cfg: str, work_dir: str, opts: List[str],
              force: bool) -> Tuple[Dict[str, float], str, float]:
    """Train (or reuse) and test one stage: (metrics, checkpoint, seconds).

    The test's predictions go to ``<work_dir>/predictions.pkl``.
    """
    py = sys.executable
    start = time.time()
    ckpt = None if force else last_checkpoint(work_dir)
    if ckpt is None:
        say(f'\n=== training the {name} ({osp.relpath(cfg, REPO)}) ===')
        run([py, 'tools/train.py', cfg, '--work-dir', work_dir,
             '--cfg-options', *opts, *NO_VAL])
        ckpt = last_checkpoint(work_dir)
    else:
        say(f'\n=== reusing the {name}: {ckpt} ===')
    out = run([py, 'tools/test.py', cfg, ckpt, '--work-dir',
               osp.join(work_dir, 'test'), '--out',
               osp.join(work_dir, 'predictions.pkl'), '--cfg-options', *opts])
    return metrics_of(out), ckpt, time.time() - start


def summary(results: Dict[str, Dict[str, float]],
            seconds: Dict[str, float], method: str, why: str,
            pngs: Sequence[str], log: str) -> List[str]:
    """The closing lines: table, gain, gap closed, PNGs and log."""
    lines = ['', f'Distillation method: {why}', '',
             'BCCD mini (40 val images), COCO bbox metrics, 0-100:',
             f'{"model":<22}{"mAP":>7}{"mAP50":>8}{"time s":>9}']
    for name in ('teacher', 'baseline', 'distilled'):
        m = results[name]
        label = f'distilled ({method})' if name == 'distilled' else name
        lines.append(f'{label:<22}{100 * m["coco/bbox_mAP"]:>7.1f}'
                     f'{100 * m["coco/bbox_mAP_50"]:>8.1f}'
                     f'{seconds[name]:>9.0f}')
    t, b, d = (100 * results[n]['coco/bbox_mAP']
               for n in ('teacher', 'baseline', 'distilled'))
    closed = f'{100 * (d - b) / (t - b):.0f} % of the {t - b:.1f}-point ' \
        'teacher-baseline gap' if t > b else \
        'n/a (the teacher is not above the baseline)'
    lines += [f'gain: {d - b:+.1f} mAP (distilled - baseline); gap closed: '
              f'{closed} (one seed: run with --seed N for the spread)',
              'PNGs: ' + ', '.join(pngs),
              f'log: {log} (each stage\'s mmengine log: '
              f'<stage>/<timestamp>/<timestamp>.log)']
    return lines


def draw(root: str, folders: Dict[str, str],
         results: Dict[str, Dict[str, float]], method: str) -> List[str]:
    """``predictions.png`` and ``results.png`` in ``root``; their paths."""
    from figures import draw_predictions, draw_results
    maps = {n: 100 * m['coco/bbox_mAP'] for n, m in results.items()}
    titles = {n: f'{n} {maps[n]:.1f}' if n != 'distilled' else
              f'{method} {maps[n]:.1f}' for n in folders}
    return [
        draw_predictions({n: osp.join(root, f, 'predictions.pkl')
                          for n, f in folders.items()}, titles,
                         osp.join(root, 'predictions.png'), CLASSES),
        draw_results(maps, method, {n: osp.join(root, folders[n])
                                    for n in ('baseline', 'distilled')},
                     osp.join(root, 'results.png'))]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs',
                                                       'demo'))
    parser.add_argument('--force', action='store_true',
                        help='retrain stages that already finished')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--method', help='distil with this method instead '
                        'of the best ranked one')
    parser.add_argument('--ranking', default=RANKING,
                        help='the cross-dataset ranking to follow')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='passed to every train/test command (e.g. '
                        'train_cfg.max_iters=2 for a smoke run)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    log = osp.join(args.work_dir, 'demo.log')
    _LOG.append(open(log, 'w'))
    with open(args.ranking) as f:
        ranking = json.load(f)
    specs = demo_methods()
    method, why = choose_method(ranking, specs, args.method, args.ranking)
    say(f'Distillation method: {why}')
    distill_cfg = write_distill_config(specs[method], osp.join(
        args.work_dir, 'configs', f'distilled_{method}.py'))
    stages = (('teacher', TEACHER_CFG, 'teacher'),
              ('baseline', STUDENT_CFG, 'baseline'),
              ('distilled', distill_cfg, f'distilled_{method}'))
    results, seconds = {}, {}
    teacher_ckpt = None
    for name, cfg, folder in stages:
        opts = [f'randomness.seed={args.seed}', *args.cfg_options]
        if name == 'distilled':
            opts.append(f'model.teacher_ckpt={teacher_ckpt}')
        results[name], ckpt, seconds[name] = run_stage(
            name, cfg, osp.join(args.work_dir, folder), opts, args.force)
        if name == 'teacher':
            teacher_ckpt = ckpt
    pngs = draw(args.work_dir, {n: f for n, _, f in stages}, results, method)
    for line in summary(results, seconds, method, why, pngs, log):
        say(line)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(method=method, why=why, metrics=results,
                       seconds=seconds, pngs=pngs), f, indent=2)


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))
    main()
