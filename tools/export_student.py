"""Turn a distiller checkpoint into a plain mmdet/mmseg student checkpoint.

The output holds only the student's weights (keys without the ``student.``
prefix; connectors and distillation-loss parameters are dropped), so it
loads with ``mmdet.apis.init_detector`` / ``mmseg.apis.init_model`` and
mmdet's/mmseg's own ``tools/test.py``. With ``--config`` the matching plain
student config is written too::

    python tools/export_student.py work_dirs/kd/iter_1000.pth student.pth \
        --config configs/kd/faster_rcnn_r101_to_r18.py --out-config student.py
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


def export_student(src: str,
                   dst: str,
                   config: Optional[str] = None,
                   out_config: Optional[str] = None) -> int:
    """Write the student part of ``src`` to ``dst``.

    Args:
        src: Distiller checkpoint (``.pth`` written by the runner).
        dst: Output checkpoint path.
        config: Distiller config, needed for ``out_config``.
        out_config: Where to write the plain student config.

    Returns:
        The number of tensors written.
    """
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt)
    student = OrderedDict((k[len(PREFIX):], v) for k, v in state.items()
                          if k.startswith(PREFIX))
    if not student:
        raise ValueError(f'{src} has no "{PREFIX}*" weights: is it a '
                         f'visionkd distiller checkpoint?')
    meta = dict(ckpt.get('meta', {}) or {})
    meta['visionkd_exported_from'] = osp.abspath(src)
    torch.save(dict(state_dict=student, meta=meta), dst)
    if out_config is not None:
        if config is None:
            raise ValueError('--out-config needs --config')
        write_student_config(config, out_config)
    return len(student)


def write_student_config(config: str, out_config: str) -> None:
    """Write ``config`` with its distiller replaced by the plain student."""
    import visionkd  # noqa: F401
    from visionkd.utils import resolve_model_cfg
    cfg = Config.fromfile(config)
    model = cfg.model
    scope = 'mmseg' if 'Segmentation' in str(model.get('type')) else 'mmdet'
    student = resolve_model_cfg(model.student.to_dict() if hasattr(
        model.student, 'to_dict') else model.student, scope, 'student')
    student.pop('_scope_', None)
    cfg.model = student
    cfg.default_scope = scope
    cfg.dump(out_config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='distiller checkpoint')
    parser.add_argument('dst', help='output student checkpoint')
    parser.add_argument('--config', help='distiller config')
    parser.add_argument('--out-config', help='write the plain student config')
    args = parser.parse_args()
    n = export_student(args.src, args.dst, args.config, args.out_config)
    print(f'wrote {n} student tensors to {args.dst}')


if __name__ == '__main__':
    main()
