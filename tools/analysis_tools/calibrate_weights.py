"""Calibrate each distillation term's weight to a target gradient share.

Runs the distiller's ``loss`` mode on the first ``--iters`` batches of the
config's train data (the model as training starts it: ``init_weights``,
``load_from``, the teacher from ``teacher_ckpt``; no optimizer step) and
prints, per term, its loss, its gradient share (the norm of its gradient
on the parameters of the student layer it distils over the task loss's
there; median over the batches, see
:mod:`visionkd.engine.hooks.auto_weight_hook`) and the ``weight`` that
brings that share to ``--target``. The term's ``weight`` multiplies all
its losses, so the effective ``loss_weight`` of a one-loss term is
``loss_weight * weight`` (printed too)::

    python tools/analysis_tools/calibrate_weights.py CONFIG [--iters 10] \\
        [--target 1.0] [--max-factor 1] [--write out.py] \\
        [--checkpoint TEACHER.pth]

``--max-factor 1`` only lowers weights (the runner's ``--weights
grad_share_cap``): a term whose share is below the target keeps its weight.

``--write out.py`` writes a config that inherits CONFIG and sets those
weights. ``custom_hooks=[dict(type='visionkd.AutoWeightHook', ...)]`` does
the same at the start of training.
"""
import argparse
import contextlib
import copy
import io
import itertools
import math
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner, load_checkpoint, set_random_seed
from mmengine.utils import import_modules_from_strings

import visionkd  # noqa: F401
from tools.common import load_config
from visionkd.engine.hooks.auto_weight_hook import (
    Measurement,
    calibrated_weights,
    distiller_of,
    measure_terms,
    pasteable,
)
from visionkd.models.distillers.terms.build_utils import term_loss_cfgs

_LOGGERS = itertools.count()


def setup(cfg: Config, log_level: str = 'WARNING') -> int:
    """Imports, default scope, seed and a quiet logger; returns the seed.
    """
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', None) or 'mmdet')
    # a new instance is the current one (what mmengine and visionkd log to)
    MMLogger.get_instance(f'visionkd_analysis_{next(_LOGGERS)}',
                          log_level=log_level)
    seed = (cfg.get('randomness', None) or {}).get('seed', None)
    seed = 0 if seed is None else seed
    set_random_seed(seed)
    return seed


def load_from(model: torch.nn.Module, path: str) -> None:
    """What the runner does with ``load_from`` (non-strict)."""
    load_checkpoint(model, path, map_location='cpu', strict=False,
                    logger='current', revise_keys=[(r'^module\.', '')])


def build_model(cfg: Config, device: str) -> torch.nn.Module:
    """The distiller as training starts it: built (teacher loaded),
    ``init_weights()``, then ``load_from`` if set."""
    model = MODELS.build(copy.deepcopy(cfg.model))
    distiller_of(model)
    model.init_weights()
    if cfg.get('load_from', None):
        load_from(model, cfg.load_from)
    return model.to(device)


def train_batches(cfg: Config, seed: int):
    """The config's train dataloader (the batches training starts with)."""
    loader = copy.deepcopy(cfg.train_dataloader)
    loader['persistent_workers'] = False
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' prints
        return Runner.build_dataloader(loader, seed=seed)


def loss_weights(term_cfg: dict) -> List[Tuple[str, str, float]]:
    """``(key, loss type, loss_weight)`` of the term's loss configs that
    set a ``loss_weight``."""
    return [(name, str(loss.get('type')), float(loss['loss_weight']))
            for name, loss in term_loss_cfgs(term_cfg)
            if 'loss_weight' in loss]


def _effective(term_cfg: dict, weight: float) -> str:
    found = loss_weights(term_cfg)
    if len(found) != 1:
        return ''
    key, typ, lw = found[0]
    return (f'{key}.loss_weight {lw:g} x {weight:.4g} = '
            f'{lw * weight:.4g} ({typ})')


def report(meas: Measurement, weights: Dict[str, float],
           term_cfgs: Dict[str, dict], target: float) -> List[str]:
    """The printed table, one line per term."""
    lines = [
        f'{meas.iters} train batches, target gradient share {target:g} '
        f'(median over the batches); task loss {meas.task_loss:.4g}',
        f'{"term":<14}{"loss":>11}{"share":>11}{"weight":>9}'
        f'{"-> weight":>11}  effective loss_weight'
    ]
    for name, m in meas.terms.items():
        new = weights.get(name)
        if new is None:
            why = ('loss not finite' if not math.isfinite(m.loss) else
                   'share is 0 or not finite' if not (
                       math.isfinite(m.share) and m.share > 0) else
                   'not in --terms')
            tail, new_s = f'not calibrated: {why}', '-'
        else:
            tail = _effective(term_cfgs.get(name, {}), new)
            new_s = f'{new:.4g}'
        lines.append(f'{name:<14}{m.loss:>11.4g}{m.share:>11.4g}'
                     f'{m.weight:>9.4g}{new_s:>11}  {tail}'.rstrip())
    if weights:
        lines.append(f'paste: {pasteable(weights)}')
    return lines


def write_config(out: str, config: str, meas: Measurement,
                 weights: Dict[str, float], target: float) -> None:
    """A config inheriting ``config`` with the calibrated weights."""
    out_dir = osp.dirname(osp.abspath(out))
    base = osp.relpath(osp.abspath(config), out_dir)
    lines = [
        '# Term weights from tools/analysis_tools/calibrate_weights.py: '
        f'gradient share {target:g}',
        f'# (median over {meas.iters} train batches). A term\'s weight '
        'multiplies all its losses.',
    ]
    for name, w in weights.items():
        m = meas.terms[name]
        lines.append(f'# {name}: share {m.share:.4g} at weight '
                     f'{m.weight:g} -> {w:.4g}')
    terms = ',\n'.join(f'    {n}=dict(weight={w!r})'
                       for n, w in weights.items())
    lines += [f'_base_ = [{base!r}]',
              f'model = dict(distill_terms=dict(\n{terms}))', '']
    os.makedirs(out_dir, exist_ok=True)
    with open(out, 'w') as f:
        f.write('\n'.join(lines))


def calibrate(cfg: Config, iters: int, target: float,
              terms: Optional[Sequence[str]] = None,
              device: str = 'cpu', max_factor: Optional[float] = None
              ) -> Tuple[Measurement, Dict[str, float]]:
    """Measure on the config's first ``iters`` train batches; return the
    measurement and the calibrated ``{term: weight}`` (factor capped at
    ``max_factor`` when given)."""
    names = list(cfg.model.get('distill_terms', None) or {})
    unknown = [t for t in terms or [] if t not in names]
    if unknown:
        raise SystemExit(f'error: --terms {unknown} not in the config\'s '
                         f'distill_terms {names}')
    seed = setup(cfg)
    model = build_model(cfg, device)
    meas = measure_terms(model, train_batches(cfg, seed), iters)
    return meas, calibrated_weights(meas, target, terms, max_factor)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, default=10,
                        help='train batches to measure (default 10)')
    parser.add_argument('--target', type=float, default=1.0,
                        help='gradient share to reach (default 1.0)')
    parser.add_argument('--max-factor', type=float, help='cap on the factor '
                        'a weight is multiplied by (1: only lower weights; '
                        'default: no cap)')
    parser.add_argument('--terms', nargs='+', help='terms to calibrate '
                        '(default: all)')
    parser.add_argument('--write', metavar='OUT.py',
                        help='write a config with the calibrated weights')
    parser.add_argument('--checkpoint', help='teacher checkpoint (overrides '
                        'model.teacher_ckpt)')
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if args.iters < 1 or not args.target > 0:
        parser.error('--iters must be >= 1 and --target > 0')
    if args.max_factor is not None and not args.max_factor > 0:
        parser.error(f'--max-factor must be > 0, got {args.max_factor}')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if args.checkpoint:
        cfg.model.teacher_ckpt = args.checkpoint
    if cfg.model.get('teacher_ckpt') is None:
        print('warning: model.teacher_ckpt is not set: calibrating against '
              'a randomly initialised teacher (give --checkpoint)')
    meas, weights = calibrate(cfg, args.iters, args.target, args.terms,
                              args.device, args.max_factor)
    print('\n'.join(report(meas, weights, cfg.model.distill_terms,
                           args.target)))
    if args.write:
        write_config(args.write, args.config, meas, weights, args.target)
        print(f'wrote {args.write}')


if __name__ == '__main__':
    main()
