"""Localization distillation term for GFL dense heads."""
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from visionkd.models.task_modules import LDVLRAssigner
from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered
from .gfl_heads import check_gfl_heads

__all__ = ['LDDistillTerm']


def _vlr_assigner(name: str, head: nn.Module) -> LDVLRAssigner:
    """The VLR assigner with the student's ATSS ``topk`` and ignore
    threshold (the official code derives the VLR in its ATSS assigner)."""
    from mmdet.models.task_modules import ATSSAssigner
    assigner = getattr(head, 'assigner', None)
    if not isinstance(assigner, ATSSAssigner):
        raise ValueError(
            f'distill term {name!r} (mode ld): loss_vlr needs a student '
            f'head trained with an ATSSAssigner (train_cfg.assigner), got '
            f'{type(assigner).__name__}')
    return LDVLRAssigner(topk=assigner.topk,
                         ignore_iof_thr=assigner.ignore_iof_thr)


@TERM_MODES.register_module(name='ld')
class LDDistillTerm(BaseDistillTerm):
    """``mode='ld'``: Localization Distillation on GFL box distributions.

    *Localization Distillation for Dense Object Detection* (Zheng et al.,
    CVPR 2022; official code HikariTJU/LD, its main-region part upstreamed
    to mmdet as ``LDHead``). The entry of a :class:`DetectionDistiller`'s
    ``distill_terms``::

        ld=dict(mode='ld', student='bbox_head', teacher='bbox_head',
                loss=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                          loss_weight=0.25, T=10),
                loss_vlr=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                              loss_weight=0.25, T=10),  # optional VLR LD
                loss_cls=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                              loss_weight=10, T=2),     # optional class KD
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
      ``loss_kd_<name>_cls_l<i>``;
    * ``loss_vlr`` (optional): LD on the *valuable localization region*
      (:class:`~visionkd.models.task_modules.LDVLRAssigner`, built with the
      ``topk`` and ``ignore_iof_thr`` of the student's ATSS assigner, on the
      student's anchors inside the image and the batch's ground truth),
      each location weighted by its VLR IoU, ``avg_factor=16`` as the
      official ``loss_ld_vlr``; logged as ``loss_kd_<name>_vlr_l<i>``. The
      student's own assignment and task loss are untouched.

    The teacher runs under ``no_grad`` up to its ``bbox_head`` and stops.

    Differences from the official code: no class KD on the VLR (the
    official ``loss_kd_neg`` is computed but multiplied by 0) and no
    feature imitation (``loss_im``). mmdet's ``LDHead`` and
    ``KnowledgeDistillationSingleStageDetector`` are not used directly
    because the head needs the teacher's outputs for its task loss (the
    student could not train once distillation stops) and the detector
    builds its own teacher; the loss modules are mmdet's.

    Args:
        name: Term name.
        cfg: The entry (see above).
        ctx: The build context.
    """

    mode = 'ld'
    tasks = ('detection', )
    cfg_keys = ('mode', 'student', 'teacher', 'loss', 'loss_cls', 'loss_vlr',
                'weight')
    type_keys = ('loss', 'loss_cls', 'loss_vlr')

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        where = f'distill term {name!r}'
        self.loss_ld = build_registered(cfg['loss'], f'loss of {where}')
        self.loss_cls = self.loss_vlr = None
        if cfg.get('loss_cls') is not None:
            self.loss_cls = build_registered(cfg['loss_cls'],
                                             f'loss_cls of {where}')
        head, _ = check_gfl_heads(name, 'ld', ctx.student, ctx.teacher, cfg)
        if cfg.get('loss_vlr') is not None:
            self.loss_vlr = build_registered(cfg['loss_vlr'],
                                             f'loss_vlr of {where}')
            self.vlr_assigner = _vlr_assigner(name, head)
            # the student's head, kept out of the term's state dict
            object.__setattr__(self, '_student_head', head)
        self.num_classes = head.num_classes
        self.reg_max = head.reg_max
        teacher_levels = ctx.teacher_levels
        if len(teacher_levels) != 1 or len(
                teacher_levels[0]['_return']) != 2:
            raise ValueError(f'distill term {self.name!r}: expected one '
                             f"call of the teacher head's forward giving "
                             f'(cls_scores, bbox_preds)')
        self.num_levels = len(teacher_levels[0]['_return'][1])
        extra = [p for p, loss in (('cls_', self.loss_cls),
                                   ('vlr_', self.loss_vlr))
                 if loss is not None]
        self.set_key_suffixes([f'{p}l{lvl}' for lvl in range(self.num_levels)
                               for p in [''] + extra])

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """The student head's per-level loss call and the teacher head's
        forward (mmdet calls ``bbox_head.forward`` directly, so no forward
        hook sees it); both heads are checked first."""
        cls.check_cfg(name, cfg)
        check_gfl_heads(name, 'ld', student, teacher, cfg)
        return TermLayers(
            student=(cfg['student'], 'call:loss_by_feat_single'),
            teacher=(cfg['teacher'], 'call:forward'))

    def vlr_weights(self, featmap_sizes: List[tuple], data_samples: list,
                    device: torch.device) -> List[torch.Tensor]:
        """VLR weight of every student anchor, per level ``(N * H * W, )``
        in the order of the head's flattened outputs."""
        from mmdet.models.task_modules.prior_generators import (
            anchor_inside_flags,
        )
        from mmdet.models.utils import unpack_gt_instances
        from mmdet.structures.bbox import get_box_tensor
        head = self._student_head
        gts, ignores, metas = unpack_gt_instances(data_samples)
        anchors, flags = head.get_anchors(featmap_sizes, metas, device)
        num_level = [a.size(0) for a in anchors[0]]
        per_image = []
        for i, meta in enumerate(metas):
            flat = torch.cat(anchors[i])
            inside = anchor_inside_flags(flat, torch.cat(flags[i]),
                                         meta['img_shape'][:2],
                                         head.train_cfg['allowed_border'])
            weight = flat.new_zeros(flat.size(0))
            ignore = None if ignores[i] is None else get_box_tensor(
                ignores[i].bboxes)
            weight[inside] = self.vlr_assigner.assign(
                flat[inside],
                head.get_num_level_anchors_inside(num_level, inside),
                get_box_tensor(gts[i].bboxes).to(device), ignore)
            per_image.append(weight.split(num_level))
        return [torch.cat([w[lvl] for w in per_image])
                for lvl in range(len(num_level))]

    def _level_loss(self, call: dict, cls_T: torch.Tensor,
                    box_T: torch.Tensor,
                    vlr: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
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
        zero = box_S.sum().mul(0).abs()
        out = {'': zero}
        if self.loss_cls is not None:
            out['cls_'] = zero
        if vlr is not None:
            out['vlr_'] = self._vlr_loss(box_S, box_T, vlr, zero)
        labels = call['labels'].reshape(-1)
        label_weights = call['label_weights'].reshape(-1)
        pos = ((labels >= 0) & (labels < c)).nonzero().squeeze(1)
        if len(pos) == 0:
            return out
        weight = cls_S.detach().sigmoid().max(dim=1)[0][pos]
        out[''] = self.loss_ld(
            box_S[pos].reshape(-1, bins),
            box_T[pos].reshape(-1, bins),
            weight=weight[:, None].expand(-1, 4).reshape(-1),
            avg_factor=4.0)
        if self.loss_cls is not None:
            out['cls_'] = self.loss_cls(
                cls_S[pos], cls_T[pos], weight=label_weights[pos],
                avg_factor=pos.numel())
        return out

    def _vlr_loss(self, box_S: torch.Tensor, box_T: torch.Tensor,
                  vlr: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """LD on the VLR locations, weighted by their VLR IoU."""
        idx = (vlr > 0).nonzero().squeeze(1)
        if len(idx) == 0:
            return zero
        bins = self.reg_max + 1
        return self.loss_vlr(
            box_S[idx].reshape(-1, bins), box_T[idx].reshape(-1, bins),
            weight=vlr[idx][:, None].expand(-1, 4).reshape(-1),
            avg_factor=16.0)

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """One LD (and class KD, VLR LD) loss per FPN level."""
        cls_T, box_T = teacher[0]['_return']
        if len(student) != len(box_T):
            raise RuntimeError(
                f'distill term {self.name!r}: {len(student)} student '
                f'levels recorded for {len(box_T)} teacher levels')
        vlr = [None] * len(student)
        if self.loss_vlr is not None:
            if data_samples is None:
                raise RuntimeError(f'distill term {self.name!r}: loss_vlr '
                                   f'needs the data samples (ground truth)')
            vlr = self.vlr_weights(
                [c['cls_score'].shape[-2:] for c in student], data_samples,
                cls_T[0].device)
        out = {}
        for lvl, call in enumerate(student):
            losses = self.run_loss(self._level_loss, call, cls_T[lvl],
                                   box_T[lvl], vlr[lvl])
            out.update({f'{p}l{lvl}': v for p, v in losses.items()})
        return out
