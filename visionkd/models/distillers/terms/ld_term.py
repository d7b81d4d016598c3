"""Localization distillation term for GFL dense heads."""
from typing import Dict, Optional

import torch
import torch.nn as nn

from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered

__all__ = ['LDDistillTerm']


def _gfl_heads(name: str, student: nn.Module, teacher: nn.Module,
               cfg: dict) -> tuple:
    """Both GFL heads, checked to be of the same layout."""
    from mmdet.models.dense_heads import GFLHead, LDHead
    heads = []
    for role, model in (('student', student), ('teacher', teacher)):
        path = cfg[role]
        head = dict(model.named_modules()).get(path)
        if not isinstance(head, GFLHead):
            raise ValueError(
                f'distill term {name!r} (mode ld): the {role} layer '
                f'{path!r} is {type(head).__name__}, not a GFLHead')
        heads.append(head)
    if isinstance(heads[0], LDHead):
        raise ValueError(
            f'distill term {name!r} (mode ld): give the student a '
            f'plain GFLHead; the term feeds the teacher itself')
    s, t = heads
    for attr in ('num_classes', 'reg_max'):
        if getattr(s, attr) != getattr(t, attr):
            raise ValueError(
                f'distill term {name!r} (mode ld): student and '
                f'teacher heads differ in {attr} ({getattr(s, attr)} vs '
                f'{getattr(t, attr)})')
    if list(s.prior_generator.strides) != list(t.prior_generator.strides):
        raise ValueError(
            f'distill term {name!r} (mode ld): student and teacher '
            f'heads have different strides')
    return s, t


@TERM_MODES.register_module(name='ld')
class LDDistillTerm(BaseDistillTerm):
    """``mode='ld'``: Localization Distillation on GFL box distributions.

    *Localization Distillation for Dense Object Detection* (Zheng et al.,
    CVPR 2022; official code HikariTJU/LD, upstreamed to mmdet as
    ``LDHead``). The entry of a :class:`DetectionDistiller`'s
    ``distill_terms``::

        ld=dict(mode='ld', student='bbox_head', teacher='bbox_head',
                loss=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                          loss_weight=0.25, T=10),
                loss_cls=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                              loss_weight=0.5, T=10),   # optional class KD
                weight=1.0)                             # optional

    Student and teacher are GFL detectors (``GFLHead``, same strides,
    ``reg_max`` and classes). Per level, on the **student's positive
    locations** (its own ATSS assignment, recorded from
    ``GFLHead.loss_by_feat_single``, so nothing is assigned twice) -- LD's
    *main distillation region*, as mmdet's ``LDHead``:

    * ``loss``: mmdet's ``KnowledgeDistillationKLDivLoss`` between the
      student's and the teacher's box distributions (``reg_max + 1`` bins
      per side, softmax with temperature ``T``), weighted by the student's
      detached max class score of the location, ``avg_factor=4`` -- the
      exact call of ``LDHead.loss_by_feat_single``; logged as
      ``loss_kd_<name>_l<i>``;
    * ``loss_cls`` (optional): KD on the dense head's class logits at the
      same positive locations, ``KnowledgeDistillationKLDivLoss(cls_S,
      cls_T, weight=label_weights, avg_factor=num_pos)`` as the official
      ``LDHead.loss_kd`` (softmax over the classes although GFL scores are
      sigmoid-based, as in the official code); logged as
      ``loss_kd_<name>_cls_l<i>``.

    The teacher runs under ``no_grad`` up to its ``bbox_head`` and stops.

    Differences from the official code: the *valuable localization region*
    (``loss_ld_vlr``, which needs the official code's modified ATSS
    assigner) is not distilled; the official COCO configs of GFLv1 students
    do not use it either. mmdet's ``LDHead`` and
    ``KnowledgeDistillationSingleStageDetector`` are not used directly
    because the head needs the teacher's outputs for its task loss (the
    student could not train once distillation stops) and the detector
    builds its own teacher; the loss module is mmdet's.

    Args:
        name: Term name.
        cfg: The entry (see above).
    """

    mode = 'ld'
    tasks = ('detection', )
    cfg_keys = ('mode', 'student', 'teacher', 'loss', 'loss_cls', 'weight')
    type_keys = ('loss', 'loss_cls')

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        where = f'distill term {name!r}'
        self.loss_ld = build_registered(cfg['loss'], f'loss of {where}')
        self.loss_cls = None
        if cfg.get('loss_cls') is not None:
            self.loss_cls = build_registered(cfg['loss_cls'],
                                             f'loss_cls of {where}')
        head, _ = _gfl_heads(name, ctx.student, ctx.teacher, cfg)
        self.num_classes = head.num_classes
        self.reg_max = head.reg_max
        teacher_levels = ctx.teacher_levels
        if len(teacher_levels) != 1 or len(
                teacher_levels[0]['_return']) != 2:
            raise ValueError(f'distill term {self.name!r}: expected one '
                             f"call of the teacher head's forward giving "
                             f'(cls_scores, bbox_preds)')
        self.num_levels = len(teacher_levels[0]['_return'][1])
        suffixes = []
        for lvl in range(self.num_levels):
            suffixes.append(f'l{lvl}')
            if self.loss_cls is not None:
                suffixes.append(f'cls_l{lvl}')
        self.set_key_suffixes(suffixes)

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """The student head's per-level loss call and the teacher head's
        forward (mmdet calls ``bbox_head.forward`` directly, so no forward
        hook sees it); both heads are checked first."""
        cls.check_cfg(name, cfg)
        _gfl_heads(name, student, teacher, cfg)
        return TermLayers(
            student=(cfg['student'], 'call:loss_by_feat_single'),
            teacher=(cfg['teacher'], 'call:forward'))

    def _level_loss(self, call: dict, cls_T: torch.Tensor,
                    box_T: torch.Tensor) -> tuple:
        cls_S, box_S = call['cls_score'], call['bbox_pred']
        if cls_S.shape != cls_T.shape or box_S.shape != box_T.shape:
            raise RuntimeError(
                f'distill term {self.name!r}: student and teacher head '
                f'outputs differ in shape ({tuple(box_S.shape)} vs '
                f'{tuple(box_T.shape)})')
        bins = self.reg_max + 1
        c = self.num_classes
        cls_S = cls_S.permute(0, 2, 3, 1).reshape(-1, c)
        cls_T = cls_T.permute(0, 2, 3, 1).reshape(-1, c)
        box_S = box_S.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
        box_T = box_T.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
        labels = call['labels'].reshape(-1)
        label_weights = call['label_weights'].reshape(-1)
        pos = ((labels >= 0) & (labels < c)).nonzero().squeeze(1)
        if len(pos) == 0:
            zero = box_S.sum().mul(0).abs()
            return zero, None if self.loss_cls is None else zero
        weight = cls_S.detach().sigmoid().max(dim=1)[0][pos]
        loss_ld = self.loss_ld(
            box_S[pos].reshape(-1, bins),
            box_T[pos].reshape(-1, bins),
            weight=weight[:, None].expand(-1, 4).reshape(-1),
            avg_factor=4.0)
        loss_cls = None
        if self.loss_cls is not None:
            loss_cls = self.loss_cls(
                cls_S[pos], cls_T[pos], weight=label_weights[pos],
                avg_factor=pos.numel())
        return loss_ld, loss_cls

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """One LD (and class KD) loss per FPN level."""
        cls_T, box_T = teacher[0]['_return']
        if len(student) != len(box_T):
            raise RuntimeError(
                f'distill term {self.name!r}: {len(student)} student '
                f'levels recorded for {len(box_T)} teacher levels')
        out = {}
        for lvl, call in enumerate(student):
            loss_ld, loss_cls = self.run_loss(self._level_loss, call,
                                              cls_T[lvl], box_T[lvl])
            out[f'l{lvl}'] = loss_ld
            if loss_cls is not None:
                out[f'cls_l{lvl}'] = loss_cls
        return out
