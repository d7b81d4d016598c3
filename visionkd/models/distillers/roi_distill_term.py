"""RoI-level distillation term: the teacher's RoI head on shared proposals."""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from .distill_term import build_registered, check_head_term_cfg

__all__ = ['RoIDistillTerm']

_KEYS = ('mode', 'student', 'teacher', 'loss', 'weight')


class RoIDistillTerm(nn.Module):
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

    #: the recorded student call happens in ``loss`` mode only
    student_runs_in_tensor_mode = False

    def __init__(self, name: str, cfg: dict) -> None:
        super().__init__()
        check_head_term_cfg(name, cfg, _KEYS, 'roi')
        self.name = name
        self.student_path: str = cfg['student']
        self.teacher_path: str = cfg['teacher']
        self.weight = float(cfg.get('weight', 1.0))
        #: factor set by DistillLossWeightScheduleHook
        self.scale = 1.0
        self.loss_cfg: dict = cfg['loss']
        self.losses = nn.ModuleList()
        self.num_levels = 0
        self._teacher_feat_path = 'neck'

    @property
    def student_key(self) -> tuple:
        return (f'{self.student_path}.bbox_head', 'call:loss_and_target')

    @property
    def teacher_key(self) -> tuple:
        return (self._teacher_feat_path, 'output')

    def _roi_head(self, model: nn.Module, path: str, role: str) -> nn.Module:
        head = dict(model.named_modules()).get(path)
        if head is None or not all(
                hasattr(head, a) for a in ('bbox_roi_extractor', 'bbox_head',
                                           '_bbox_forward')):
            raise ValueError(
                f'distill term {self.name!r} (mode roi): the {role} layer '
                f'{path!r} is not an mmdet RoI head with bbox_roi_extractor '
                f'and bbox_head (two-stage detectors only)')
        if isinstance(head.bbox_head, nn.ModuleList):
            raise ValueError(
                f'distill term {self.name!r} (mode roi): multi-stage RoI '
                f'heads (Cascade R-CNN) are not supported')
        return head

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        """Check both RoI heads and find the teacher's feature layer."""
        s_head = self._roi_head(student, self.student_path, 'student')
        t_head = self._roi_head(teacher, self.teacher_path, 'teacher')
        n_s = s_head.bbox_head.num_classes
        n_t = t_head.bbox_head.num_classes
        if n_s != n_t:
            raise ValueError(
                f'distill term {self.name!r} (mode roi): student and teacher '
                f'RoI heads have {n_s} and {n_t} classes')
        self._teacher_feat_path = 'neck' if getattr(
            teacher, 'with_neck', False) else 'backbone'
        # Not a child module: the teacher stays out of state_dict().
        object.__setattr__(self, '_teacher_roi_head', t_head)

    def build_levels(self, student_levels: Sequence, teacher_levels: Sequence,
                     has_data_samples: bool,
                     gt_field: Optional[str] = None) -> None:
        """Build the loss (the RoI inputs only exist in ``loss`` mode)."""
        if not teacher_levels:
            raise ValueError(f'distill term {self.name!r}: the teacher '
                             f'features were not recorded')
        self.losses = nn.ModuleList([
            build_registered(self.loss_cfg, f'loss of distill term '
                             f'{self.name!r}')
        ])
        self.num_levels = 1

    def teacher_outputs(self, teacher_feats: Sequence[torch.Tensor],
                        rois: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The teacher's class logits and box deltas on ``rois``."""
        head = self._teacher_roi_head
        with torch.no_grad():
            return head._bbox_forward(tuple(teacher_feats), rois.detach())

    def forward(self, student_levels: Sequence[dict],
                teacher_levels: Sequence[torch.Tensor],
                data_samples: Optional[list] = None
                ) -> Dict[str, torch.Tensor]:
        """``{'loss_kd_<name>': value}`` from the recorded student call."""
        if len(student_levels) != 1:
            raise RuntimeError(
                f'distill term {self.name!r}: expected one call of the '
                f"student's bbox_head.loss_and_target, got "
                f'{len(student_levels)}')
        call = student_levels[0]
        rois = call['rois']
        labels = call['_return']['bbox_targets'][0]
        out_T = self.teacher_outputs(teacher_levels, rois)
        device = call['cls_score'].device.type
        # softmax/KL in float32, also under --amp
        with torch.autocast(device_type=device, enabled=False):
            value = self.losses[0](
                call['cls_score'].float(), out_T['cls_score'].float(),
                labels, call['bbox_pred'].float(),
                out_T['bbox_pred'].float())
        return {f'loss_kd_{self.name}': value * (self.weight * self.scale)}

    def extra_repr(self) -> str:
        return (f'name={self.name!r}, mode=roi, student={self.student_path!r}'
                f', teacher={self.teacher_path!r}, weight={self.weight}')
