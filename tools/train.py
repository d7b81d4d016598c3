"""Train a model (a visionkd distiller or any mmdet/mmseg model).

Same flags as mmdet's and mmseg's ``tools/train.py``::

    python tools/train.py configs/kd/faster_rcnn_r101_to_r18.py
    python tools/train.py CONFIG --work-dir DIR --amp --resume

A distiller config also gets ``visionkd.DistillSummaryHook`` (a summary of
the terms at the start, metrics and time per iteration at the end) unless
it lists one or ``--no-summary`` is given.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import visionkd  # noqa: F401
from tools.common import load_config
from visionkd.models.distillers import BaseDistiller
from visionkd.registry import MODELS
from visionkd.utils import trust_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector or '
                                     'segmentor, distilled or not')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='enable auto-scale LR')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in '
        'the work dir when no path is given')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value (xxx=yyy format)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--no-summary', action='store_true',
        help='no DistillSummaryHook for a distiller config')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _has_hook(cfg: Config, name: str) -> bool:
    return any(str(h.get('type', '')).split('.')[-1] == name
               for h in cfg.get('custom_hooks', None) or [])


def add_rng_state_hook(cfg: Config) -> None:
    """Append ``RNGStateHook`` (exact ``--resume``) unless already there."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not _has_hook(cfg, 'RNGStateHook'):
        hooks.append(dict(type='visionkd.RNGStateHook'))
    cfg.custom_hooks = hooks


def add_summary_hook(cfg: Config) -> bool:
    """Append ``DistillSummaryHook`` to a distiller config (unless there).

    Returns:
        Whether the config's model is a visionkd distiller.
    """
    model = cfg.get('model', None)
    typ = model.get('type') if isinstance(model, dict) else None
    cls = MODELS.get(typ) if isinstance(typ, str) else None
    if not (isinstance(cls, type) and issubclass(cls, BaseDistiller)):
        return False
    if not _has_hook(cfg, 'DistillSummaryHook'):
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [
            dict(type='visionkd.DistillSummaryHook')]
    return True


def main() -> None:
    args = parse_args()
    cfg: Config = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        opt_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if opt_type == 'AmpOptimWrapper':
            print('AMP is already enabled in the config.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if cfg.get('auto_scale_lr', None) is None:
            raise RuntimeError('--auto-scale-lr needs `auto_scale_lr` '
                               '(enable, base_batch_size) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    # A run's own checkpoints (its work dir, the one it resumes) may hold
    # its log state and need full unpickling; outside files never do.
    trust_checkpoint(cfg.work_dir)
    if args.resume not in (None, 'auto'):
        trust_checkpoint(args.resume)

    add_rng_state_hook(cfg)
    if not args.no_summary:
        add_summary_hook(cfg)

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
