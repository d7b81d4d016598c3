"""Which distillation helps on my data? Teacher, baseline, methods, seeds.

Trains the teacher once (or takes ``--teacher-ckpt``), the baseline
student per seed and every method per seed at the same schedule, evaluates
all on the val split and writes ``results.json``, ``results.md``,
``results.png`` and ``runs.json`` (every run's config, log and checkpoint)
to ``--work-dir``. Running the same command again resumes: finished runs
are read back, an interrupted one continues from its last checkpoint.

``--budget iters`` (default) trains every student the same iterations;
``--budget time`` gives each distilled student the iterations that take it
the baseline's time, from timing probes of every student config
(``visionkd/experiments/time_budget.py``; counts kept in ``budget.json``).

``--assistant mid`` chains teacher -> assistant -> student: the family's
in-between model is trained distilled from the teacher (with each method,
or with ``--assistant-method M`` only), exported to a plain checkpoint,
and one more student per method and seed learns from it
(``<method>_via_mid``); the report shows both rows.

``--executor slurm`` submits each run as a Slurm job through submitit
(``--slurm-partition``, ``--slurm-gpus``, ``--slurm-cpus``, ...; the work
dir must be on a file system the nodes share); a student's job is
submitted once its teacher's has finished, ``--jobs`` caps the jobs in the
queue, and the same command resumes. ``--executor submitit-local`` runs
the same jobs on this machine (``visionkd/experiments/cluster.py``).

Detection (COCO json)::

    python tools/run_experiments.py --task det --data-root data/bccd \\
        --train-ann annotations/train.json --val-ann annotations/val.json \\
        --methods pkd fgd --seeds 0 1 --preset cpu-small --work-dir out/bccd

Segmentation (Cityscapes layout: leftImg8bit/<split>, gtFine/<split>)::

    python tools/run_experiments.py --task seg --data-root data/camvid \\
        --train-split train --val-split val --methods cwd dist \\
        --seeds 0 1 --preset cpu-small --work-dir out/camvid
"""
import argparse
import json
import os
import os.path as osp
import shlex
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmengine.config import DictAction

from visionkd.experiments import (
    METHODS,
    PRESETS,
    ExperimentOptions,
    run_experiments,
)
from visionkd.experiments.cluster import EXECUTORS, ClusterOptions
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.evidence import recommend
from visionkd.experiments.experiment import ExperimentFailed
from visionkd.experiments.run_configs import WEIGHT_RULES
from visionkd.experiments.time_budget import BUDGETS

#: The cross-dataset ranking ``--recommend`` reads (tools/demo/ranking.py).
RANKING = osp.join(REPO, 'docs', 'results', 'ranking.json')
#: Environment variables quoted with the command in results.md.
_ENV_SHOWN = ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY')


def parse_args(argv=None) -> argparse.Namespace:
    methods = ', '.join(f'{t}: {" ".join(sorted(m))}'
                        for t, m in METHODS.items())
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f'methods -- {methods}; presets: '
        f'{" ".join(sorted(PRESETS["det"]))}')
    parser.add_argument('--task', choices=sorted(PRESETS), required=True)
    DataSpec.add_args(parser, root_required=False,
                      root_help='the dataset (required unless --recommend)')
    parser.add_argument('--methods', nargs='+',
                        help='methods to compare (default: all of the task)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--preset', default='cpu-small',
                        choices=sorted(PRESETS['det']))
    parser.add_argument('--teacher-iters', type=int,
                        help="override the preset's teacher iterations")
    parser.add_argument('--student-iters', type=int,
                        help="override the preset's student iterations")
    parser.add_argument('--teacher-ckpt',
                        help='a trained teacher of the preset; skips '
                        'teacher training')
    parser.add_argument('--work-dir', help='output folder (required unless '
                        '--recommend)')
    parser.add_argument('--recommend', action='store_true',
                        help="print the --task method to try first on new "
                        'data from the cross-dataset evidence '
                        '(docs/results/ranking.json) and how sure it is; '
                        'trains nothing')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs trained at the same time; a distilled '
                        'student waits for its teacher; each run gets '
                        'cpu_count // jobs threads unless OMP_NUM_THREADS is '
                        'set (default: 1)')
    parser.add_argument('--budget', choices=BUDGETS, default='iters',
                        help="iters: every student trains the preset's "
                        'iterations; time: a distilled student trains as '
                        'long as the baseline (fewer iterations, measured '
                        'by a probe of each config; default: iters)')
    parser.add_argument('--probe-iters', type=int, default=10,
                        help='--budget time: timed iterations per probe '
                        '(default: 10)')
    parser.add_argument('--probe-warmup', type=int, default=2,
                        help='--budget time: untimed iterations before '
                        '(default: 2)')
    parser.add_argument('--assistant', metavar='NAME',
                        help='teacher assistant of the model families '
                        "(e.g. 'mid', see docs/experiments.md): trained "
                        'distilled from the teacher, then the teacher of '
                        'one more student per method and seed')
    parser.add_argument('--assistant-method', metavar='METHOD',
                        help='--assistant: train one assistant with this '
                        'method for every method (default: one assistant '
                        'per method, distilled with that method)')
    parser.add_argument('--weights', choices=WEIGHT_RULES, default='preset',
                        help="the distilled runs' term weights: preset, the "
                        "methods' own; grad_share, each term's weight set "
                        'at the start so that its gradient share on the '
                        'student layer it distils is --weight-target '
                        '(AutoWeightHook, 10 batches); grad_share_cap, the '
                        'same but weights are only lowered (a term weaker '
                        'than the target keeps its weight; default: '
                        'preset)')
    parser.add_argument('--weight-target', type=float, default=1.0,
                        help='--weights grad_share(_cap): the gradient '
                        'share (default: 1.0, as hard as the task loss)')
    _add_cluster_args(parser)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides merged into every run config; '
                        'METHOD:KEY=VALUE only into the runs distilled '
                        'with METHOD (e.g. af_dcd:model.distill_terms.'
                        'af_dcd.loss.loss_weight=0.2)')
    args = parser.parse_args(argv)
    if not args.weight_target > 0:
        parser.error(f'--weight-target must be > 0 (a gradient share), got '
                     f'{args.weight_target}')
    if not args.recommend:
        missing = [f'--{k.replace("_", "-")}' for k in ('data_root',
                                                         'work_dir')
                   if getattr(args, k) is None]
        if missing:
            parser.error(f'the following arguments are required: '
                         f'{", ".join(missing)}')
    return args


def _add_cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--executor', choices=EXECUTORS, default='local',
                        help='local: subprocesses of this machine; slurm: '
                        'one Slurm job per run (submitit); submitit-local: '
                        'the same jobs on this machine (default: local)')
    parser.add_argument('--slurm-partition', help='--executor slurm: the '
                        "partition (default: the cluster's)")
    parser.add_argument('--slurm-gpus', type=int, default=0,
                        help='GPUs per job (a run uses one; default: 0)')
    parser.add_argument('--slurm-cpus', type=int, default=4,
                        help='CPUs per job, also its OMP_NUM_THREADS '
                        '(default: 4)')
    parser.add_argument('--slurm-timeout', type=int, default=240,
                        metavar='MINUTES', help='job time limit; a run cut '
                        'by it resumes when the command runs again '
                        '(default: 240)')
    parser.add_argument('--slurm-mem', type=int, metavar='GB',
                        help="memory per job (default: the partition's)")
    parser.add_argument('--slurm-option', nargs='+', action=DictAction,
                        metavar='KEY=VALUE', help='more SlurmExecutor '
                        'parameters, e.g. account=ABC qos=high')


def _cluster(args: argparse.Namespace) -> ClusterOptions:
    return ClusterOptions(
        executor=args.executor, partition=args.slurm_partition,
        gpus=args.slurm_gpus, cpus=args.slurm_cpus,
        timeout_min=args.slurm_timeout, mem_gb=args.slurm_mem,
        extra=dict(args.slurm_option or {}))


def print_recommendation(task: str, path: str = RANKING) -> dict:
    """Print (and return) :func:`~visionkd.experiments.evidence.recommend`
    for ``task`` from the published ranking."""
    with open(path) as f:
        ranking = json.load(f)
    rec = recommend(ranking, task)
    where = osp.relpath(path, REPO)
    if rec['method'] is None:
        print(f'{task}: no recommendation ({where}): {rec["reason"]}')
        return rec
    print(f'{task}: try {rec["method"]} first (confidence: '
          f'{rec["confidence"]}; {where})')
    print(f'  {rec["reason"]}')
    if rec['runner_up']:
        print(f'  next: {rec["runner_up"]}; compare both on your data: '
              f'tools/run_experiments.py --task {task} --methods '
              f'{rec["method"]} {rec["runner_up"]} --seeds 0 1 2 ...')
    return rec


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.recommend:
        print_recommendation(args.task)
        return 0
    data = DataSpec.from_args(args)
    argv = sys.argv[1:] if argv is None else argv
    opts = ExperimentOptions(
        task=args.task, data=data, work_dir=args.work_dir,
        preset=args.preset, methods=args.methods, seeds=args.seeds,
        teacher_ckpt=args.teacher_ckpt, teacher_iters=args.teacher_iters,
        student_iters=args.student_iters, jobs=args.jobs,
        budget=args.budget, probe_iters=args.probe_iters,
        probe_warmup=args.probe_warmup, assistant=args.assistant,
        assistant_method=args.assistant_method, cluster=_cluster(args),
        weight_rule=args.weights, weight_target=args.weight_target,
        cfg_options=dict(args.cfg_options) if args.cfg_options else None,
        command=''.join(f'{k}={os.environ[k]} ' for k in _ENV_SHOWN
                        if k in os.environ) +
        'python tools/run_experiments.py ' +
        ' '.join(shlex.quote(a) for a in argv))
    try:
        run_experiments(opts)
    except ExperimentFailed as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
