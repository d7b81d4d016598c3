"""Compare visionkd's ``AfDCDLoss`` with the official Af-DCD loss.

*Augmentation-free Dense Contrastive Knowledge Distillation for Efficient
Semantic Segmentation* (Fan et al., NeurIPS 2023); official code:
github.com/OSVAI/Af-DCD. Usage::

    python tools/analysis_tools/compare_official_afdcd.py \\
        --official-repo <Af-DCD checkout or git dir>

Nothing of the official code is shipped here: ``losses/ocmgd.py`` is read
from ``--official-repo`` at run time (a checkout, or a git dir read with
``git show``) and executed as a module (it imports only torch). For each
setting (random or centre mask, plain or enhanced projector, Cityscapes
pooling or the CamVid crop) both losses get the same seeded weights (the
official module's state dict, renamed: ``projetor`` -> ``projector``,
``adpator`` -> ``adaptor``) and the same seeded student / teacher maps;
the mask is drawn from the same seed. Printed per setting: the official
``lambda_fd * fd + lambda_ctr * ctr`` and ours, each part alone, and the
largest relative difference of the gradients on the student map and on
the projector's weights. The exit status is 1 if any value differs by
more than ``--rtol`` or a gradient by more than ``--grad-rtol``.
"""
import argparse
import os.path as osp
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch

from tools.analysis_tools.official_source import read_official
from visionkd.models.losses import AfDCDLoss

OFFICIAL_FILE = 'losses/ocmgd.py'

#: name -> (official kwargs, our kwargs beyond the shared ones).
SETTINGS: Dict[str, Tuple[dict, dict]] = {
    'citys_rand_plain': (dict(rand_mask=True, enhance_projector=False),
                         dict(rand_mask=True, enhance_projector=False)),
    'citys_centre_enhanced': (
        dict(rand_mask=False, enhance_projector=True),
        dict(rand_mask=False, enhance_projector=True)),
    'camvid_rand_plain': (
        dict(rand_mask=True, enhance_projector=False, dataset='camvid'),
        dict(rand_mask=True, enhance_projector=False, ctr_crop=44,
             pool_size=0)),
}


def load_official(repo: Path, rev: str) -> types.ModuleType:
    """The official module, executed from its text."""
    module = types.ModuleType('official_ocmgd')
    exec(compile(read_official(repo, OFFICIAL_FILE, rev),
                 OFFICIAL_FILE, 'exec'),
         module.__dict__)
    return module


def ours_state_dict(official: torch.nn.Module) -> dict:
    """The official module's weights under our parameter names."""
    return {k.replace('projetor.', 'projector.').replace('adpator',
                                                         'adaptor'): v
            for k, v in official.state_dict().items()}


def make_maps(seed: int, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Seeded student (2, 32, s, s) and teacher (2, 64, s, s) maps."""
    g = torch.Generator().manual_seed(seed)
    feat_s = torch.randn(2, 32, size, size, generator=g)
    feat_t = torch.randn(2, 64, size, size, generator=g)
    return feat_s, feat_t


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def compare(module: types.ModuleType, name: str, seed: int,
            lambdas: Tuple[float, float]) -> Dict[str, float]:
    """Values and gradient differences of one setting."""
    off_kw, our_kw = SETTINGS[name]
    size = 48 if 'camvid' in name else 32
    torch.manual_seed(seed)
    official = module.OmniContrastiveFeatureLoss(
        student_channels=32, teacher_channels=64, **off_kw)
    ours = AfDCDLoss(32, 64, lambda_fd=lambdas[0], lambda_ctr=lambdas[1],
                     **our_kw)
    ours.load_state_dict(ours_state_dict(official))
    feat_s, feat_t = make_maps(seed, size)
    s_off = feat_s.clone().requires_grad_(True)
    s_our = feat_s.clone().requires_grad_(True)
    torch.manual_seed(seed + 1)
    fd, ctr = official(s_off, feat_t)
    total_off = lambdas[0] * fd + lambdas[1] * ctr
    total_off.backward()
    torch.manual_seed(seed + 1)
    total_our = ours(s_our, feat_t)
    total_our.backward()
    w_off = official.projetor.state_dict(keep_vars=True)
    w_our = ours.projector.state_dict(keep_vars=True)
    key = next(k for k in w_off if k.endswith('weight'))
    return dict(
        official=total_off.item(), ours=total_our.item(),
        official_fd=fd.item(), official_ctr=ctr.item(),
        value_rel=abs(total_our.item() - total_off.item()) /
        abs(total_off.item()),
        grad_student_rel=_rel(s_our.grad, s_off.grad),
        grad_projector_rel=_rel(w_our[key.replace('adpator', 'adaptor')]
                                .grad, w_off[key].grad))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--official-repo', required=True, type=Path,
                        help='Af-DCD checkout or git dir')
    parser.add_argument('--rev', default='HEAD',
                        help='revision when --official-repo is a git dir')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--lambda-fd', type=float, default=2e-6,
                        help='the Cityscapes scripts\' --lambda-fd')
    parser.add_argument('--lambda-ctr', type=float, default=5e-3,
                        help='the Cityscapes scripts\' --lambda-ctr')
    parser.add_argument('--rtol', type=float, default=1e-5)
    parser.add_argument('--grad-rtol', type=float, default=1e-4)
    args = parser.parse_args(argv)
    module = load_official(args.official_repo, args.rev)
    failed = []
    print(f'official {OFFICIAL_FILE} of {args.official_repo} ({args.rev});'
          f' seed {args.seed}; lambda_fd {args.lambda_fd}, lambda_ctr '
          f'{args.lambda_ctr}')
    print(f'{"setting":24s} {"official":>14s} {"ours":>14s} '
          f'{"fd":>12s} {"ctr":>12s} {"rel":>9s} {"grad S":>9s} '
          f'{"grad P":>9s}')
    for name in SETTINGS:
        r = compare(module, name, args.seed, (args.lambda_fd,
                                              args.lambda_ctr))
        print(f'{name:24s} {r["official"]:14.8g} {r["ours"]:14.8g} '
              f'{r["official_fd"]:12.6g} {r["official_ctr"]:12.6g} '
              f'{r["value_rel"]:9.2e} {r["grad_student_rel"]:9.2e} '
              f'{r["grad_projector_rel"]:9.2e}')
        if (r['value_rel'] > args.rtol or
                max(r['grad_student_rel'], r['grad_projector_rel']) >
                args.grad_rtol):
            failed.append(name)
    print('EQUAL' if not failed else f'DIFFERENT: {failed}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
