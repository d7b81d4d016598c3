"""Mask-head distillation term: the teacher's mask head on shared RoIs."""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .roi_term import find_roi_head

__all__ = ['MaskDistillTerm', 'mask_sigmoid_kd']


def mask_sigmoid_kd(mask_S: torch.Tensor, mask_T: torch.Tensor,
                    labels: torch.Tensor, T: float) -> torch.Tensor:
    """Per-pixel binary KD of mask logits on each RoI's class channel.

    ``T^2 * mean BCE(sigmoid(s / T), sigmoid(t / T))`` over the pixels of
    channel ``labels[i]`` of RoI ``i`` (channel 0 for class-agnostic heads,
    ``labels`` all zero). No RoI gives a zero that keeps the graph.

    Args:
        mask_S: Student mask logits, (N, C, h, w).
        mask_T: Teacher mask logits of the same RoIs, (N, C, h, w).
        labels: Channel of each RoI, (N, ).
        T: Temperature.
    """
    if mask_S.size(0) == 0:
        return mask_S.sum() * 0
    idx = torch.arange(mask_S.size(0), device=mask_S.device)
    s = mask_S[idx, labels]
    target = torch.sigmoid(mask_T[idx, labels] / T)
    return F.binary_cross_entropy_with_logits(s / T, target) * T * T


def _mask_roi_head(model: nn.Module, path: str, role: str,
                   term: str) -> nn.Module:
    """The mmdet RoI head at ``path``, checked to have one mask head."""
    head = find_roi_head(model, path, role, term, 'mask',
                         '(two-stage instance segmentation detectors such '
                         'as Mask R-CNN only)')
    if not getattr(head, 'with_mask', False):
        raise ValueError(
            f'distill term {term!r} (mode mask): the {role} RoI head '
            f'{path!r} has no mask head (e.g. Faster R-CNN); use a Mask '
            f'R-CNN {role}, or mode=\'roi\' for box-level RoI KD')
    if isinstance(head.mask_head, nn.ModuleList):
        raise ValueError(
            f'distill term {term!r} (mode mask): multi-stage mask heads '
            f'(Cascade Mask R-CNN, HTC) are not supported')
    return head


@TERM_MODES.register_module(name='mask')
class MaskDistillTerm(BaseDistillTerm):
    """``mode='mask'``: the teacher's mask head on the student's positives.

    The entry of a :class:`DetectionDistiller`'s ``distill_terms``::

        mask=dict(mode='mask', student='roi_head', teacher='roi_head',
                  T=1.0,          # optional temperature
                  weight=1.0)     # optional

    Per training step:

    1. the student's ``roi_head.mask_head.loss_and_target`` call is recorded
       (mmdet's ``StandardRoIHead.mask_loss``): its mask logits
       ``(num_pos, C, 28, 28)`` of the **positive** RoIs of its own
       sampling, and the sampling results (``pos_priors``,
       ``pos_gt_labels``), so the student pays nothing extra;
    2. the teacher runs, under ``no_grad``, only up to its features
       (``neck``, or ``backbone``) and stops there;
    3. the teacher's ``mask_roi_extractor`` (+ shared head) and
       ``mask_head`` run on those features with the student's positive
       RoIs (``bbox2roi(pos_priors)``, as ``mask_loss`` builds them), so
       both mask heads predict on exactly the same boxes;
    4. the loss is the per-pixel binary KD :func:`mask_sigmoid_kd` on the
       ground-truth class channel of each RoI (channel 0 if the heads are
       class-agnostic), logged as ``loss_kd_<name>``.

    The loss is the binary (sigmoid) form of Hinton et al.'s KD
    (*Distilling the Knowledge in a Neural Network*, 2015): soft targets
    ``sigmoid(t / T)``, ``T^2`` scaling. Mask R-CNN's mask branch predicts
    one independent sigmoid per pixel and class, and trains only the
    ground-truth class channel with per-pixel BCE (He et al., ICCV 2017;
    mmdet's ``FCNMaskHead`` + ``mask_cross_entropy``); the term keeps that
    structure and swaps the binary ground truth for the teacher's soft mask.

    Gradients reach the student's mask head and, through its RoI features,
    its neck and backbone; the RoIs are detached. Both detectors must have
    one ``StandardRoIHead``-style mask head with the same classes, class
    agnosticism and mask size.

    Args:
        name: Term name.
        cfg: The entry (see above).
        ctx: Models and dry-run records.
    """

    mode = 'mask'
    tasks = ('detection', )
    cfg_keys = ('mode', 'student', 'teacher', 'T', 'weight')
    required_keys = ('student', 'teacher')
    type_keys = ()

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        if not ctx.teacher_levels:
            raise ValueError(f'distill term {self.name!r}: the teacher '
                             f'features were not recorded')
        self.T = float(cfg.get('T', 1.0))
        t_head = _mask_roi_head(ctx.teacher, self.teacher_path, 'teacher',
                                name)
        s_head = _mask_roi_head(ctx.student, self.student_path, 'student',
                                name)
        self.class_agnostic = bool(s_head.mask_head.class_agnostic)
        # Not a child module: the teacher stays out of state_dict().
        object.__setattr__(self, '_teacher_roi_head', t_head)
        self.set_key_suffixes([''])

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> None:
        """The base checks plus a positive number ``T``."""
        super().check_cfg(name, cfg)
        T = cfg.get('T', 1.0)
        if not isinstance(T, (int, float)) or isinstance(T, bool):
            raise TypeError(f'distill term {name!r}: T must be a number, '
                            f'got {T!r}')
        if T <= 0:
            raise ValueError(f'distill term {name!r}: T must be positive, '
                             f'got {T}')

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """The student mask head's ``loss_and_target`` call, the teacher's
        features; both mask heads are checked first."""
        cls.check_cfg(name, cfg)
        s_head = _mask_roi_head(student, cfg['student'], 'student', name)
        t_head = _mask_roi_head(teacher, cfg['teacher'], 'teacher', name)
        s, t = s_head.mask_head, t_head.mask_head
        if s.num_classes != t.num_classes:
            raise ValueError(
                f'distill term {name!r} (mode mask): student and teacher '
                f'mask heads have {s.num_classes} and {t.num_classes} '
                f'classes; give both the same num_classes')
        if bool(s.class_agnostic) != bool(t.class_agnostic):
            raise ValueError(
                f'distill term {name!r} (mode mask): one mask head is '
                f'class-agnostic and the other is not; set the same '
                f'class_agnostic on both')
        feats = 'neck' if getattr(teacher, 'with_neck', False) else 'backbone'
        return TermLayers(
            student=(f"{cfg['student']}.mask_head", 'call:loss_and_target'),
            teacher=(feats, 'output'))

    def teacher_masks(self, teacher_feats: Sequence[torch.Tensor],
                      rois: torch.Tensor) -> torch.Tensor:
        """The teacher's mask logits on ``rois`` (``_mask_forward``'s RoI
        path; the extractor is the box one if the head shares it)."""
        head = self._teacher_roi_head
        extractor = head.mask_roi_extractor
        with torch.no_grad():
            x = tuple(teacher_feats)[:extractor.num_inputs]
            feats = extractor(x, rois.detach())
            if head.with_shared_head:
                feats = head.shared_head(feats)
            return head.mask_head(feats)

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """The loss on the recorded student call's positive RoIs."""
        from mmdet.structures.bbox import bbox2roi
        if len(student) != 1:
            raise RuntimeError(
                f'distill term {self.name!r}: expected one call of the '
                f"student's mask_head.loss_and_target, got {len(student)}")
        call = student[0]
        mask_S = call['mask_preds']
        results = call['sampling_results']
        rois = bbox2roi([res.pos_priors for res in results])
        labels = torch.cat([res.pos_gt_labels for res in results])
        if self.class_agnostic:
            labels = torch.zeros_like(labels)
        mask_T = self.teacher_masks(teacher, rois)
        if mask_T.shape != mask_S.shape:
            raise RuntimeError(
                f'distill term {self.name!r} (mode mask): student and '
                f'teacher mask logits differ in shape '
                f'({tuple(mask_S.shape)} vs {tuple(mask_T.shape)}); give '
                f'both the same mask_roi_extractor output_size and '
                f'mask_head upsampling')
        value = self.run_loss(mask_sigmoid_kd, mask_S, mask_T,
                              labels.long(), self.T)
        return {'': value}
