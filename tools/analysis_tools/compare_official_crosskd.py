"""Compare visionkd's CrossKD (mode cross_head) with the official detectors.

*CrossKD: Cross-Head Knowledge Distillation for Object Detection* (Wang et
al., CVPR 2024); official code: github.com/jbwang1997/CrossKD (mmdet
3.0.0rc6). Usage::

    python tools/analysis_tools/compare_official_crosskd.py \\
        --official-repo <CrossKD checkout or git dir> [--head all]

Nothing of the official code is shipped here: at run time the official
detectors (``mmdet/models/detectors/crosskd_*.py``) and KD losses
(``mmdet/models/losses/kd_loss.py``, ``pkd_loss.py``) are read from
``--official-repo`` (a checkout, or a git dir read with ``git show``) into
a temporary package, imported against the installed mmdet 3.3 and
registered in mmdet's ``MODELS`` under their official names. The source is
changed only where the files leave mmdet's package or where mmdet 3.3
differs (:data:`IMPORT_PATCHES`, printed on every run).

Per head (``gfl``, ``retina``, ``atss``, ``fcos``; ``gfl_r18``: the R50 ->
R18 config; ``gfl_pkd``: CrossKD + PKD), the official config
(``configs/crosskd*/``) gives the detector type and its ``kd_cfg``; our
config (``configs/crosskd/``) gives the student and teacher and the
distillation terms, which are checked to be the translation of
``kd_cfg``. Both models are shrunk (ResNet-18 of base width
16 / 24, FPN 32 / 48 channels, 4 stacked head convs of 32 channels, 3
classes), given the same seeded random weights (the teacher's into the
official detector's ``teacher``, the student's into the official detector
itself), and run on the same seeded batch of 2 images of different sizes.
Printed: every loss of the official ``loss(batch_inputs, data_samples)``
next to the distiller's (per FPN level; a loss the official code gives for
all levels at once next to the sum of ours), each family's sum, the total
(``parse_losses``) and the gradients of the KD losses and of the total on
a few student parameters. The exit status is 1 if a loss sum, the total
or a gradient differs by more than the tolerance (relative), or if our
config is not the translation of the official ``kd_cfg``.
``--reused-idx`` crosses both sides at another head conv (0..4).
"""
import argparse
import ast
import math
import os.path as osp
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import visionkd  # noqa: F401
from tools.analysis_tools.official_source import (
    official_commit,
    read_official,
)
from visionkd.registry import MODELS as VKD_MODELS
from visionkd.utils.model_spec import merge_cfg, resolve_model_cfg

ROOT = Path(__file__).resolve().parents[2]
PKG = 'crosskd_official'
DETECTORS = 'mmdet/models/detectors/'
LOSSES = 'mmdet/models/losses/'
OFFICIAL_FILES = tuple(DETECTORS + f'crosskd_{name}.py' for name in (
    'single_stage', 'gfl', 'atss', 'retinanet', 'fcos')) + (
        LOSSES + 'kd_loss.py', LOSSES + 'pkd_loss.py')

#: (pattern, replacement, why): the only changes made to the official files.
IMPORT_PATCHES = (
    (r'from \.\.utils import', 'from mmdet.models.utils import',
     'relative import of mmdet.models.utils (files live outside mmdet)'),
    (r'from \.single_stage import',
     'from mmdet.models.detectors.single_stage import',
     'relative import of SingleStageDetector (files live outside mmdet)'),
    (r'from \.crosskd_single_stage import',
     f'from {PKG}.crosskd_single_stage import',
     'relative import of the official base detector'),
    (r'from \.utils import', 'from mmdet.models.losses.utils import',
     'relative import of mmdet.models.losses.utils (files live outside '
     'mmdet)'),
    (r'@MODELS\.register_module\(\)', '@MODELS.register_module(force=True)',
     'mmdet 3.3 registers its own KnowledgeDistillationKLDivLoss (without '
     'class_reduction): the official class replaces it by name'),
)

#: head -> (official config, our config).
HEADS = {
    'gfl': ('configs/crosskd/crosskd_r50_gflv1_r101-2x-ms_fpn_1x_coco.py',
            'configs/crosskd/gfl_r101_to_r50_fpn_1x_coco_crosskd.py'),
    'retina': ('configs/crosskd/crosskd_r50_retinanet_r101_fpn_2x_coco.py',
               'configs/crosskd/retinanet_r101_to_r50_fpn_2x_coco_crosskd.py'),
    'atss': ('configs/crosskd/crosskd_r50_atss_r101_fpn_1x_coco.py',
             'configs/crosskd/atss_r101_to_r50_fpn_1x_coco_crosskd.py'),
    'fcos': ('configs/crosskd/crosskd_r50_fcos_r101-2x-ms_caffe_fpn_gn-head'
             '_2x_ms_coco.py', 'configs/crosskd/fcos_r101_to_r50_caffe_fpn'
             '_gn-head_ms_2x_coco_crosskd.py'),
    'gfl_r18': ('configs/crosskd/crosskd_r18_gflv1_r50_fpn_1x_coco.py',
                'configs/crosskd/gfl_r50_to_r18_fpn_1x_coco_crosskd.py'),
    'gfl_pkd': ('configs/crosskd+pkd/crosskd+pkd_r50_gflv1_r101-2x-ms_fpn_1x'
                '_coco.py',
                'configs/crosskd/gfl_r101_to_r50_fpn_1x_coco_crosskd_pkd.py'),
}

#: official loss type -> ours; official kd_cfg key -> our term key.
LOSS_TYPES = {'KDQualityFocalLoss': 'KDQualityFocalLoss',
              'KnowledgeDistillationKLDivLoss': 'KDKLDivLoss',
              'GIoULoss': 'mmdet.GIoULoss', 'IoULoss': 'mmdet.IoULoss',
              'CrossEntropyLoss': 'mmdet.CrossEntropyLoss',
              'PKDLoss': 'PKDLoss'}
KD_KEYS = {'loss_cls_kd': 'loss_cls', 'loss_reg_kd': 'loss_reg',
           'loss_center_kd': 'loss_center'}
#: official loss key -> our key prefix (the CrossKD term is 'crosskd').
OUR_KEYS = {'loss_cls_kd': 'loss_kd_crosskd_cls',
            'loss_reg_kd': 'loss_kd_crosskd_reg',
            'losses_center_kd': 'loss_kd_crosskd_center',
            'loss_feat_kd': 'loss_kd_pkd'}


# ----------------------------------------------------------------------
# the official code, read at run time
def patch_source(text: str) -> Tuple[str, List[str]]:
    """``text`` with :data:`IMPORT_PATCHES` applied, and the patches that
    changed something."""
    used = []
    for pattern, repl, why in IMPORT_PATCHES:
        text, count = re.subn(pattern, repl, text)
        if count:
            used.append(f'{pattern} -> {repl} ({why})')
    return text, used


def import_official(repo: Path, rev: str, tmp: str) -> List[str]:
    """Write the official files into the package ``tmp/PKG``, import them
    (registering their classes in mmdet's MODELS) and return the patches
    applied."""
    pkg_dir = Path(tmp) / PKG
    pkg_dir.mkdir()
    (pkg_dir / '__init__.py').write_text('')
    patches = set()
    for path in OFFICIAL_FILES:
        text, used = patch_source(read_official(repo, path, rev))
        patches.update(used)
        (pkg_dir / Path(path).name).write_text(text)
    sys.path.insert(0, tmp)
    import importlib
    for path in OFFICIAL_FILES:
        importlib.import_module(f'{PKG}.{Path(path).stem}')
    return sorted(patches)


def _literal(node: ast.AST):
    """A config expression made of ``dict(...)``, literals and lists."""
    if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'dict':
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    return ast.literal_eval(node)


def official_model_cfg(repo: Path, path: str, rev: str) -> dict:
    """``type`` and ``kd_cfg`` of the official config's ``model`` (read
    without executing the config)."""
    tree = ast.parse(read_official(repo, path, rev))
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and getattr(
                stmt.targets[0], 'id', '') == 'model':
            kws = {kw.arg: kw.value for kw in stmt.value.keywords}
            return dict(type=_literal(kws['type']),
                        kd_cfg=_literal(kws['kd_cfg']))
    raise ValueError(f'{path}: no model = dict(...)')


# ----------------------------------------------------------------------
# configs
def translate_kd_cfg(kd_cfg: dict) -> Dict[str, dict]:
    """Our distillation terms equivalent to the official ``kd_cfg``."""
    def loss(cfg: dict) -> dict:
        return dict(cfg, type=LOSS_TYPES[cfg['type']])

    term = dict(mode='cross_head', student='bbox_head', teacher='bbox_head',
                reused_teacher_head_idx=kd_cfg['reused_teacher_head_idx'])
    for key, ours in KD_KEYS.items():
        if kd_cfg.get(key):
            term[ours] = loss(kd_cfg[key])
    terms = dict(crosskd=term)
    if kd_cfg.get('loss_feat_kd'):
        terms['pkd'] = dict(student='neck', teacher='neck',
                            levels=[0, 1, 2, 3, 4],
                            loss=loss(kd_cfg['loss_feat_kd']))
    return terms


def _same(a, b) -> bool:
    """Config equality with 1 == 1.0 and tuples == lists."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def tiny(spec, base: int, fpn: int, classes: int = 3) -> dict:
    """``spec`` (a config reference or ``dict(config=..., **overrides)``)
    with a ResNet-18 of base width ``base`` (no pretraining), an FPN of
    ``fpn`` channels and a 4-conv 32-channel head."""
    spec = dict(config=spec) if isinstance(spec, str) else dict(spec)
    return merge_cfg(spec, dict(
        backbone=dict(depth=18, base_channels=base, init_cfg=None),
        neck=dict(in_channels=[base * 2**i for i in range(4)],
                  out_channels=fpn),
        bbox_head=dict(in_channels=fpn, feat_channels=32, stacked_convs=4,
                       num_classes=classes)))


# ----------------------------------------------------------------------
# models and batch
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights off mmdet's init (which gives near-constant head
    outputs): conv/linear weights N(0, 1/fan_in), norm weights 1 +- 0.25,
    biases N(0, 0.1^2), Scales U(0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                value = torch.randn(p.shape, generator=gen) / math.sqrt(
                    p[0].numel())
            elif p.dim() == 0:
                value = 0.5 + torch.rand((), generator=gen)
            elif name.endswith('bias'):
                value = 0.1 * torch.randn(p.shape, generator=gen)
            else:
                value = 0.75 + 0.5 * torch.rand(p.shape, generator=gen)
            p.copy_(value)


def make_batch(seed: int, sizes=((128, 160), (112, 144)),
               num_boxes=(3, 2), classes: int = 3) -> dict:
    """Two seeded uint8 images of different sizes with GT boxes (at least
    12 px a side) and labels, as a data loader gives them."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for (h, w), n in zip(sizes, num_boxes):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen,
                                    dtype=torch.uint8))
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w, h]) * 0.6
        wh = 12 + torch.rand(n, 2, generator=gen) * torch.tensor([w, h]) * .4
        box = torch.cat([xy, (xy + wh).min(torch.tensor([w, h]) - 1.)], 1)
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=box, labels=torch.randint(0, classes, (n, ),
                                             generator=gen))
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build_distiller(ours: Config, seed: int) -> tuple:
    """The distiller of our config's terms on the tiny student and teacher
    (seeded weights, train mode) and those two model configs."""
    model = ours.to_dict()['model']
    student = resolve_model_cfg(tiny(model['student'], 16, 32), 'mmdet',
                                'student')
    # PKD compares the FPN outputs channel by channel, and crossing at 0
    # feeds the student's FPN outputs to the teacher head: same width there
    terms = model['distill_terms']
    fpn_T = 32 if 'pkd' in terms or terms['crosskd'][
        'reused_teacher_head_idx'] == 0 else 48
    teacher = resolve_model_cfg(tiny(model['teacher'], 24, fpn_T), 'mmdet',
                                'teacher')
    distiller = VKD_MODELS.build(dict(
        type='visionkd.DetectionDistiller', student=student.to_dict(),
        teacher=teacher.to_dict(), distill_terms=model['distill_terms'],
        dry_run_input_size=(256, 256)))
    randomize_(distiller.student, seed)
    randomize_(distiller.teacher, seed + 1)
    return distiller.train(), student.to_dict(), teacher.to_dict()


def build_pair(official: dict, ours: Config, seed: int) -> tuple:
    """The distiller (:func:`build_distiller`) and the official detector
    holding the same student and teacher weights (train mode)."""
    from mmdet.registry import MODELS as DET_MODELS
    distiller, student, teacher = build_distiller(ours, seed)
    cfg = dict(student, type=official['type'],
               teacher_config=dict(model=teacher),
               kd_cfg=official['kd_cfg'])
    cfg['_scope_'] = 'mmdet'
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = DET_MODELS.build(cfg)
    det.load_state_dict(distiller.student.state_dict(), strict=True)
    det.teacher.load_state_dict(distiller.teacher.state_dict(), strict=True)
    for loss in ('loss_cls_kd', 'loss_reg_kd', 'loss_feat_kd'):
        mod = type(getattr(det, loss, None)).__module__
        if loss in official['kd_cfg'] and not mod.startswith(
                (PKG, 'mmdet')):
            raise RuntimeError(f'official {loss} built from {mod}')
    det.train()  # the official train() returns None
    return distiller, det


# ----------------------------------------------------------------------
# comparison
def flat(losses: dict) -> Dict[str, torch.Tensor]:
    """``{key: value}``, a list-valued key as ``key[i]`` per level."""
    out = {}
    for key, value in losses.items():
        if isinstance(value, (list, tuple)):
            out.update({f'{key}[{i}]': v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def pair_rows(off: dict, ours: dict) -> List[Tuple[str, float, float]]:
    """(key, official, visionkd) per official loss value, then per loss
    family (the sum over levels; ``*`` rows)."""
    rows, fams = [], {}
    for key, value in off.items():
        levels = value if isinstance(value, (list, tuple)) else [value]
        prefix = OUR_KEYS.get(key)
        if prefix is None:  # the student's task loss: same key
            mine = flat({key: ours[key]})
            mine = [mine[k] for k in mine]
        elif len(levels) == 1 and f'{prefix}_l1' in ours:  # all levels
            mine = [sum(v for k, v in ours.items()
                        if re.fullmatch(rf'{prefix}_l\d+', k))]
        else:
            mine = [ours[f'{prefix}_l{i}'] for i in range(len(levels))]
        if len(mine) != len(levels):
            raise RuntimeError(f'{key}: {len(levels)} official values, '
                               f'{len(mine)} ours')
        name = key if prefix is None else f'{key} ~ {prefix}_l*'
        for i, (a, b) in enumerate(zip(levels, mine)):
            rows.append((f'{name}[{i}]' if len(levels) > 1 else name,
                         float(a), float(b)))
        fams[f'* {key}'] = (float(sum(levels)), float(sum(mine)))
    return rows + [(k, a, b) for k, (a, b) in fams.items()]


def rel(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|) (0 for two zeros)."""
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale > 0 else 0.0


def print_table(title: str, rows: List[Tuple[str, float, float]]) -> None:
    """A Markdown table of (key, official, visionkd, abs diff, rel)."""
    print(f'\n{title}\n')
    print('| key | official | visionkd | abs diff | rel diff |')
    print('|---|---:|---:|---:|---:|')
    for key, a, b in rows:
        print(f'| {key} | {a:.8g} | {b:.8g} | {abs(a - b):.3g} | '
              f'{rel(a, b):.3g} |')


def grad_params(model: torch.nn.Module, idx: int) -> List[str]:
    """A few student parameters before, at and after the crossing point."""
    names = ['backbone.layer4.0.conv1.weight', 'neck.lateral_convs.0.conv'
             '.weight', 'neck.fpn_convs.0.conv.weight',
             'bbox_head.cls_convs.0.conv.weight',
             f'bbox_head.reg_convs.{max(idx - 1, 0)}.conv.weight',
             f'bbox_head.cls_convs.{idx}.conv.weight']
    own = dict(model.named_parameters())
    names += [n for n in own if re.fullmatch(
        r'bbox_head\.(gfl|atss|retina|conv)_cls\.weight', n)]
    return [n for n in names if n in own and own[n].requires_grad]


def grads(model: torch.nn.Module, loss: torch.Tensor,
          names: List[str]) -> List[torch.Tensor]:
    """d loss / d ``names`` (zeros where ``loss`` does not reach)."""
    own = dict(model.named_parameters())
    out = torch.autograd.grad(loss, [own[n] for n in names],
                              retain_graph=True, allow_unused=True)
    return [torch.zeros_like(own[n]) if g is None else g
            for n, g in zip(names, out)]


def kd_sum(losses: dict, official: bool) -> torch.Tensor:
    """The sum of the KD losses (official: keys with ``kd``)."""
    values = flat(losses)
    keys = [k for k in values if ('kd' in k if official else
                                  k.startswith('loss_kd_'))]
    return sum(values[k] for k in keys)


def grad_rows(det, distiller, off: dict, ours: dict, total: tuple,
              idx: int) -> List[Tuple[str, float, float, float]]:
    """(what, max |g| official, max |g| visionkd, max |diff|) of the KD
    and the total gradients."""
    names = grad_params(distiller.student, idx)
    rows = []
    for what, a, b in (('KD', kd_sum(off, True), kd_sum(ours, False)),
                       ('total', total[0], total[1])):
        g_off = grads(det, a, names)
        g_our = grads(distiller.student, b, names)
        for name, x, y in zip(names, g_off, g_our):
            rows.append((f'{what}: {name}', x.abs().max().item(),
                         y.abs().max().item(), (x - y).abs().max().item()))
    return rows


def print_grads(rows) -> None:
    """A Markdown table of the gradient rows."""
    print('\ngradients (max over the tensor)\n')
    print('| loss: student parameter | max abs official | max abs visionkd'
          ' | max abs diff | rel diff |')
    print('|---|---:|---:|---:|---:|')
    for key, a, b, d in rows:
        print(f'| {key} | {a:.6g} | {b:.6g} | {d:.3g} | '
              f'{d / max(a, b) if max(a, b) > 0 else 0.0:.3g} |')


def check_config(head: str, official: dict, ours: Config) -> List[str]:
    """Problems of our config against the official ``kd_cfg``."""
    want = translate_kd_cfg(official['kd_cfg'])
    have = ours.model.distill_terms.to_dict()
    problems = []
    for name, term in want.items():
        if not _same(have.get(name), term):
            problems.append(f'{head}: our term {name} is {have.get(name)}, '
                            f'the official kd_cfg translates to {term}')
    extra = sorted(set(have) - set(want))
    if extra:
        problems.append(f'{head}: our config has extra terms {extra}')
    return problems


def compare_head(head: str, args: argparse.Namespace) -> List[str]:
    """Print the tables of one head; return the failures."""
    official = official_model_cfg(args.official_repo, HEADS[head][0],
                                  args.rev)
    ours = Config.fromfile(str(ROOT / HEADS[head][1]))
    failures = check_config(head, official, ours)
    if args.reused_idx is not None:  # both sides, after the config check
        official['kd_cfg']['reused_teacher_head_idx'] = args.reused_idx
        ours.model.distill_terms.crosskd.reused_teacher_head_idx = \
            args.reused_idx
    distiller, det = build_pair(official, ours, args.seed)
    data = distiller.data_preprocessor(make_batch(args.seed), True)
    inputs, samples = data['inputs'], data['data_samples']
    off = det.loss(inputs, samples)
    mine = distiller.loss(inputs, samples)
    total_off, _ = det.parse_losses(off)
    total_our, _ = distiller.parse_losses(mine)
    rows = pair_rows(off, mine) + [('** total (parse_losses)',
                                    float(total_off), float(total_our))]
    print_table(f'## {head}: {official["type"]} vs DetectionDistiller '
                f'({HEADS[head][1]})', rows)
    extra = sorted(set(mine) - {k for k in mine if k in off or any(
        k.startswith(p) for p in OUR_KEYS.values())})
    if extra:
        failures.append(f'{head}: visionkd keys not compared: {extra}')
    failures += [f'{head}: {k} official {a:.8g} visionkd {b:.8g}'
                 for k, a, b in rows
                 if k.startswith('*') and rel(a, b) > args.rtol]
    g_rows = grad_rows(det, distiller, off, mine, (total_off, total_our),
                       det.reused_teacher_head_idx)
    print_grads(g_rows)
    failures += [f'{head}: gradient {k} differs by {d:.3g}'
                 for k, a, b, d in g_rows
                 if d > args.grad_rtol * max(a, b)]
    return failures


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--official-repo', required=True, type=Path,
                        help='jbwang1997/CrossKD: a checkout or a git dir')
    parser.add_argument('--rev', default='HEAD',
                        help='revision of a git dir (default HEAD)')
    parser.add_argument('--head', default='all',
                        choices=sorted(HEADS) + ['all'])
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the weights and of the batch')
    parser.add_argument('--reused-idx', type=int, default=None,
                        help='cross after this head conv instead of the '
                        "official configs' (0..4; both sides)")
    parser.add_argument('--rtol', type=float, default=1e-5,
                        help='relative tolerance of the loss sums/total')
    parser.add_argument('--grad-rtol', type=float, default=1e-3,
                        help='relative tolerance of the gradients')
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    heads = list(HEADS) if args.head == 'all' else [args.head]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        patches = import_official(args.official_repo, args.rev, tmp)
        print(f'official code: {args.official_repo} @ '
              f'{official_commit(args.official_repo, args.rev)}')
        print('patches of the official files:')
        print('\n'.join(f'  {p}' for p in patches))
        for head in heads:
            failures += compare_head(head, args)
    print('\n' + ('\n'.join(['FAILED:'] + failures) if failures else
                  f'OK: {", ".join(heads)} equal within rtol {args.rtol} '
                  f'(losses), {args.grad_rtol} (gradients)'))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
