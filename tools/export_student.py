"""Turn a distiller checkpoint into a plain mmdet/mmseg student checkpoint.

The output holds only the student's weights (keys without the ``student.``
prefix; connectors and distillation-loss parameters are dropped), so it
loads with ``mmdet.apis.init_detector`` / ``mmseg.apis.init_model`` and
mmdet's/mmseg's own ``tools/test.py``. With ``--config`` the matching plain
student config is written too::

    python tools/export_student.py work_dirs/kd/iter_1000.pth student.pth \
        --config configs/kd/faster_rcnn_r101_to_r18.py --out-config student.py

``--model <teacher name>`` exports a teacher that the run trained or
averaged instead (an online teacher, ``online_teachers.<name>.*``, or an EMA
teacher, ``ema_teachers.<name>.*``; ``teacher`` in the one-teacher form)::

    python tools/export_student.py work_dirs/dml/iter_80000.pth peer.pth \
        --model teacher --out-config peer.py \
        --config configs/online/pspnet_r50_r18_mutual_cityscapes.py
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict
from typing import Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch
from mmengine.config import Config

PREFIX = 'student.'
#: Prefixes of the teachers a distiller checkpoint can hold.
TEACHER_PREFIXES = ('online_teachers.', 'ema_teachers.')


def _prefix_of(state: dict, model: str, src: str) -> str:
    """The key prefix of ``model`` (``'student'`` or a teacher name)."""
    if model == 'student':
        return PREFIX
    for head in TEACHER_PREFIXES:
        if any(k.startswith(f'{head}{model}.') for k in state):
            return f'{head}{model}.'
    names = sorted({k.split('.')[1] for k in state
                    if k.startswith(TEACHER_PREFIXES)})
    raise ValueError(
        f'{src} holds no trained teacher {model!r} (a frozen teacher is never '
        f'in a checkpoint: its weights are its teacher_ckpt); teachers '
        f'here: {names or "none"}')


def export_student(src: str,
                   dst: str,
                   config: Optional[str] = None,
                   out_config: Optional[str] = None,
                   model: str = 'student') -> int:
    """Write the student (or an online/EMA teacher) part of ``src`` to
    ``dst``.

    Args:
        src: Distiller checkpoint (``.pth`` written by the runner).
        dst: Output checkpoint path.
        config: Distiller config, needed for ``out_config``.
        out_config: Where to write the plain model config.
        model: ``'student'`` or the name of an online or EMA teacher.

    Returns:
        The number of tensors written.
    """
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt)
    prefix = _prefix_of(state, model, src)
    student = OrderedDict((k[len(prefix):], v) for k, v in state.items()
                          if k.startswith(prefix) and not k.endswith(
                              '._steps'))
    if not student:
        raise ValueError(f'{src} has no "{prefix}*" weights: is it a '
                         f'visionkd distiller checkpoint?')
    meta = dict(ckpt.get('meta', {}) or {})
    meta['visionkd_exported_from'] = osp.abspath(src)
    torch.save(dict(state_dict=student, meta=meta), dst)
    if out_config is not None:
        if config is None:
            raise ValueError('--out-config needs --config')
        write_student_config(config, out_config, model)
    return len(student)


def _model_spec(distiller: dict, model: str):
    """The config spec of ``model`` in a distiller's model dict."""
    if model == 'student':
        return distiller['student']
    entry = (distiller.get('teachers') or {}).get(model)
    if entry is not None:
        spec = entry.get('model')
        kind = entry.get('kind')
    else:
        spec, kind = distiller.get('teacher'), None
    if kind == 'ema' or (isinstance(spec, dict) and spec.get('kind') ==
                         'ema'):
        return distiller['student']  # an EMA teacher is a student copy
    return spec


def write_student_config(config: str, out_config: str,
                         model: str = 'student') -> None:
    """Write ``config`` with its distiller replaced by the plain student
    (or the teacher ``model``)."""
    import visionkd  # noqa: F401
    from visionkd.utils import resolve_model_cfg
    cfg = Config.fromfile(config)
    distiller = cfg.model.to_dict()
    scope = 'mmseg' if 'Segmentation' in str(distiller.get('type')) else \
        'mmdet'
    student = resolve_model_cfg(_model_spec(distiller, model), scope, model)
    student.pop('_scope_', None)
    cfg.model = student
    cfg.default_scope = scope
    cfg.dump(out_config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='distiller checkpoint')
    parser.add_argument('dst', help='output student checkpoint')
    parser.add_argument('--config', help='distiller config')
    parser.add_argument('--out-config', help='write the plain model config')
    parser.add_argument('--model', default='student',
                        help="'student' (default) or the name of an online "
                        "or EMA teacher ('teacher' in the one-teacher form)")
    args = parser.parse_args()
    n = export_student(args.src, args.dst, args.config, args.out_config,
                       args.model)
    print(f'wrote {n} {args.model} tensors to {args.dst}')


if __name__ == '__main__':
    main()
