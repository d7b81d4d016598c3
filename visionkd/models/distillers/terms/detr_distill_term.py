"""DETRDistill term: matched predictions and query-prior feature masks."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered
from .detr_query_term import check_same_classes

__all__ = ['DETRDistillTerm']

#: The released code's settings (cost 1 / 5 / 2, losses 1 / 5 / 2; the
#: feature loss on the 100 best (query, class) pairs, weight 1).
DEFAULT_LOSS_MATCH = dict(type='DETRDistillMatchLoss')
DEFAULT_LOSS_FEAT = dict(type='DETRDistillFeatureLoss', topk=100)
TEACHER_LAYERS = ('same', 'last')
#: What the mode records on each detector: the transformer's inputs (the
#: neck features) and its return (decoder hidden states, references).
RECORD = ('', 'call:forward_transformer')


def _check_detector(model: nn.Module, role: str, name: str) -> None:
    head = getattr(model, 'bbox_head', None)
    if not hasattr(model, 'forward_transformer') or not all(
            hasattr(head, a) for a in ('cls_branches', 'reg_branches')):
        raise ValueError(
            f'distill term {name!r} (mode detr_distill): the {role} '
            f'({type(model).__name__}) is not a DETR-family detector: the '
            f"mode needs mmdet's Deformable DETR or DINO (forward_transformer"
            f', a bbox_head with cls_branches and reg_branches); distil '
            f"other detectors' features with mode='feature' (e.g. on the "
            f'neck)')


@TERM_MODES.register_module(name='detr_distill')
class DETRDistillTerm(BaseDistillTerm):
    """``mode='detr_distill'``: DETRDistill's two distillation losses.

    *DETRDistill: A Universal Knowledge Distillation Framework for
    DETR-families* (Chang et al., ICCV 2023, arXiv 2211.10156; the
    authors' released Deformable DETR code). The entry of a
    :class:`DetectionDistiller`'s ``distill_terms``::

        detr=dict(mode='detr_distill',
                  loss_match=dict(type='DETRDistillMatchLoss'),  # default
                  loss_feat=dict(type='DETRDistillFeatureLoss',
                                 topk=100),                      # default
                  teacher_layer='same',                          # default
                  weight=1.0)                                    # optional

    Both models' ``forward_transformer`` calls are recorded (no module
    path to give): their inputs are the neck features, their returns the
    decoder's hidden states and references, which each model's
    ``bbox_head.forward`` turns into class logits and boxes per decoder
    layer (the teacher's under ``no_grad``; its forward stops after the
    transformer).

    * **Hungarian-matched logit/box KD** (``loss_match``,
      :class:`DETRDistillMatchLoss`): per decoder layer, the student's
      predictions are matched one-to-one to the teacher's (all teacher
      queries, no threshold) and imitate them: BCE towards the teacher's
      probabilities, L1 and GIoU towards its boxes. Student layer ``l``
      learns from teacher layer ``l`` (``teacher_layer='same'``, the
      released layer-by-layer setting; equal decoder depths) or from the
      teacher's last layer (``'last'``). Logged as ``loss_kd_<name>_cls``,
      ``_bbox`` (L1) and ``_iou`` (GIoU), summed over the layers.
    * **Target-aware query-prior feature KD** (``loss_feat``,
      :class:`DETRDistillFeatureLoss`): each teacher decoder layer's most
      confident queries, weighted by score times IoU with the ground
      truth, build a mask on every neck level from their cosine
      similarity with the teacher's features; the masked student
      features imitate the masked teacher's (MSE). Logged as
      ``loss_kd_<name>_feat``, summed over teacher layers and levels.

    Set either loss to None to leave it out. DINO's denoising queries are
    not distilled (the eval-mode teacher has none; the student's are
    dropped before matching). Not implemented: the paper's query-prior
    assignment (a second student decoder pass on the teacher's queries,
    trained on the teacher's ground-truth assignment) and the released
    code's contrastive query loss; both change the student's training
    passes, not a distillation target.

    Args:
        name: Term name.
        cfg: The entry (see above).
        ctx: Models and dry-run records.
    """

    mode = 'detr_distill'
    tasks = ('detection', )
    supports_trainable_teacher = False
    #: ``student``/``teacher`` only as the recorded detector (``''``).
    cfg_keys = ('mode', 'student', 'teacher', 'loss_match', 'loss_feat',
                'teacher_layer', 'weight')
    required_keys = ()
    type_keys = ('loss_match', 'loss_feat')

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, dict(cfg, student='', teacher=''), ctx)
        where = f'distill term {name!r}'
        match = cfg.get('loss_match', DEFAULT_LOSS_MATCH)
        feat = cfg.get('loss_feat', DEFAULT_LOSS_FEAT)
        self.loss_match = None if match is None else build_registered(
            match, f'loss_match of {where}')
        self.loss_feat = None if feat is None else build_registered(
            feat, f'loss_feat of {where}')
        self.teacher_layer = cfg.get('teacher_layer', 'same')
        _check(name, ctx, self.loss_match, self.loss_feat,
               self.teacher_layer)
        # Not children: the models stay out of the term's state_dict().
        object.__setattr__(self, '_models', (ctx.student, ctx.teacher))
        suffixes = (['cls', 'bbox', 'iou'] if self.loss_match else []) + \
            (['feat'] if self.loss_feat else [])
        self.set_key_suffixes(suffixes)

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> None:
        """The base checks, with the recorded detector as the paths."""
        for key in ('student', 'teacher'):
            if cfg.get(key, '') != '':
                raise KeyError(
                    f'distill term {name!r} (mode detr_distill) takes no '
                    f'`{key}` path: it records both detectors\' '
                    f'forward_transformer (neck features in, decoder '
                    f'states out); remove `{key}`')
        super().check_cfg(name, dict(cfg, student='', teacher=''))
        if cfg.get('loss_match', 1) is None and \
                cfg.get('loss_feat', 1) is None:
            raise ValueError(f'distill term {name!r} (mode detr_distill): '
                             f'loss_match and loss_feat are both None')
        if cfg.get('teacher_layer', 'same') not in TEACHER_LAYERS:
            raise ValueError(
                f'distill term {name!r} (mode detr_distill): teacher_layer '
                f'must be one of {list(TEACHER_LAYERS)}, got '
                f'{cfg["teacher_layer"]!r}')

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """Both detectors' ``forward_transformer`` calls."""
        cls.check_cfg(name, cfg)
        _check_detector(student, 'student', name)
        _check_detector(teacher, 'teacher', name)
        return TermLayers(student=RECORD, teacher=RECORD)

    # ------------------------------------------------------------------
    @staticmethod
    def predictions(model: nn.Module, call: dict
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A recorded ``forward_transformer`` call's decoder hidden states
        (L, N, Q, D), class logits (L, N, Q, C) and boxes (L, N, Q, 4),
        DINO's denoising queries dropped."""
        out = call['_return']
        hidden = out['hidden_states']
        cls, box = model.bbox_head.forward(hidden, list(out['references']))
        dn = (out.get('dn_meta') or {}).get('num_denoising_queries', 0)
        return hidden[:, :, dn:], cls[:, :, dn:], box[:, :, dn:]

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """The matched losses per student layer and the feature loss per
        teacher layer, each summed."""
        if len(student) != 1 or len(teacher) != 1:
            raise RuntimeError(
                f'distill term {self.name!r}: expected one transformer call '
                f'of each model, got {len(student)} (student) and '
                f'{len(teacher)} (teacher)')
        s_model, t_model = self._models
        _, cls_S, box_S = self.predictions(s_model, student[0])
        with torch.no_grad():
            hid_T, cls_T, box_T = self.predictions(t_model, teacher[0])
        out = {}
        if self.loss_match is not None:
            total = [0, 0, 0]
            for layer in range(cls_S.shape[0]):
                t = layer if self.teacher_layer == 'same' else -1
                values = self.run_loss(self.loss_match, cls_S[layer],
                                       box_S[layer], cls_T[t], box_T[t])
                total = [a + b for a, b in zip(total, values)]
            out.update(cls=total[0], bbox=total[1], iou=total[2])
        if self.loss_feat is not None:
            feats_S = list(student[0]['img_feats'])
            feats_T = list(teacher[0]['img_feats'])
            out['feat'] = sum(
                self.run_loss(self.loss_feat, feats_S, feats_T, hid_T[i],
                              cls_T[i], box_T[i], data_samples)
                for i in range(hid_T.shape[0]))
        return out


def _check(name: str, ctx: TermContext, loss_match, loss_feat,
           teacher_layer: str) -> None:
    """Classes, depths and feature shapes the losses need."""
    where = f'distill term {name!r} (mode detr_distill)'
    if not ctx.student_levels or not ctx.teacher_levels:
        raise ValueError(f'{where}: the transformers were not called in '
                         f'the dry run')
    s_call, t_call = ctx.student_levels[0], ctx.teacher_levels[0]
    check_same_classes(where, ctx)
    layers = (s_call['_return']['hidden_states'].shape[0],
              t_call['_return']['hidden_states'].shape[0])
    if loss_match is not None and teacher_layer == 'same' and \
            layers[0] != layers[1]:
        raise ValueError(
            f"{where}: teacher_layer='same' matches decoder layers by "
            f'index, but the student has {layers[0]} and the teacher '
            f"{layers[1]}; use teacher_layer='last' (every student layer "
            f"learns from the teacher's last)")
    if loss_feat is not None:
        shapes: List[tuple] = [
            [tuple(f.shape[1:]) for f in c['img_feats']]
            for c in (s_call, t_call)]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f'{where}: loss_feat compares the necks level by level, but '
                f'the student gives {shapes[0]} and the teacher {shapes[1]} '
                f'(C, H, W); give both necks the same out_channels and '
                f'strides, or set loss_feat=None')
