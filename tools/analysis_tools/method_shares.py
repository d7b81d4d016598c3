"""What the runner's weight rules do to every method on your data.

For each method of ``tools/run_experiments.py`` (``--methods``, default
all of the task) this builds its distilled run of the preset exactly as
the runner does (the family's student, the trained teacher given by
``--teacher-ckpt``, the method's preset weights), measures each term's
gradient share on the student layer it distils over the first
``--iters`` train batches of seed 0 (the measurement of
:class:`~visionkd.engine.hooks.AutoWeightHook`, which leaves no trace),
and prints the weight each rule of ``--weights`` gives it::

    python tools/analysis_tools/method_shares.py --task det \\
        --data-root ../shared/data/bccd --train-ann annotations/train.json \\
        --val-ann annotations/val.json --vertical-flip --preset cpu-small \\
        --teacher-ckpt work_dirs/bccd/runs/teacher/iter_400.pth \\
        [ddrnet=PATH ...] [--methods cwd fgd] [--target 1] [--json out.json]

``--teacher-ckpt`` takes the default family's teacher first, then
``FAMILY=PATH`` for the teachers of other families (a method whose
teacher is missing is listed as skipped). A method whose preset share is
below the target is left as it is by ``grad_share_cap`` (its published
preset runs are the capped rule's runs); ``grad_share`` raises it. Trains
nothing.
"""
import argparse
import json
import math
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmengine.config import Config

import visionkd  # noqa: F401
from tools.analysis_tools import calibrate_weights as cw
from visionkd.engine.hooks.auto_weight_hook import (
    calibrated_weights,
    measure_terms,
)
from visionkd.experiments import METHODS, PRESETS, get_preset
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.methods import MethodSpec
from visionkd.experiments.run_configs import run_config

__all__ = ['method_shares', 'main']


def _teacher_ckpt(spec: MethodSpec, default_arch: str,
                  ckpts: Dict[str, str]):
    """The run's teacher checkpoint(s); KeyError names a missing family."""
    families = spec.teacher_families(default_arch)
    missing = [f for f in families if f not in ckpts]
    if missing:
        raise KeyError(missing[0])
    paths = tuple(ckpts[f] for f in families)
    return None if not paths else paths[0] if len(paths) == 1 else paths


def _method_rows(cfg: Config, iters: int, target: float) -> List[dict]:
    seed = cw.setup(cfg)
    model = cw.build_model(cfg, 'cpu')
    meas = measure_terms(model, cw.train_batches(cfg, seed), iters)
    free = calibrated_weights(meas, target)
    capped = calibrated_weights(meas, target, max_factor=1.0)
    return [dict(term=name, share=m.share, weight=m.weight,
                 grad_share=free.get(name, m.weight),
                 grad_share_cap=capped.get(name, m.weight))
            for name, m in meas.terms.items()]


def method_shares(task: str, data: DataSpec, preset: str,
                  ckpts: Dict[str, str],
                  methods: Optional[Sequence[str]] = None,
                  iters: int = 10, target: float = 1.0) -> Dict[str, dict]:
    """Per method: ``{'terms': [row, ...]}`` or ``{'skipped': why}``.

    A row has the term's ``share`` at its preset ``weight`` and the weights
    of ``grad_share`` and ``grad_share_cap`` at ``target``.

    Args:
        task: ``'det'`` or ``'seg'``.
        data: The dataset.
        preset: Runner preset name.
        ckpts: Family -> trained teacher checkpoint.
        methods: Method names (None: all of the task).
        iters: Batches measured.
        target: The rules' gradient share.
    """
    pre = get_preset(task, preset)
    classes = data.class_names(task)
    out = {}
    for name in methods or sorted(METHODS[task]):
        spec = METHODS[task][name]
        arch = spec.arch or pre.default_arch
        try:
            ckpt = _teacher_ckpt(spec, pre.default_arch, ckpts)
        except KeyError as e:
            out[name] = dict(skipped=f'no --teacher-ckpt for the {e.args[0]}'
                             f' family')
            continue
        cfg = Config(run_config(pre, data, classes, 'distill', arch, spec,
                                ckpt))
        out[name] = dict(terms=_method_rows(cfg, iters, target))
    return out


def report(shares: Dict[str, dict], target: float) -> List[str]:
    """The printed table."""
    lines = [f'gradient share at the preset weight; the weight under '
             f'--weights grad_share / grad_share_cap (target {target:g})',
             f'{"method":<18}{"term":<10}{"share":>9}{"weight":>9}'
             f'{"grad_share":>12}{"_cap":>9}  cap changes it']
    for name, res in shares.items():
        if 'skipped' in res:
            lines.append(f'{name:<18}skipped: {res["skipped"]}')
            continue
        for r in res['terms']:
            lines.append(
                f'{name:<18}{r["term"]:<10}{r["share"]:>9.4g}'
                f'{r["weight"]:>9.4g}{r["grad_share"]:>12.4g}'
                f'{r["grad_share_cap"]:>9.4g}  '
                f'{"yes" if r["grad_share_cap"] != r["weight"] else "no"}')
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task', choices=('det', 'seg'), required=True)
    DataSpec.add_args(p)
    p.add_argument('--preset', default='cpu-small',
                   choices=sorted(PRESETS['det']))
    p.add_argument('--teacher-ckpt', nargs='+', required=True,
                   metavar='[FAMILY=]PATH', help='the default family\'s '
                   'teacher, then FAMILY=PATH for other families')
    p.add_argument('--methods', nargs='+')
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--target', type=float, default=1.0)
    p.add_argument('--json', metavar='OUT.json')
    args = p.parse_args(argv)
    if args.iters < 1 or not args.target > 0:
        p.error('--iters must be >= 1 and --target > 0')
    unknown = [m for m in args.methods or [] if m not in METHODS[args.task]]
    if unknown:
        p.error(f'unknown --methods {unknown}; {args.task} methods: '
                f'{sorted(METHODS[args.task])}')
    return args


def _ckpts(values: Sequence[str], default_arch: str) -> Dict[str, str]:
    out = {}
    for i, v in enumerate(values):
        fam, sep, path = v.partition('=')
        if not sep:
            fam, path = (default_arch if i == 0 else ''), v
        if not fam:
            raise SystemExit(f'error: --teacher-ckpt {v!r}: write '
                             f'FAMILY=PATH after the first')
        out[fam] = path
    return out


def main(argv=None) -> Dict[str, dict]:
    args = parse_args(argv)
    data = DataSpec.from_args(args)
    ckpts = _ckpts(args.teacher_ckpt,
                   get_preset(args.task, args.preset).default_arch)
    shares = method_shares(args.task, data, args.preset, ckpts,
                           args.methods, args.iters, args.target)
    print('\n'.join(report(shares, args.target)))
    if args.json:
        with open(args.json, 'w') as f:  # a share that is NaN as null
            json.dump(_no_nan(dict(target=args.target, iters=args.iters,
                                   preset=args.preset, methods=shares)),
                      f, indent=1)
    return shares


def _no_nan(value):
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == '__main__':
    main()
