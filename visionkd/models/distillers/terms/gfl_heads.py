"""The GFL-head pair check shared by the modes distilling GFL heads."""
from typing import Tuple

import torch.nn as nn

__all__ = ['check_gfl_heads']


def check_gfl_heads(name: str, mode: str, student: nn.Module,
                    teacher: nn.Module,
                    cfg: dict) -> Tuple[nn.Module, nn.Module]:
    """Both models' GFL heads at ``cfg['student']`` / ``cfg['teacher']``.

    Checked to be plain ``GFLHead`` s (the student not mmdet's ``LDHead``,
    which wants the teacher itself) of one layout: classes, ``reg_max``,
    priors per location and strides.

    Raises:
        ValueError: naming the term, its mode and the difference.
    """
    from mmdet.models.dense_heads import GFLHead, LDHead
    where = f'distill term {name!r} (mode {mode})'
    heads = []
    for role, model in (('student', student), ('teacher', teacher)):
        path = cfg[role]
        head = dict(model.named_modules()).get(path)
        if not isinstance(head, GFLHead):
            raise ValueError(f'{where}: the {role} layer {path!r} is '
                             f'{type(head).__name__}, not a GFLHead')
        heads.append(head)
    s, t = heads
    if isinstance(s, LDHead):
        raise ValueError(f'{where}: give the student a plain GFLHead; the '
                         f'term feeds the teacher itself')
    for attr in ('num_classes', 'reg_max', 'num_base_priors'):
        if getattr(s, attr) != getattr(t, attr):
            raise ValueError(
                f'{where}: student and teacher heads differ in {attr} '
                f'({getattr(s, attr)} vs {getattr(t, attr)})')
    if list(s.prior_generator.strides) != list(t.prior_generator.strides):
        raise ValueError(f'{where}: student and teacher heads have '
                         f'different strides')
    return s, t
