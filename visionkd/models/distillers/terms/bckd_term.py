"""BCKD term: binary class KD and IoU-based box KD on GFL heads."""
from typing import Dict, Optional

import torch
import torch.nn as nn

from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered
from .gfl_heads import check_gfl_heads

__all__ = ['BCKDDistillTerm']

#: The released configs' losses (TinyTigerPan/BCKD, configs/bckd/*.py).
DEFAULT_LOSS_CLS = dict(type='BCKDClsLoss', beta=1.0, loss_weight=1.0)
DEFAULT_LOSS_REG = dict(type='BCKDRegLoss', loss_weight=4.0)


@TERM_MODES.register_module(name='bckd')
class BCKDDistillTerm(BaseDistillTerm):
    """``mode='bckd'``: BCKD's classification and localisation KD on GFL.

    *Bridging Cross-task Protocol Inconsistency for Distillation in Dense
    Object Detection* (Yang et al., ICCV 2023; official code
    TinyTigerPan/BCKD, a modified mmdet 2.28 ``LDHead``). The entry of a
    :class:`DetectionDistiller`'s ``distill_terms``::

        bckd=dict(mode='bckd', student='bbox_head', teacher='bbox_head',
                  loss_cls=dict(type='BCKDClsLoss', beta=1.0,
                                loss_weight=1.0),    # default
                  loss_reg=dict(type='BCKDRegLoss',
                                loss_weight=4.0),    # default
                  weight=1.0)                        # optional

    Student and teacher are GFL detectors of the same layout (classes,
    ``reg_max``, strides, priors per location). Per FPN level, on **all**
    locations (weighted by the student's GFL label weights, recorded from
    its ``loss_by_feat_single`` call, so nothing is assigned twice) and
    normalised by the level call's ``avg_factor`` (the number of positive
    locations of the batch, at least 1):

    * ``loss_cls`` (:class:`BCKDClsLoss`): binary KD of the class logits,
      logged as ``loss_kd_<name>_cls_l<i>``;
    * ``loss_reg`` (:class:`BCKDRegLoss`): GIoU between the student's and
      teacher's boxes decoded from their distributions, each location
      weighted by ``max_c |sigmoid(t) - sigmoid(s)|`` (detached) times its
      label weight; logged as ``loss_kd_<name>_reg_l<i>``.

    As in the official code, both are 0 on a level without any positive
    location. Either loss can be switched off with ``None``. The teacher
    runs under ``no_grad`` up to its ``bbox_head`` and stops.

    Differences from the official code: the normaliser is mmdet 3's GFL
    ``avg_factor`` (number of positives, clamped to 1 for the batch); the
    official mmdet 2.28 head counts at least one per image. The disabled
    parts of the official head (LD, its VLR variants, feature imitation,
    all with weight 0 in the released configs) are not implemented.

    Args:
        name: Term name.
        cfg: The entry (see above).
    """

    mode = 'bckd'
    tasks = ('detection', )
    cfg_keys = ('mode', 'student', 'teacher', 'loss_cls', 'loss_reg',
                'weight')
    required_keys = ('student', 'teacher')
    type_keys = ('loss_cls', 'loss_reg')

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        where = f'distill term {name!r}'
        cls_cfg = cfg.get('loss_cls', DEFAULT_LOSS_CLS)
        reg_cfg = cfg.get('loss_reg', DEFAULT_LOSS_REG)
        if cls_cfg is None and reg_cfg is None:
            raise ValueError(f'{where} (mode bckd): loss_cls and loss_reg '
                             f'are both None; nothing to distil')
        self.loss_cls = None if cls_cfg is None else build_registered(
            cls_cfg, f'loss_cls of {where}')
        self.loss_reg = None if reg_cfg is None else build_registered(
            reg_cfg, f'loss_reg of {where}')
        head, _ = check_gfl_heads(name, 'bckd', ctx.student, ctx.teacher,
                                  cfg)
        self.num_classes = head.cls_out_channels
        self.reg_max = head.reg_max
        levels = ctx.teacher_levels
        if len(levels) != 1 or len(levels[0]['_return']) != 2:
            raise ValueError(f'{where}: expected one call of the teacher '
                             f"head's forward giving (cls_scores, "
                             f'bbox_preds)')
        self.num_levels = len(levels[0]['_return'][1])
        suffixes = []
        for lvl in range(self.num_levels):
            if self.loss_cls is not None:
                suffixes.append(f'cls_l{lvl}')
            if self.loss_reg is not None:
                suffixes.append(f'reg_l{lvl}')
        self.set_key_suffixes(suffixes)

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """The student head's per-level loss call (logits, label weights,
        ``avg_factor``) and the teacher head's forward; both heads are
        checked first."""
        cls.check_cfg(name, cfg)
        check_gfl_heads(name, 'bckd', student, teacher, cfg)
        return TermLayers(
            student=(cfg['student'], 'call:loss_by_feat_single'),
            teacher=(cfg['teacher'], 'call:forward'))

    def _flat(self, cls_score: torch.Tensor,
              bbox_pred: torch.Tensor) -> tuple:
        """(N * H * W, C) class and (N * H * W, 4 * (n + 1)) box logits."""
        bins = 4 * (self.reg_max + 1)
        return (cls_score.permute(0, 2, 3, 1).reshape(-1, self.num_classes),
                bbox_pred.permute(0, 2, 3, 1).reshape(-1, bins))

    def _level_loss(self, call: dict, cls_T: torch.Tensor,
                    box_T: torch.Tensor) -> tuple:
        cls_S, box_S = call['cls_score'], call['bbox_pred']
        if cls_S.shape != cls_T.shape or box_S.shape != box_T.shape:
            raise RuntimeError(
                f'distill term {self.name!r}: student and teacher head '
                f'outputs differ in shape ({tuple(cls_S.shape)}, '
                f'{tuple(box_S.shape)} vs {tuple(cls_T.shape)}, '
                f'{tuple(box_T.shape)})')
        cls_S, box_S = self._flat(cls_S, box_S)
        cls_T, box_T = self._flat(cls_T, box_T)
        labels = call['labels'].reshape(-1)
        label_weights = call['label_weights'].reshape(-1)
        if not ((labels >= 0) & (labels < self.num_classes)).any():
            zero = box_S.sum().mul(0).abs() + cls_S.sum().mul(0).abs()
            return zero, zero
        avg_factor = max(float(call['avg_factor']), 1.0)
        loss_cls = loss_reg = None
        if self.loss_cls is not None:
            loss_cls = self.loss_cls(cls_S, cls_T, weight=label_weights,
                                     avg_factor=avg_factor)
        if self.loss_reg is not None:
            gap = (cls_T.sigmoid() - cls_S.detach().sigmoid()).abs()
            weight = gap.max(dim=1)[0] * label_weights
            loss_reg = self.loss_reg(box_S, box_T, weight=weight,
                                     avg_factor=avg_factor)
        return loss_cls, loss_reg

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """The class and box KD losses per FPN level."""
        cls_T, box_T = teacher[0]['_return']
        if len(student) != len(box_T):
            raise RuntimeError(
                f'distill term {self.name!r}: {len(student)} student '
                f'levels recorded for {len(box_T)} teacher levels')
        out = {}
        for lvl, call in enumerate(student):
            loss_cls, loss_reg = self.run_loss(self._level_loss, call,
                                               cls_T[lvl], box_T[lvl])
            if self.loss_cls is not None:
                out[f'cls_l{lvl}'] = loss_cls
            if self.loss_reg is not None:
                out[f'reg_l{lvl}'] = loss_reg
        return out
