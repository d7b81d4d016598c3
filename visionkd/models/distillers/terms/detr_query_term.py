"""KD-DETR term: both DETR decoders at shared distillation queries."""
import inspect
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered

__all__ = ['DETRQueryDistillTerm', 'check_detr', 'check_same_classes']

#: The released code's losses (KD-DETR, DAB-DETR: T 10; L1 5, GIoU 2).
DEFAULT_LOSS_CLS = dict(type='KDDETRClsLoss', T=10.0, loss_weight=1.0)
DEFAULT_LOSS_BOX = dict(type='KDDETRBoxLoss', loss_weight_l1=5.0,
                        loss_weight_giou=2.0)
#: Decoder-call arguments that carry the queries: replaced by the
#: distillation points (the memory, its masks, shapes, valid ratios and
#: the refinement branches stay the model's own).
QUERY_ARGS = ('query', 'query_pos', 'reference_points', 'self_attn_mask')
#: ``teacher_layer`` values: every student layer imitates the teacher's
#: last layer (the released code) or its own layer of the teacher.
TEACHER_LAYERS = ('last', 'same')


def check_detr(model: nn.Module, path: str, role: str,
               name: str) -> Tuple[nn.Module, nn.Module]:
    """``(decoder, bbox_head)`` of an mmdet DETR-family detector (an error
    naming the term, the role and the fix otherwise)."""
    decoder = dict(model.named_modules()).get(path)
    head = getattr(model, 'bbox_head', None)
    ok = decoder is not None and hasattr(model, 'forward_decoder') and \
        'reference_points' in inspect.signature(decoder.forward).parameters \
        and all(hasattr(head, a) for a in ('cls_branches', 'reg_branches'))
    if not ok:
        raise ValueError(
            f'distill term {name!r} (mode detr_query): the {role} '
            f'({type(model).__name__}) is not a DETR-family detector with a '
            f'decoder at {path!r}: the mode needs mmdet\'s Deformable DETR '
            f'or DINO (a decoder whose forward takes reference_points, a '
            f'bbox_head with cls_branches and reg_branches); distil other '
            f"detectors' features with mode='feature' (e.g. on the neck)")
    return decoder, head


def check_same_classes(where: str, ctx: TermContext) -> None:
    """Both DETR heads predict the same classes (an error otherwise)."""
    classes = (ctx.student.bbox_head.cls_out_channels,
               ctx.teacher.bbox_head.cls_out_channels)
    if classes[0] != classes[1]:
        raise ValueError(f'{where}: student and teacher heads have '
                         f'{classes[0]} and {classes[1]} classes')


def _call_kwargs(call: dict) -> dict:
    """A recorded decoder call's arguments by name, ``**kwargs`` expanded,
    without its return value."""
    out = {k: v for k, v in call.items() if k not in ('_return', 'kwargs')}
    out.update(call.get('kwargs') or {})
    return out


@TERM_MODES.register_module(name='detr_query')
class DETRQueryDistillTerm(BaseDistillTerm):
    """``mode='detr_query'``: KD-DETR's consistent distillation points.

    *KD-DETR: Knowledge Distillation for Detection Transformer with
    Consistent Distillation Points Sampling* (Wang et al., CVPR 2024,
    arXiv 2211.08071; the authors' released DAB-DETR code). The student's
    and the teacher's detection queries do not correspond, so their
    predictions cannot be compared query by query; KD-DETR feeds one set
    of *distillation queries* to both decoders instead, each decoder with
    its own encoder memory, and the student's predictions at those queries
    imitate the teacher's. The entry of a :class:`DetectionDistiller`'s
    ``distill_terms``::

        query=dict(mode='detr_query', student='decoder', teacher='decoder',
                   loss_cls=dict(type='KDDETRClsLoss', T=10.0),  # default
                   loss_bbox=dict(type='KDDETRBoxLoss',
                                  loss_weight_l1=5.0,
                                  loss_weight_giou=2.0),         # default
                   teacher_queries=True,  # the specific points (default)
                   num_random=300,        # the general points (default)
                   teacher_layer='last',  # default
                   weight=1.0)            # optional

    Two sets of distillation points, each a separate call of both decoders
    (so that the sets do not attend to each other, nor to the student's
    detection or denoising queries):

    * *specific* (``teacher_queries``): the teacher's own decoder inputs,
      its queries and reference points (DINO: its learned content queries
      at the top-k boxes of its encoder; Deformable DETR: its learned
      query embeddings and their reference points). The teacher's
      predictions there are its recorded detection outputs (no extra
      teacher pass);
    * *general* (``num_random``): ``num_random`` random reference points,
      ``sigmoid(N(0, 1))`` per coordinate as in the released code (one set
      for the batch, new every step), with zero content (and positional)
      queries; both decoders run on them.

    Every student decoder layer's class logits and boxes imitate the
    teacher's last layer (``teacher_layer='last'``, the released code's) or
    the teacher's layer of the same index (``'same'``: equal numbers of
    decoder layers), with :class:`KDDETRClsLoss` and
    :class:`KDDETRBoxLoss`, each query weighted by the teacher's
    confidence ``max_c sigmoid``; summed over the layers and the two sets,
    logged as ``loss_kd_<name>_cls`` and ``loss_kd_<name>_bbox``. The
    detection losses (Hungarian matching, DINO's denoising) are the
    student's own, unchanged.

    DINO's denoising queries are not distilled: they are noised copies of
    the student's ground truth under a denoising attention mask, which the
    frozen (eval-mode) teacher never builds; the released code distils none
    either. A teacher that trains (online) adds its own denoising queries
    to its decoder call, so the mode refuses it. Teacher and student need
    the same ``embed_dims`` (the queries are shared tensors), classes and
    kind of reference points (DINO's boxes vs Deformable DETR's points).

    Args:
        name: Term name.
        cfg: The entry (see above).
        ctx: Models and dry-run records.
    """

    mode = 'detr_query'
    tasks = ('detection', )
    supports_trainable_teacher = False
    cfg_keys = ('mode', 'student', 'teacher', 'loss_cls', 'loss_bbox',
                'teacher_queries', 'num_random', 'teacher_layer', 'weight')
    required_keys = ('student', 'teacher')
    type_keys = ('loss_cls', 'loss_bbox')

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        where = f'distill term {name!r}'
        self.loss_cls = build_registered(
            cfg.get('loss_cls', DEFAULT_LOSS_CLS), f'loss_cls of {where}')
        self.loss_bbox = build_registered(
            cfg.get('loss_bbox', DEFAULT_LOSS_BOX), f'loss_bbox of {where}')
        self.teacher_queries = bool(cfg.get('teacher_queries', True))
        self.num_random = int(cfg.get('num_random', 300))
        self.teacher_layer = cfg.get('teacher_layer', 'last')
        _check_options(name, self.teacher_queries, self.num_random,
                       self.teacher_layer)
        s_dec, _ = check_detr(ctx.student, self.student_path, 'student',
                              name)
        t_dec, _ = check_detr(ctx.teacher, self.teacher_path, 'teacher',
                              name)
        _check_pair(name, ctx, s_dec, t_dec, self.teacher_layer)
        # Not children: the models stay out of the term's state_dict().
        object.__setattr__(self, '_models', (ctx.student, ctx.teacher))
        self.set_key_suffixes(['cls', 'bbox'])

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """Both decoders' forward calls (their inputs: memory, masks,
        queries; their outputs); both models are checked first."""
        cls.check_cfg(name, cfg)
        check_detr(student, cfg['student'], 'student', name)
        check_detr(teacher, cfg['teacher'], 'teacher', name)
        return TermLayers(student=(cfg['student'], 'call:forward'),
                          teacher=(cfg['teacher'], 'call:forward'))

    # ------------------------------------------------------------------
    def decode(self, model: nn.Module, call: dict,
               points: Dict[str, torch.Tensor],
               output: Optional[tuple] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A model's class logits and boxes of every decoder layer at
        ``points`` (queries, reference points), with the memory of its
        recorded decoder ``call``: (L, N, Q, C) and (L, N, Q, 4).

        Args:
            output: The decoder's ``(hidden_states, references)`` if it
                already ran on these points (the teacher's own queries).
        """
        decoder = dict(model.named_modules())[
            self.student_path if model is self._models[0] else
            self.teacher_path]
        if output is None:
            forward = getattr(decoder.forward, '__wrapped__',
                              decoder.forward)
            kwargs = {k: v for k, v in _call_kwargs(call).items()
                      if k not in QUERY_ARGS}
            params = inspect.signature(forward).parameters
            kwargs.update({k: v for k, v in points.items() if k in params})
            if 'self_attn_mask' in params:
                kwargs['self_attn_mask'] = None
            output = forward(**kwargs)
        hidden, refs = output
        refs = list(refs)
        if len(refs) == hidden.shape[0]:  # Deformable DETR: no initial one
            refs = [points['reference_points'], *refs]
        cls_scores, boxes = model.bbox_head.forward(hidden, refs)
        return cls_scores, boxes

    def distillation_points(self, t_call: dict
                            ) -> List[Dict[str, torch.Tensor]]:
        """The specific (the teacher's own queries) and general (random)
        points of this step, as decoder query arguments."""
        kw = _call_kwargs(t_call)
        ref = kw['reference_points']
        points = []
        if self.teacher_queries:
            points.append({k: kw[k] for k in QUERY_ARGS[:3]
                           if kw.get(k) is not None})
        if self.num_random:
            n, _, d = ref.shape
            rand = torch.randn(self.num_random, d, device=ref.device,
                               dtype=ref.dtype).sigmoid()
            query = kw['query']
            zeros = query.new_zeros(n, self.num_random, query.shape[-1])
            general = dict(query=zeros, reference_points=rand.expand(
                n, -1, -1))
            if kw.get('query_pos') is not None:
                general['query_pos'] = zeros
            points.append(general)
        return points

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """Both losses summed over the layers and the two point sets."""
        if len(student) != 1 or len(teacher) != 1:
            raise RuntimeError(
                f'distill term {self.name!r}: expected one decoder call of '
                f'each model, got {len(student)} (student) and '
                f'{len(teacher)} (teacher)')
        s_call, t_call = student[0], teacher[0]
        if _call_kwargs(t_call).get('self_attn_mask') is not None:
            raise RuntimeError(
                f'distill term {self.name!r}: the teacher decoder ran with '
                f'denoising queries (a DINO teacher in training mode); the '
                f'teacher must be frozen (eval mode)')
        s_model, t_model = self._models
        total_cls = total_box = 0
        for i, points in enumerate(self.distillation_points(t_call)):
            own = t_call['_return'] if i == 0 and self.teacher_queries \
                else None
            with torch.no_grad():
                cls_T, box_T = self.decode(t_model, t_call, points, own)
            cls_S, box_S = self.decode(s_model, s_call, points)
            if self.teacher_layer == 'last':
                cls_T = cls_T[-1:].expand_as(cls_S)
                box_T = box_T[-1:].expand_as(box_S)
            cls_T, box_T = cls_T.detach(), box_T.detach()
            conf = cls_T.sigmoid().amax(-1)
            total_cls = total_cls + self.run_loss(self.loss_cls, cls_S,
                                                  cls_T, weight=conf)
            # KDDETRBoxLoss normalises by the weights of the layers it gets
            # (the same per layer): x L = the per-layer losses summed
            total_box = total_box + self.run_loss(
                self.loss_bbox, box_S, box_T, weight=conf) * box_S.shape[0]
        return {'cls': total_cls, 'bbox': total_box}


def _check_options(name: str, teacher_queries: bool, num_random: int,
                   teacher_layer: str) -> None:
    where = f'distill term {name!r} (mode detr_query)'
    if num_random < 0:
        raise ValueError(f'{where}: num_random must be >= 0, got '
                         f'{num_random}')
    if not teacher_queries and num_random == 0:
        raise ValueError(f'{where}: teacher_queries=False and num_random=0 '
                         f'leave no distillation point')
    if teacher_layer not in TEACHER_LAYERS:
        raise ValueError(f'{where}: teacher_layer must be one of '
                         f'{list(TEACHER_LAYERS)}, got {teacher_layer!r}')


def _check_pair(name: str, ctx: TermContext, s_dec: nn.Module,
                t_dec: nn.Module, teacher_layer: str) -> None:
    """Shared queries need equal widths, classes and reference points."""
    where = f'distill term {name!r} (mode detr_query)'
    s_call = _call_kwargs(ctx.student_levels[0]) if ctx.student_levels \
        else None
    t_call = _call_kwargs(ctx.teacher_levels[0]) if ctx.teacher_levels \
        else None
    if s_call is None or t_call is None:
        raise ValueError(f'{where}: the decoders were not called in the '
                         f'dry run')
    dims = (s_call['query'].shape[-1], t_call['query'].shape[-1])
    if dims[0] != dims[1]:
        raise ValueError(
            f'{where}: student and teacher decoders are {dims[0]} and '
            f'{dims[1]} wide (embed_dims); the distillation queries are '
            f'shared tensors, so they must be equal')
    refs = (s_call['reference_points'].shape[-1],
            t_call['reference_points'].shape[-1])
    if refs[0] != refs[1]:
        raise ValueError(
            f'{where}: the student decoder takes {refs[0]}-d and the '
            f'teacher\'s {refs[1]}-d reference points (DINO / two-stage: '
            f'boxes, Deformable DETR: points); pair detectors of the same '
            f'kind')
    check_same_classes(where, ctx)
    layers = (s_dec.num_layers, t_dec.num_layers)
    if teacher_layer == 'same' and layers[0] != layers[1]:
        raise ValueError(
            f"{where}: teacher_layer='same' pairs decoder layers by index, "
            f'but the student has {layers[0]} and the teacher {layers[1]}; '
            f"use teacher_layer='last' (every student layer imitates the "
            f"teacher's last, the KD-DETR default)")
