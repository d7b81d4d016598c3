"""RoI-level distillation term: the teacher's RoI head on shared proposals."""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered

__all__ = ['RoIDistillTerm', 'find_roi_head']


def find_roi_head(model: nn.Module, path: str, role: str, term: str,
                  mode: str, needs: str) -> nn.Module:
    """The mmdet RoI head at ``path`` (an error naming the term otherwise).

    Args:
        needs: What the mode needs, ending the error message.
    """
    head = dict(model.named_modules()).get(path)
    if head is None or not all(
            hasattr(head, a) for a in ('bbox_roi_extractor', 'bbox_head',
                                       '_bbox_forward')):
        raise ValueError(
            f'distill term {term!r} (mode {mode}): the {role} layer '
            f'{path!r} is not an mmdet RoI head {needs}')
    return head


def _roi_head(model: nn.Module, path: str, role: str,
              term: str) -> nn.Module:
    """The mmdet RoI head at ``path`` (single-stage heads only)."""
    head = find_roi_head(model, path, role, term, 'roi',
                         'with bbox_roi_extractor and bbox_head (two-stage '
                         'detectors only)')
    if isinstance(head.bbox_head, nn.ModuleList):
        raise ValueError(
            f'distill term {term!r} (mode roi): multi-stage RoI '
            f'heads (Cascade R-CNN) are not supported')
    return head


@TERM_MODES.register_module(name='roi')
class RoIDistillTerm(BaseDistillTerm):
    """``mode='roi'``: the teacher's RoI head scores the student's proposals.

    The entry of a :class:`DetectionDistiller`'s ``distill_terms``::

        roi=dict(mode='roi', student='roi_head', teacher='roi_head',
                 loss=dict(type='RoIKDLoss', tau=1.0, loss_weight_fg=1.0,
                           loss_weight_bg=1.0),
                 weight=1.0)                     # optional

    Per training step:

    1. the student's ``roi_head.bbox_head.loss_and_target`` call is recorded
       (its class logits, box deltas, the sampled RoIs and their sampling
       labels), so the student pays nothing extra;
    2. the teacher runs, under ``no_grad``, only up to its features
       (``neck``, or ``backbone`` without a neck) and stops there: no RPN,
       no RoI head of its own;
    3. the teacher's ``bbox_roi_extractor`` (+ shared head) and
       ``bbox_head`` run on those features with the **student's RoIs**
       (``StandardRoIHead._bbox_forward``), so both heads score exactly the
       same proposals (shared proposals, Chen et al. 2017; DeFeat's
       ``SampleSTU``);
    4. the loss (e.g. :class:`RoIKDLoss`) gets ``(cls_S, cls_T, labels,
       bbox_pred_S, bbox_pred_T)`` and is logged as ``loss_kd_<name>``.

    Gradients reach the student's RoI head and, through the RoI features,
    its neck and backbone; the teacher's outputs are computed without grad.
    Both detectors must be two-stage with a single-stage RoI head
    (``StandardRoIHead`` and subclasses); the teacher's classes must match.

    Args:
        name: Term name.
        cfg: The entry (see above).
    """

    mode = 'roi'
    tasks = ('detection', )

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        if not ctx.teacher_levels:
            raise ValueError(f'distill term {self.name!r}: the teacher '
                             f'features were not recorded')
        self.loss_cfg: dict = cfg['loss']
        self.losses = nn.ModuleList([
            build_registered(self.loss_cfg, f'loss of distill term '
                             f'{self.name!r}')
        ])
        self.num_levels = 1
        t_head = _roi_head(ctx.teacher, self.teacher_path, 'teacher', name)
        # Not a child module: the teacher stays out of state_dict().
        object.__setattr__(self, '_teacher_roi_head', t_head)
        self.set_key_suffixes([''])

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """The student head's ``loss_and_target`` call, the teacher's
        features; both RoI heads are checked first."""
        cls.check_cfg(name, cfg)
        s_head = _roi_head(student, cfg['student'], 'student', name)
        t_head = _roi_head(teacher, cfg['teacher'], 'teacher', name)
        n_s = s_head.bbox_head.num_classes
        n_t = t_head.bbox_head.num_classes
        if n_s != n_t:
            raise ValueError(
                f'distill term {name!r} (mode roi): student and teacher '
                f'RoI heads have {n_s} and {n_t} classes')
        feats = 'neck' if getattr(teacher, 'with_neck', False) else 'backbone'
        return TermLayers(
            student=(f"{cfg['student']}.bbox_head", 'call:loss_and_target'),
            teacher=(feats, 'output'))

    def teacher_outputs(self, teacher_feats: Sequence[torch.Tensor],
                        rois: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The teacher's class logits and box deltas on ``rois``."""
        head = self._teacher_roi_head
        with torch.no_grad():
            return head._bbox_forward(tuple(teacher_feats), rois.detach())

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """The loss on the recorded student call's RoIs."""
        if len(student) != 1:
            raise RuntimeError(
                f'distill term {self.name!r}: expected one call of the '
                f"student's bbox_head.loss_and_target, got {len(student)}")
        call = student[0]
        rois = call['rois']
        labels = call['_return']['bbox_targets'][0]
        out_T = self.teacher_outputs(teacher, rois)
        value = self.run_loss(self.losses[0], call['cls_score'],
                              out_T['cls_score'], labels, call['bbox_pred'],
                              out_T['bbox_pred'])
        return {'': value}
