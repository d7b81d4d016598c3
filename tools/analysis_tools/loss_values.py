"""Print every registered distillation loss's value on one fixed seeded input.

The inputs are those of the generic loss tests (``LOSS_CASES`` in
``tests/test_models/test_losses/test_losses.py``: constructor arguments,
input shape and ground truth per loss; that test fails when a registered
loss has no case, so every loss is covered here too). For each loss, in
name order::

    torch.manual_seed(seed);     preds_S, preds_T = randn(shape), randn(shape)
    torch.manual_seed(seed + 1); loss = build(case); value = loss(S, T[, gt])

so the numbers are reproducible on CPU and change only when a loss's math,
defaults or initialisation change::

    python tools/analysis_tools/loss_values.py [--seed 0] [--json]
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
from mmengine.registry import DefaultScope

import visionkd  # noqa: F401
from tests.test_models.test_losses.test_losses import LOSS_CASES, build, call


def loss_values(seed: int = 0) -> Dict[str, float]:
    """``{loss name: value}`` on the seeded inputs (see module docstring)."""
    out = {}
    # build from the visionkd registry whatever scope the caller has set
    with torch.no_grad(), DefaultScope.overwrite_default_scope('visionkd'):
        for name in sorted(LOSS_CASES):
            shape = LOSS_CASES[name][1]
            torch.manual_seed(seed)
            preds_S, preds_T = torch.randn(shape), torch.randn(shape)
            torch.manual_seed(seed + 1)
            value = call(name, build(name), preds_S, preds_T)
            out[name] = float(value)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', action='store_true',
                        help='print JSON instead of a Markdown table')
    args = parser.parse_args(argv)
    values = loss_values(args.seed)
    if args.json:
        print(json.dumps(values, indent=1))
        return
    print(f'| loss | input shape | value (seed {args.seed}) |')
    print('|---|---|---|')
    for name, value in values.items():
        shape = 'x'.join(str(d) for d in LOSS_CASES[name][1])
        print(f'| `{name}` | {shape} | {value:.6g} |')


if __name__ == '__main__':
    main()
