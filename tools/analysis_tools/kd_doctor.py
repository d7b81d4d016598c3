"""Check a distillation config before a long run; one line per finding.

::

    python tools/analysis_tools/kd_doctor.py CONFIG [--checkpoint TEACHER]

Checks (each prints ``ok``, ``WARNING`` or ``ERROR`` with the fix; the
exit status is 1 if any check is an error):

* ``teacher_ckpt``: ``model.teacher_ckpt`` (or ``--checkpoint``) is set,
  exists and loads into the teacher (strictly, as training loads it); with
  ``teachers=``, each teacher's ``ckpt`` (an EMA or ``'self'`` teacher and a
  trainable one from scratch need none), and the checks below run per
  teacher, naming it;
* ``teacher_trained``: the loaded teacher's metric (the config's
  ``val_evaluator``; COCO bbox/segm mAP or mIoU when there) on the first
  ``--val-batches`` val batches beats the best of two untrained teachers
  of the same config (as built, and after ``init_weights`` without its
  Pretrained inits) by at least ``--margin``, a fraction of the metric's
  full scale: 0.1 = 10 mAP or mIoU points. A random detector scores about
  0 mAP, but a random segmentor can score what predicting one class
  everywhere scores (44 mIoU on the tests' two-class toy data), hence the
  best of two and the margin. A checkpoint trained on other data or
  classes scores like them;
* ``student_init``: every ``init_cfg=dict(type='Pretrained')`` of the
  student was applied (its module's weights equal the checkpoint's after
  ``init_weights``, i.e. the keys matched), ``load_from`` exists and
  matches the distiller's keys (``student.*``), ``init_student`` copied
  weights;
* ``preprocessors``: teacher and student ``data_preprocessor`` have the
  same mean/std/bgr_to_rgb (the distiller re-normalises when they differ,
  which is right only if the teacher checkpoint was trained with the
  teacher config's values);
* ``terms``: on the first ``--train-batches`` train batches (see
  :mod:`visionkd.engine.hooks.auto_weight_hook`; no optimizer step), every
  term is finite, not 0, and its gradient share on its student layer is
  within ``--band`` (default 1e-3 to 1e3 times the task loss's); its loss
  value far outside that band of the task loss is a warning.
"""
import argparse
import contextlib
import copy
import io
import math
import os.path as osp
import re
import sys
from dataclasses import dataclass
from itertools import islice
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.evaluator import Evaluator
from mmengine.registry import MODELS
from mmengine.runner import CheckpointLoader, Runner

import visionkd  # noqa: F401
from tools.analysis_tools.calibrate_weights import (
    load_from,
    setup,
    train_batches,
)
from tools.common import load_config
from visionkd.engine.hooks.auto_weight_hook import Measurement, measure_terms
from visionkd.models.distillers.teacher_loading import load_teacher_weights
from visionkd.models.distillers.teacher_specs import TeacherSpec, teacher_specs
from visionkd.utils import without_pretrained_init, without_teacher_weights

#: Metrics preferred for the teacher check, in this order.
PREFERRED_METRICS = ('bbox_mAP', 'segm_mAP', 'mIoU')
#: Metric names reported in percent (mmseg); the others are fractions.
PERCENT_METRICS = ('mIoU', 'mAcc', 'aAcc', 'mDice', 'mFscore',
                   'mPrecision', 'mRecall')


@dataclass
class Finding:
    """One line of the doctor's output.

    Attributes:
        level: ``'error'``, ``'warning'`` or ``'ok'``.
        check: Which check (``teacher_ckpt``, ``terms``, ...).
        message: What was found.
        fix: What to do (errors and warnings).
    """

    level: str
    check: str
    message: str
    fix: str = ''

    def line(self) -> str:
        label = 'ok' if self.level == 'ok' else self.level.upper()
        fix = f' -> fix: {self.fix}' if self.fix else ''
        return f'{label:<8}{self.check:<16}{self.message}{fix}'


# ----------------------------------------------------------------------
# (a) teacher checkpoint
def check_teacher_ckpt(teacher: nn.Module, ckpt: Optional[str],
                       strict: bool, key: str = 'model.teacher_ckpt',
                       who: str = '') -> Tuple[List[Finding], bool]:
    """Load ``ckpt`` into ``teacher`` as training does; (findings, loaded).

    ``key`` names the checkpoint setting and ``who`` (e.g. ``"teacher
    'b': "``) the teacher in the messages.
    """
    if ckpt is None:
        return [Finding(
            'error', 'teacher_ckpt', f'{who}{key} is not set: the '
            'teacher keeps its random initial weights',
            f"set {key}='path/to/teacher.pth' (or pass --checkpoint)")], \
            False
    try:
        report = load_teacher_weights(teacher, ckpt, strict=strict)
    except Exception as e:  # missing file, wrong keys, not a checkpoint
        return [Finding('error', 'teacher_ckpt',
                        f'{who}{type(e).__name__}: {e}',
                        'give the checkpoint trained with the teacher '
                        'config')], False
    teacher.eval()
    if not report.exact:
        return [Finding(
            'warning', 'teacher_ckpt', f'{who}{ckpt!r} loaded '
            f'{report.loaded} tensors with strict=False; '
            f'{report.summary()}', 'the teacher layers not in the '
            'checkpoint stay random; give its own checkpoint')], True
    return [Finding('ok', 'teacher_ckpt', f'{who}{ckpt!r} loaded '
                    f'({report.loaded} tensors, exact match)')], True


def configured_teachers(model_cfg) -> Dict[str, TeacherSpec]:
    """The teachers of a distiller config with their checkpoints, by name
    (the one-teacher form: ``'teacher'``)."""
    m = model_cfg
    return teacher_specs(m.get('teacher'), m.get('teachers'),
                         m.get('teacher_ckpt'),
                         m.get('teacher_ckpt_strict', True),
                         m.get('teacher_input'),
                         m.get('teacher_trainable', False))


def _who(name: str, teachers: dict) -> str:
    """How messages name a teacher: nothing when it is the only one."""
    return '' if len(teachers) == 1 else f'teacher {name!r}: '


def check_teacher_ckpts(model: nn.Module, specs: Dict[str, TeacherSpec]
                        ) -> Tuple[List[Finding], List[str]]:
    """:func:`check_teacher_ckpt` for every teacher that loads one;
    (findings, names of the loaded teachers). An EMA or ``'self'`` teacher
    and a trainable one from scratch need none."""
    out, loaded = [], []
    for name, spec in specs.items():
        who = _who(name, specs)
        if spec.kind in ('ema', 'self'):
            what = ('an EMA of the student' if spec.kind == 'ema' else
                    "the student's own forward")
            out.append(Finding('ok', 'teacher_ckpt',
                               f'{who}{what}: no checkpoint'))
        elif spec.kind == 'online' and spec.ckpt is None:
            out.append(Finding('ok', 'teacher_ckpt', f'{who}trainable, from '
                               'scratch with the student: no checkpoint'))
        else:
            new, ok = check_teacher_ckpt(model.teachers[name], spec.ckpt,
                                         spec.ckpt_strict,
                                         'model.' + spec.ckpt_key, who)
            out += new
            if ok:
                loaded.append(name)
    return out, loaded


# ----------------------------------------------------------------------
# (b) teacher trained on this data
def main_metric(metrics: Dict[str, float]) -> Optional[str]:
    """The metric the teacher check compares (see PREFERRED_METRICS)."""
    for want in PREFERRED_METRICS:
        for key in metrics:
            if key.split('/')[-1] == want:
                return key
    numeric = [k for k, v in metrics.items() if isinstance(v, (int, float))]
    return numeric[0] if numeric else None


def metric_scale(key: str) -> float:
    """100 for metrics in percent (mmseg's), else 1."""
    return 100.0 if key.split('/')[-1] in PERCENT_METRICS else 1.0


def evaluate(model: nn.Module, cfg: Config, batches: int) -> tuple:
    """``(metrics, images)`` of ``model`` (a plain detector/segmentor) on
    the first ``batches`` val batches with the config's evaluator."""
    loader_cfg = copy.deepcopy(cfg.val_dataloader)
    loader_cfg['persistent_workers'] = False
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' prints
        loader = Runner.build_dataloader(loader_cfg)
        evaluator = Evaluator(copy.deepcopy(cfg.val_evaluator))
    evaluator.dataset_meta = loader.dataset.metainfo
    model.eval()
    ids, count = [], 0
    with torch.no_grad():
        for batch in islice(loader, batches):
            outputs = model.val_step(batch)
            evaluator.process(data_samples=outputs, data_batch=batch)
            count += len(outputs)
            ids += [o.metainfo.get('img_id') for o in outputs]
    for metric in evaluator.metrics:
        # COCO metrics evaluate every image of the annotation file unless
        # told which ones were predicted
        if hasattr(metric, 'img_ids') and None not in ids:
            metric.img_ids = ids
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate(count), count


def random_teachers(teacher: nn.Module, seed: int) -> List[nn.Module]:
    """Two untrained copies of ``teacher`` (not yet loaded): as built, and
    after ``init_weights()`` with its Pretrained inits left out (no
    download), seeded."""
    built = copy.deepcopy(teacher)
    initialised = copy.deepcopy(teacher)
    for module in initialised.modules():
        cfgs = getattr(module, 'init_cfg', None)
        if isinstance(cfgs, (dict, list)):
            module.init_cfg = without_pretrained_init(cfgs)
    torch.manual_seed(seed)
    initialised.init_weights()
    return [built, initialised]


def check_teacher_trained(teacher: nn.Module, references: List[nn.Module],
                          cfg: Config, batches: int,
                          margin: float, who: str = '') -> List[Finding]:
    """The teacher must beat the best of the random ``references`` by
    ``margin`` (fraction of the metric's full scale)."""
    ours, images = evaluate(teacher, cfg, batches)
    key = main_metric(ours)
    if key is None:
        return [Finding('warning', 'teacher_trained', f'{who}the val '
                        'evaluator returned no numeric metric',
                        'check val_evaluator')]
    rand = max(float(evaluate(r, cfg, batches)[0][key]) for r in references)
    need = margin * metric_scale(key)
    what = (f'{who}teacher {key} {float(ours[key]):.4g} vs {rand:.4g} for '
            f'the best of {len(references)} random teachers of the same '
            f'config, on {images} val images')
    if float(ours[key]) - rand < need:
        return [Finding(
            'error', 'teacher_trained', f'{what}: not better by {need:g}; '
            'the checkpoint is not trained on this data',
            'give a teacher checkpoint trained on this dataset (same '
            "classes, same order) with the teacher config's pipeline and "
            'normalisation')]
    return [Finding('ok', 'teacher_trained', f'{what} (margin {need:g})')]


# ----------------------------------------------------------------------
# (c) student init
def pretrained_inits(student: nn.Module) -> List[Tuple[str, dict]]:
    """``(module path, init_cfg)`` of every Pretrained init of the student
    (read before ``init_weights``)."""
    out = []
    for path, module in student.named_modules():
        cfgs = getattr(module, 'init_cfg', None)
        for c in (cfgs if isinstance(cfgs, list) else [cfgs]):
            if isinstance(c, dict) and c.get('type') == 'Pretrained':
                out.append((path, dict(c)))
    return out


def _state(path: str, prefix: Optional[str] = None) -> dict:
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()
             if isinstance(v, torch.Tensor)}
    if prefix:
        p = prefix if prefix.endswith('.') else prefix + '.'
        state = {k[len(p):]: v for k, v in state.items()
                 if k.startswith(p)}
    return state


def _equal_count(own: Dict[str, torch.Tensor],
                 state: Dict[str, torch.Tensor]) -> int:
    return sum(1 for k, v in own.items()
               if k in state and state[k].shape == v.shape
               and torch.equal(state[k].to(v), v))


def _float_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items()
            if v.is_floating_point()}


def check_pretrained(student: nn.Module,
                     inits: List[Tuple[str, dict]]) -> List[Finding]:
    """Each Pretrained init_cfg left its module equal to the checkpoint."""
    out = []
    modules = dict(student.named_modules())
    for path, init in inits:
        where = f'student.{path}' if path else 'student'
        own = _float_state(modules[path])
        try:
            state = _state(init['checkpoint'], init.get('prefix'))
        except Exception as e:
            out.append(Finding('error', 'student_init', f'{where} init_cfg '
                               f'Pretrained: {type(e).__name__}: {e}',
                               'give an existing checkpoint'))
            continue
        n = _equal_count(own, state)
        msg = (f'{where} init_cfg Pretrained {init["checkpoint"]!r}: {n} of '
               f'{len(own)} weights equal the checkpoint\'s')
        if n == 0:
            first = next(iter(state), None)
            out.append(Finding(
                'error', 'student_init', f'{msg}: not applied (checkpoint '
                f'keys like {first!r}, the module\'s like '
                f'{next(iter(own), None)!r}); the weights stay random',
                "set that init_cfg's prefix (e.g. prefix='backbone.') or "
                'give a checkpoint of that module'))
        elif n < len(own) / 2:
            out.append(Finding('warning', 'student_init', f'{msg}: only '
                               'partly applied', 'check the checkpoint is '
                               'of this architecture'))
        else:
            out.append(Finding('ok', 'student_init', msg))
    return out


def check_load_from(model: nn.Module, path: str) -> List[Finding]:
    """``load_from`` exists and its keys are the distiller's."""
    if '://' not in path and not osp.isfile(path):
        return [Finding('error', 'student_init', f'load_from {path!r} does '
                        'not exist', 'give an existing checkpoint or remove '
                        'load_from')]
    state = _state(path)
    own = {k: v for k, v in model.state_dict().items()
           if k.startswith('student.')}
    matched = [k for k, v in own.items()
               if k in state and state[k].shape == v.shape]
    load_from(model, path)
    msg = f'load_from {path!r}: {len(matched)} of {len(own)} student weights'
    if not matched:
        return [Finding(
            'error', 'student_init', f'{msg} (its keys look like '
            f'{next(iter(state), None)!r}, the distiller\'s like '
            f'{next(iter(own), None)!r}): nothing is loaded',
            "for a plain detector/segmentor checkpoint use "
            "student=dict(..., init_cfg=dict(type='Pretrained', "
            f"checkpoint={path!r})) instead of load_from")]
    if len(matched) < len(own) / 2:
        return [Finding('warning', 'student_init', f'{msg}: partly loaded',
                        'check the checkpoint is of this student')]
    return [Finding('ok', 'student_init', msg)]


def check_inherited(model: nn.Module) -> List[Finding]:
    """``init_student=True`` copied some teacher weights."""
    teacher = _float_state(model.teacher)
    own = {k: v for k, v in _float_state(model.student).items()
           if k.split('.')[0] not in model.init_student_skip}
    n = _equal_count(own, teacher)
    if n == 0:
        return [Finding(
            'error', 'student_init', 'init_student=True but no student '
            f'weight outside {tuple(model.init_student_skip)} equals the '
            "teacher's", 'inherit between models with the same neck/head '
            'shapes, or set init_student=False')]
    return [Finding('ok', 'student_init', f'init_student: {n} of {len(own)} '
                    'student weights inherited from the teacher')]


# ----------------------------------------------------------------------
# (e) normalisation
def _preprocessing(dp: nn.Module) -> dict:
    norm = getattr(dp, '_enable_normalize', False)
    # mmengine/mmdet: _channel_conversion; mmseg: channel_conversion
    flip = getattr(dp, '_channel_conversion',
                   getattr(dp, 'channel_conversion', False))
    return dict(
        mean=[round(float(x), 3) for x in dp.mean.flatten()] if norm else
        None,
        std=[round(float(x), 3) for x in dp.std.flatten()] if norm else None,
        bgr_to_rgb=bool(flip))


def check_preprocessors(model: nn.Module) -> List[Finding]:
    """Every teacher and the student normalise their inputs alike."""
    s = _preprocessing(model.student.data_preprocessor)
    teachers = model.teachers
    out = []
    for name, teacher in teachers.items():
        t = _preprocessing(teacher.data_preprocessor)
        diff = [f'{k} {s[k]} (student) vs {t[k]} (teacher)' for k in s
                if s[k] != t[k]]
        if diff:
            out.append(Finding(
                'warning', 'preprocessors', f'{_who(name, teachers)}'
                'data_preprocessor differs: ' + '; '.join(diff) +
                '. The distiller '
                "re-normalises the student batch to the teacher's values",
                "keep the teacher config's values only if its checkpoint "
                'was trained with them; otherwise set them in the teacher '
                'config'))
    return out or [Finding('ok', 'preprocessors',
                           f'same mean/std/bgr_to_rgb ({s})')]


# ----------------------------------------------------------------------
# (d, f) terms
def _term_finding(name: str, m, task: float, band: Tuple[float, float],
                  path: str) -> List[Finding]:
    lo, hi = band
    bad = sum(1 for v in m.losses if not math.isfinite(v))
    if bad or not m.losses:
        return [Finding(
            'error', 'terms', f'{name}: loss not finite on {bad} of '
            f'{len(m.losses)} batches ({m.losses})', "check the loss's "
            'arguments (e.g. tau > 0), its inputs and teacher_ckpt; then '
            'lower its weight or the learning rate')]
    if all(v == 0 for v in m.losses):
        return [Finding(
            'error', 'terms', f'{name}: loss is 0 on every batch: it does '
            'not train the student', 'check its layers, levels and masks '
            '(tools/analysis_tools/list_layers.py)')]
    share = m.share
    if not (math.isfinite(share) and share > 0):
        return [Finding(
            'error', 'terms', f'{name}: gradient share {share} on student '
            f'{path!r}: the term does not reach that layer', 'distil a '
            'student layer the term\'s loss depends on')]
    fix_w = m.weight / share
    msg = (f'{name}: gradient share {share:.4g} on student {path!r}, loss '
           f'{m.loss:.4g} (task {task:.4g}), weight {m.weight:g}')
    if not lo <= share <= hi:
        return [Finding('error', 'terms', f'{msg}: outside [{lo:g}, {hi:g}]',
                        f'set its weight to about {fix_w:.3g} (share 1, see '
                        'tools/analysis_tools/calibrate_weights.py)')]
    ratio = abs(m.loss) / max(abs(task), 1e-12)
    if not lo <= ratio <= hi:
        return [Finding('warning', 'terms', f'{msg}: loss {ratio:.3g}x the '
                        'task loss', 'fine if the share is as intended; '
                        'else rescale its weight')]
    return [Finding('ok', 'terms', msg)]


def check_terms(model: nn.Module, meas: Measurement,
                band: Tuple[float, float]) -> List[Finding]:
    """Every term finite, non-zero, with a gradient share in ``band``."""
    task = meas.task_loss
    if not math.isfinite(task):
        return [Finding('error', 'terms', f'task loss not finite '
                        f'({meas.task_losses})', 'check the data and the '
                        'student config')]
    out = []
    for name, m in meas.terms.items():
        path = model.distill_terms[name].student_path
        out += _term_finding(name, m, task, band, path)
    return out


# ----------------------------------------------------------------------
def _build(cfg: Config, seed: int) -> Tuple[nn.Module, dict, list]:
    """The distiller without its teacher checkpoints, random copies of each
    teacher with a model of its own (by name) and the student's
    Pretrained inits."""
    model_cfg = copy.deepcopy(cfg.model)
    without_teacher_weights(model_cfg)
    model = MODELS.build(model_cfg)
    if not hasattr(model, 'distill_terms'):
        raise TypeError(f'model is a {type(model).__name__}, not a visionkd '
                        'distiller')
    # random copies of the teachers that load a checkpoint
    references = {name: random_teachers(t, seed)
                  for name, t in model.teachers.items()
                  if model.teacher_kind(name) in ('frozen', 'online')}
    return model, references, pretrained_inits(model.student)


def _init_checks(model: nn.Module, cfg: Config, inits: list) -> list:
    out = check_pretrained(model.student, inits)
    if cfg.get('load_from', None):
        out += check_load_from(model, cfg.load_from)
    if model.init_student:
        out += check_inherited(model)
    if not out:
        out = [Finding('ok', 'student_init', 'from scratch (no Pretrained '
                       'init_cfg, load_from or init_student)')]
    return out


#: Checks that ``skip`` may leave out (``teacher_ckpt`` always runs).
SKIPPABLE = ('teacher_trained', 'student_init', 'preprocessors', 'terms')


def run_doctor(cfg: Config, val_batches: int = 5, train_batches_: int = 2,
               margin: float = 0.1,
               band: Tuple[float, float] = (1e-3, 1e3),
               device: str = 'cpu', skip: Sequence[str] = (),
               echo: bool = False) -> List[Finding]:
    """Every check on ``cfg`` but those in ``skip``; the findings in order
    (printed if ``echo``)."""
    unknown = [s for s in skip if s not in SKIPPABLE]
    if unknown:
        raise ValueError(f'cannot skip {unknown}; checks: {SKIPPABLE}')
    findings: List[Finding] = []

    def add(new: List[Finding]) -> None:
        findings.extend(new)
        if echo:
            for f in new:
                print(f.line(), flush=True)

    seed = setup(cfg, log_level='ERROR')
    try:
        model, references, inits = _build(cfg, seed)
    except Exception as e:
        add([Finding('error', 'config', f'{type(e).__name__}: {e}',
                     'fix the config (the message names the key)')])
        return findings
    specs = configured_teachers(cfg.model)
    new, loaded = check_teacher_ckpts(model, specs)
    add(new)
    model.init_weights()  # as the runner does: inherits after the load
    if 'student_init' not in skip:
        add(_init_checks(model, cfg, inits))
    model.to(device)
    if 'preprocessors' not in skip:
        add(check_preprocessors(model))
    if 'teacher_trained' not in skip:
        for name in loaded:
            add(_guard('teacher_trained', check_teacher_trained,
                       model.teachers[name],
                       [r.to(device) for r in references[name]], cfg,
                       val_batches, margin, _who(name, specs)))
    if 'terms' not in skip:
        meas = _guard('terms', measure_terms, model,
                      train_batches(cfg, seed), train_batches_,
                      check_finite=False)
        add(meas if isinstance(meas, list) else check_terms(model, meas,
                                                            band))
    return findings


def _guard(check: str, fn, *args, **kwargs):
    """``fn(...)``, or an error finding naming the exception."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        return [Finding('error', check, f'failed: {type(e).__name__}: {e}',
                        'fix what the message names')]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='teacher checkpoint (overrides '
                        'model.teacher_ckpt)')
    parser.add_argument('--val-batches', type=int, default=5)
    parser.add_argument('--train-batches', type=int, default=2)
    parser.add_argument('--margin', type=float, default=0.1,
                        help='how much the teacher must beat random ones, '
                        'as a fraction of the metric scale (default 0.1)')
    parser.add_argument('--band', type=float, nargs=2, default=(1e-3, 1e3),
                        metavar=('LO', 'HI'), help='allowed gradient share')
    parser.add_argument('--skip', nargs='+', default=[], choices=SKIPPABLE,
                        help='checks to leave out')
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the doctor; return the exit status (1 if any error)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if args.checkpoint:
        cfg.model.teacher_ckpt = args.checkpoint
    findings = run_doctor(cfg, args.val_batches, args.train_batches,
                          args.margin, tuple(args.band), args.device,
                          args.skip, echo=True)
    errors = sum(f.level == 'error' for f in findings)
    warnings = sum(f.level == 'warning' for f in findings)
    print(f'kd_doctor: {errors} error(s), {warnings} warning(s)')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
