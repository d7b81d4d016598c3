"""How far a reduced-precision teacher's features are from float32.

``teacher_precision='bf16'`` / ``'fp16'`` runs the teacher under autocast;
this tool measures what that changes in what the distillation terms see:
for each recorded teacher layer (every level), the largest absolute
difference to the float32 record, that difference relative to the largest
float32 magnitude, and the mean relative error
``mean |x - x32| / mean |x32|``, over real training batches of the
config's data (or of ``--data-config``'s ``train_dataloader``)::

    python tools/analysis_tools/teacher_precision_error.py \
        configs/demo/faster_rcnn_r18x2_to_r18_bccd_pkd.py \
        --checkpoint work_dirs/demo/teacher/iter_400.pth --batches 4
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import visionkd  # noqa: F401
from visionkd.models.distillers.teacher_precision import TeacherPrecision
from visionkd.registry import MODELS


def teacher_records(model, data: dict) -> Dict[str, List[torch.Tensor]]:
    """Every recorded teacher layer of one batch, float32, per level."""
    model.records.clear()
    model.run_teacher(data['inputs'], data['data_samples'])
    rec = model.records.teacher
    out = {f'{path}:{record}': [x.float() for x in rec.levels((path, record))
                                if isinstance(x, torch.Tensor)]
           for path, record in rec.keys}
    model.records.clear()
    return out


def compare(ref: Dict[str, List[torch.Tensor]],
            low: Dict[str, List[torch.Tensor]]) -> Dict[str, dict]:
    """Max abs / max relative / mean relative error per layer (all levels
    together)."""
    out = {}
    for key, levels in ref.items():
        diffs = [(b - a).abs() for a, b in zip(levels, low[key])]
        max_abs = max(d.max().item() for d in diffs)
        scale = max(a.abs().max().item() for a in levels)
        mean_rel = sum(d.sum().item() for d in diffs) / max(
            sum(a.abs().sum().item() for a in levels), 1e-12)
        out[key] = dict(max_abs=max_abs, max_rel=max_abs / max(scale, 1e-12),
                        mean_rel=mean_rel)
    return out


def measure(cfg: Config, checkpoint: Optional[str], batches: int,
            precisions: List[str]) -> Dict[str, Dict[str, dict]]:
    """Worst error per precision and layer over ``batches`` batches."""
    cfg.model.teacher_ckpt = checkpoint
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    model.train()
    worst: Dict[str, Dict[str, dict]] = {p: {} for p in precisions}
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        data = model.data_preprocessor(batch, True)
        model.teacher_precision = TeacherPrecision(None)
        ref = teacher_records(model, data)
        for p in precisions:
            model.teacher_precision = TeacherPrecision(p)
            for key, err in compare(ref, teacher_records(model, data)).items():
                old = worst[p].setdefault(key, dict.fromkeys(err, 0.0))
                for k, v in err.items():
                    old[k] = max(old[k], v)
    return worst


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='teacher checkpoint (default: '
                        'the config\'s teacher_ckpt; "none": random '
                        'weights)')
    parser.add_argument('--data-config', help='take train_dataloader from '
                        'this config instead')
    parser.add_argument('--batches', type=int, default=4)
    parser.add_argument('--precisions', nargs='+', default=['bf16', 'fp16'])
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.data_config:
        cfg.train_dataloader = Config.fromfile(
            args.data_config).train_dataloader
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    ckpt = args.checkpoint or cfg.model.get('teacher_ckpt')
    if ckpt is not None and ckpt.lower() == 'none':
        ckpt = None
    worst = measure(cfg, ckpt, args.batches, args.precisions)
    print(json.dumps(dict(config=args.config, checkpoint=ckpt,
                          batches=args.batches, errors=worst), indent=1))


if __name__ == '__main__':
    main()
