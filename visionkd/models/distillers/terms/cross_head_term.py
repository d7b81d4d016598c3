"""CrossKD: the student's head features through the teacher's head."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionkd.registry import TERM_MODES

from .base_term import BaseDistillTerm, TermContext, TermLayers
from .build_utils import build_registered

__all__ = ['CrossHeadDistillTerm']

#: Added to the student's per-channel std before dividing (official value).
STD_EPS = 1e-6


def align_to_teacher(feat_S: torch.Tensor,
                     feat_T: torch.Tensor) -> torch.Tensor:
    """``feat_S`` standardised per channel, then given ``feat_T``'s
    per-channel mean and (unbiased) std, both over (N, H, W).

    A map of a single location per channel (a 1x1 top level of one small
    image) has no unbiased std: the biased one (0) is used there, which
    gives the teacher's mean (the official code gives NaN).
    """
    dims = (0, 2, 3)
    correction = 1 if feat_S.numel() > feat_S.shape[1] else 0
    mean_S = feat_S.mean(dims, keepdim=True)
    std_S = feat_S.std(dims, correction=correction, keepdim=True)
    mean_T = feat_T.mean(dims, keepdim=True)
    std_T = feat_T.std(dims, correction=correction, keepdim=True)
    return (feat_S - mean_S) / (std_S + STD_EPS) * std_T + mean_T


#: Head families CrossKD is implemented for: (class, number of outputs).
FAMILIES = {'gfl': ('GFLHead', 2), 'atss': ('ATSSHead', 3),
            'retina': ('RetinaHead', 2), 'fcos': ('FCOSHead', 3)}


def _head_family(head: nn.Module) -> Optional[str]:
    """``'gfl'``, ``'atss'``, ``'retina'`` or ``'fcos'`` (None for other
    heads, also for subclasses with their own ``forward`` or
    ``forward_single`` such as ``RTMDetHead``, an ``ATSSHead`` whose levels
    run other convs)."""
    from mmdet.models import dense_heads
    for family, (cls_name, _) in FAMILIES.items():
        base = getattr(dense_heads, cls_name)
        if isinstance(head, base):
            own = all(getattr(type(head), m) is getattr(base, m)
                      for m in ('forward', 'forward_single'))
            return family if own else None
    return None


def _flat(pred: torch.Tensor, size: int) -> torch.Tensor:
    """(N, A * size, H, W) -> (N * H * W * A, size)."""
    return pred.permute(0, 2, 3, 1).reshape(-1, size)


def _fcos_predict(head: nn.Module, lvl: int, cls_feat: torch.Tensor,
                  reg_feat: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """An FCOS head's predictors on level ``lvl`` (as its forward_single:
    scale, then clamp (``norm_on_bbox``; times the stride outside
    training) or exp; centerness on the reg or cls branch)."""
    box = head.scales[lvl](head.conv_reg(reg_feat)).float()
    if head.norm_on_bbox:
        box = box.clamp(min=0)
        if not head.training:
            box = box * head.strides[lvl]
    else:
        box = box.exp()
    ctr = head.conv_centerness(
        reg_feat if head.centerness_on_reg else cls_feat)
    return head.conv_cls(cls_feat), box, ctr


def _check_layout(where: str, s: nn.Module, t: nn.Module) -> None:
    """Raise unless ``s`` and ``t`` are heads of one type and layout."""
    if type(s) is not type(t):
        raise ValueError(f'{where}: student and teacher heads are '
                         f'{type(s).__name__} and {type(t).__name__}; give '
                         f'both the same head type')
    attrs = ['stacked_convs', 'num_classes', 'num_base_priors']
    if _head_family(s) == 'gfl':
        attrs.append('reg_max')
    for attr in attrs:
        if getattr(s, attr) != getattr(t, attr):
            raise ValueError(
                f'{where}: student and teacher heads differ in {attr} '
                f'({getattr(s, attr)} vs {getattr(t, attr)}); set the '
                f"student's bbox_head.{attr} to the teacher's")
    if list(s.prior_generator.strides) != list(t.prior_generator.strides):
        raise ValueError(f'{where}: student and teacher heads have '
                         f'different strides')


def _heads(name: str, cfg: dict, student: nn.Module,
           teacher: nn.Module) -> Tuple[nn.Module, nn.Module]:
    """Both heads, checked to be GFL/ATSS/RetinaNet/FCOS heads of one
    layout."""
    where = f'distill term {name!r} (mode cross_head)'
    heads = []
    for role, model in (('student', student), ('teacher', teacher)):
        head = dict(model.named_modules()).get(cfg[role])
        if head is None:
            raise ValueError(f'{where}: the {role} has no layer '
                             f'{cfg[role]!r}; give the path of its dense '
                             f"head (usually 'bbox_head')")
        if _head_family(head) is None:
            raise ValueError(
                f'{where}: the {role} layer {cfg[role]!r} is '
                f'{type(head).__name__}, not a GFLHead, ATSSHead, '
                f'RetinaHead or FCOSHead; mode cross_head crosses these '
                f'heads only')
        heads.append(head)
    s, t = heads
    _check_layout(where, s, t)
    idx = cfg['reused_teacher_head_idx']
    if isinstance(idx, bool) or not isinstance(idx, int) or not (
            0 <= idx <= t.stacked_convs):
        raise ValueError(
            f'{where}: reused_teacher_head_idx must be an int in '
            f'[0, {t.stacked_convs}] (the stacked convs of the head), got '
            f'{idx!r}')
    attr = 'in_channels' if idx == 0 else 'feat_channels'
    if getattr(s, attr) != getattr(t, attr):
        raise ValueError(
            f'{where}: the student features entering the teacher head '
            f'have {getattr(s, attr)} channels, the teacher expects '
            f"{getattr(t, attr)}; set the student's bbox_head.{attr} to "
            f"the teacher's")
    return s, t


@TERM_MODES.register_module(name='cross_head')
class CrossHeadDistillTerm(BaseDistillTerm):
    """``mode='cross_head'``: CrossKD on GFL, ATSS, RetinaNet, FCOS heads.

    *CrossKD: Cross-Head Knowledge Distillation for Object Detection*
    (Wang et al., CVPR 2024; official code jbwang1997/CrossKD). The entry
    of a :class:`DetectionDistiller`'s ``distill_terms`` (GFL)::

        crosskd=dict(
            mode='cross_head', student='bbox_head', teacher='bbox_head',
            reused_teacher_head_idx=3,
            loss_cls=dict(type='KDQualityFocalLoss', beta=1.0,
                          loss_weight=1.0),
            loss_reg=dict(type='KDKLDivLoss', T=1.0,
                          class_reduction='sum', loss_weight=4.0),
            weight=1.0)                                  # optional

    (ATSS, RetinaNet: ``loss_reg=dict(type='mmdet.GIoULoss',
    loss_weight=1.0)``; ATSS also ``loss_center=dict(
    type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)``;
    FCOS, official weights: ``loss_cls`` weight 0.4, ``loss_reg=dict(
    type='mmdet.IoULoss', loss_weight=0.75)``.)
    Per FPN level and branch (classification and regression), the
    student's head feature after its conv ``reused_teacher_head_idx``
    (``i``; the output of that ``ConvModule``, after its norm and ReLU, as
    the official code holds it; the FPN feature for ``i=0``) is
    standardised per channel over (N, H, W) and given the mean and std of
    the teacher's feature at the same place, activated again (ReLU, for
    ``i > 0``), then run through the teacher head's convs ``i..`` and its
    predictors (GFL: ``gfl_cls``, ``scales[l](gfl_reg)``; ATSS: also
    ``atss_centerness``; RetinaNet: ``retina_cls``, ``retina_reg``; FCOS:
    ``conv_cls``, ``scales[l](conv_reg)`` then clamp (``norm_on_bbox``,
    times the stride outside training) or exp as the teacher head's own
    forward, ``conv_centerness``) under the teacher's frozen weights;
    the gradient flows through those ops into the student. These *crossed*
    predictions are distilled towards the teacher's own:

    * ``loss_cls`` (``loss_kd_<name>_cls_l<i>``): the crossed class logits
      vs the teacher's, per-anchor ``label_weights`` of the student's
      assignment, ``avg_factor`` = the student's positive count (GFL, ATSS:
      mean over GPUs; at least 1). FCOS: every location, weight 1,
      ``avg_factor`` = the sum of the student's centerness targets at its
      positives (mean over GPUs; at least 1e-6, 1 without positives);
    * ``loss_reg`` (``loss_kd_<name>_reg_l<i>``), each anchor weighted by
      the sigmoid of the teacher's max class logit (0 where
      ``label_weights`` is 0). GFL: the crossed box distributions vs the
      teacher's (``reg_max + 1`` bins per side), ``avg_factor=4``, divided
      by the sum of those weights over all levels. ATSS, RetinaNet: the
      boxes both predictions decode to on the student's anchors,
      ``avg_factor`` = the positive count; FCOS: the boxes both distance
      predictions decode to on every location's point, ``avg_factor`` =
      the centerness-target sum (the crossed centerness is not
      distilled);
    * ``loss_center`` (ATSS only, optional; ``loss_kd_<name>_center_l<i>``):
      the crossed centerness logits vs the teacher's sigmoid centerness at
      the student's positive anchors, ``avg_factor`` = the positive count.

    The teacher runs under ``no_grad`` up to its ``bbox_head`` and stops;
    both heads are kept as plain references (not children of the term, so
    not in its state dict).

    Differences from the official code: the student's first ``i`` head
    convs run a second time here (the student's own loss is not changed;
    a head with train-mode BatchNorm would update its statistics twice)
    and the teacher's first ``i`` convs are re-run from the recorded FPN
    features; the student's assignment is computed a second time for
    ``label_weights`` and the positive count (the official detectors share
    it with the task loss); ``avg_factor`` is clamped to at least 1, the
    GFL regression weight sum to a tiny positive value, and a 1x1 level of
    a single image is aligned with a biased std (the official code divides
    by them as they are, or gives NaN); a level without positives gives a
    zero centerness loss that keeps the graph; FCOS without positives
    divides by 1 (the official code by 1e-6); the KD losses divide by
    ``avg_factor`` itself (the official ``KDQualityFocalLoss`` and
    ``KnowledgeDistillationKLDivLoss`` by ``avg_factor`` + float32 eps, a
    relative 1e-9 to 3e-8). ``tools/analysis_tools/
    compare_official_crosskd.py`` runs the official detectors next to this
    term (see configs/crosskd/README.md, "Equality with the official
    code").

    Args:
        name: Term name.
        cfg: The entry (see above).
        ctx: Models and dry-run records.
    """

    mode = 'cross_head'
    tasks = ('detection', )
    cfg_keys = ('mode', 'student', 'teacher', 'reused_teacher_head_idx',
                'loss_cls', 'loss_reg', 'loss_center', 'weight')
    required_keys = ('student', 'teacher', 'reused_teacher_head_idx',
                     'loss_cls', 'loss_reg')
    type_keys = ('loss_cls', 'loss_reg', 'loss_center')

    def __init__(self, name: str, cfg: dict, ctx: TermContext) -> None:
        super().__init__(name, cfg, ctx)
        where = f'distill term {name!r}'
        if not ctx.has_data_samples:
            raise ValueError(f'{where} (mode cross_head) needs the data '
                             f"samples' gt_instances for the assignment")
        self.loss_cls = build_registered(cfg['loss_cls'],
                                         f'loss_cls of {where}')
        self.loss_reg = build_registered(cfg['loss_reg'],
                                         f'loss_reg of {where}')
        student_head, teacher_head = _heads(name, cfg, ctx.student,
                                            ctx.teacher)
        # references, not children: neither head belongs to the term
        object.__setattr__(self, 'student_head', student_head)
        object.__setattr__(self, 'teacher_head', teacher_head)
        self.family = _head_family(teacher_head)
        self.idx = cfg['reused_teacher_head_idx']
        self.loss_center = self._build_center(cfg, where)
        levels = ctx.teacher_levels
        outputs = FAMILIES[self.family][1]
        if len(levels) != 1 or len(levels[0]['_return']) != outputs:
            raise ValueError(f'{where}: expected one call of the teacher '
                             f"head's forward giving {outputs} outputs")
        self.num_levels = len(levels[0]['_return'][0])
        kinds = ('cls', 'reg') if self.loss_center is None else (
            'cls', 'reg', 'center')
        self.set_key_suffixes([f'{kind}_l{lvl}' for lvl in range(
            self.num_levels) for kind in kinds])

    def _build_center(self, cfg: dict, where: str) -> Optional[nn.Module]:
        """``loss_center`` (ATSS heads only) or None."""
        if cfg.get('loss_center') is None:
            return None
        if self.family != 'atss':
            raise ValueError(f'{where}: loss_center is the centerness KD of '
                             f'ATSS heads; remove it for a {self.family} '
                             f'head')
        return build_registered(cfg['loss_center'],
                                f'loss_center of {where}')

    @classmethod
    def recorded_layers(cls, name: str, cfg: dict, student: nn.Module,
                        teacher: nn.Module) -> TermLayers:
        """Both heads' ``forward`` calls (their FPN inputs; the teacher's
        predictions); the heads are checked first."""
        cls.check_cfg(name, cfg)
        _heads(name, cfg, student, teacher)
        return TermLayers(student=(cfg['student'], 'call:forward'),
                          teacher=(cfg['teacher'], 'call:forward'))

    # ------------------------------------------------------------------
    def held_features(self, head: nn.Module,
                      x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``head``'s (cls, reg) outputs of its first ``idx`` convs, each
        with its norm and activation (``x`` itself for ``idx=0``).

        The official code holds these too: it keeps the tensor before
        calling the conv's activation, which mmcv's ``ConvModule`` (ReLU,
        ``inplace=True``) then applies in place.
        """
        feats = []
        for convs in (head.cls_convs, head.reg_convs):
            feat = x
            for i in range(self.idx):
                feat = convs[i](feat)
            feats.append(feat)
        return feats[0], feats[1]

    def predict(self, lvl: int, cls_feat: torch.Tensor,
                reg_feat: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The teacher head's predictors on level ``lvl``'s features (GFL,
        ATSS, FCOS box predictions in float32, as their forward)."""
        head = self.teacher_head
        if self.family == 'gfl':
            return head.gfl_cls(cls_feat), head.scales[lvl](
                head.gfl_reg(reg_feat)).float()
        if self.family == 'fcos':
            return _fcos_predict(head, lvl, cls_feat, reg_feat)
        if self.family == 'atss':
            return (head.atss_cls(cls_feat),
                    head.scales[lvl](head.atss_reg(reg_feat)).float(),
                    head.atss_centerness(reg_feat))
        return head.retina_cls(cls_feat), head.retina_reg(reg_feat)

    def cross(self, lvl: int, x_S: torch.Tensor,
              x_T: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Crossed predictions of level ``lvl`` (as the head's forward)."""
        head = self.teacher_head
        with torch.no_grad():
            held_T = self.held_features(head, x_T)
        out = []
        for convs, feat_S, feat_T in zip(
                (head.cls_convs, head.reg_convs),
                self.held_features(self.student_head, x_S), held_T):
            feat = align_to_teacher(feat_S, feat_T)
            if self.idx > 0:
                feat = F.relu(feat)
            for i in range(self.idx, head.stacked_convs):
                feat = convs[i](feat)
            out.append(feat)
        return self.predict(lvl, out[0], out[1])

    def fcos_assignment(self, cls_T: List[torch.Tensor],
                        data_samples: list) -> Tuple[dict, float]:
        """FCOS: the per-level points (N * H * W, 2), the student's
        ``labels``, weights 1 at every location, and the sum of the
        centerness targets at its positives (mean over GPUs; at least
        1e-6, 1 where there is no positive)."""
        from mmdet.models.utils import unpack_gt_instances
        from mmdet.utils import reduce_mean
        head = self.student_head
        gts = unpack_gt_instances(data_samples)[0]
        device = cls_T[0].device
        with torch.no_grad():
            points = head.prior_generator.grid_priors(
                [c.shape[-2:] for c in cls_T], dtype=torch.float32,
                device=device)
            labels, box_targets = head.get_targets(points, gts)
            total = torch.zeros((), device=device)
            for lab, box in zip(labels, box_targets):
                pos = (lab >= 0) & (lab < head.num_classes)
                if bool(pos.any()):
                    total = total + head.centerness_target(box[pos]).sum()
            denorm = reduce_mean(total).item()
        num = cls_T[0].size(0)
        return dict(anchors=[p.repeat(num, 1) for p in points],
                    labels=labels,
                    weights=[torch.ones_like(lab) for lab in labels]), (
                        max(denorm, 1e-6) if denorm > 0 else 1.0)

    def assignment(self, cls_T: List[torch.Tensor],
                   data_samples: list) -> Tuple[dict, float]:
        """The student's per-level anchors (N * A, 4), ``labels`` and
        ``label_weights`` (N, A), and its positive count (GFL, ATSS: mean
        over GPUs; at least 1). FCOS: :meth:`fcos_assignment`."""
        from mmdet.models.utils import unpack_gt_instances
        from mmdet.utils import reduce_mean
        if self.family == 'fcos':
            return self.fcos_assignment(cls_T, data_samples)
        head = self.student_head
        gts, gts_ignore, metas = unpack_gt_instances(data_samples)
        device = cls_T[0].device
        with torch.no_grad():
            anchors, valid = head.get_anchors(
                [c.shape[-2:] for c in cls_T], metas, device=device)
            targets = head.get_targets(anchors, valid, gts, metas,
                                       batch_gt_instances_ignore=gts_ignore)
        if self.family == 'retina':  # (labels, label_weights, ..., avg)
            labels, weights, num_pos = targets[0], targets[1], targets[4]
            anchors = [torch.cat([img[lvl] for img in anchors])
                       for lvl in range(len(cls_T))]
        else:  # (anchors (N, A, 4), labels, label_weights, ..., avg)
            labels, weights = targets[1], targets[2]
            num_pos = reduce_mean(torch.tensor(float(targets[5]),
                                               device=device)).item()
            anchors = [a.reshape(-1, a.size(-1)) for a in targets[0]]
        return dict(anchors=anchors, labels=labels,
                    weights=weights), max(float(num_pos), 1.0)

    def cls_loss(self, cls_X: torch.Tensor, cls_T: torch.Tensor,
                 lw: torch.Tensor, avg_factor: float) -> tuple:
        """Class KD of one level and the anchors' regression weights."""
        c = self.student_head.cls_out_channels
        cls_X, cls_T = _flat(cls_X, c), _flat(cls_T, c)
        lw = lw.reshape(-1).to(cls_X.dtype)
        loss = self.loss_cls(cls_X, cls_T, weight=lw, avg_factor=avg_factor)
        return loss, cls_T.max(dim=1)[0].sigmoid() * (lw > 0).to(cls_T.dtype)

    def reg_loss(self, box_X: torch.Tensor, box_T: torch.Tensor,
                 w: torch.Tensor, anchors: torch.Tensor,
                 avg_factor: float) -> torch.Tensor:
        """Box KD of one level (GFL: not yet divided by the weight sum;
        ATSS, RetinaNet, FCOS: on the boxes decoded on ``anchors``)."""
        if self.family == 'gfl':
            bins = self.student_head.reg_max + 1
            return self.loss_reg(
                _flat(box_X, bins), _flat(box_T, bins),
                weight=w[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0)
        coder = self.student_head.bbox_coder
        size = coder.encode_size
        return self.loss_reg(coder.decode(anchors, _flat(box_X, size)),
                             coder.decode(anchors, _flat(box_T, size)),
                             weight=w, avg_factor=avg_factor)

    def center_loss(self, ctr_X: torch.Tensor, ctr_T: torch.Tensor,
                    labels: torch.Tensor,
                    avg_factor: float) -> torch.Tensor:
        """Centerness KD of one level at the student's positive anchors."""
        labels = labels.reshape(-1)
        pos = ((labels >= 0) & (labels < self.student_head.num_classes)
               ).nonzero().squeeze(1)
        ctr_X, ctr_T = _flat(ctr_X, 1).squeeze(1), _flat(ctr_T, 1).squeeze(1)
        if pos.numel() == 0:
            return ctr_X.sum() * 0
        return self.loss_center(ctr_X[pos], ctr_T[pos].sigmoid(),
                                avg_factor=avg_factor)

    def level_losses(self, crossed: list, teacher: list, targets: dict,
                     avg_factor: float) -> Dict[str, torch.Tensor]:
        """Class, box (and centerness) KD of every level (unweighted)."""
        out, reg, reg_total = {}, [], 0.0
        for lvl, (pred_X, pred_T) in enumerate(zip(crossed, teacher)):
            out[f'cls_l{lvl}'], w = self.cls_loss(
                pred_X[0], pred_T[0], targets['weights'][lvl], avg_factor)
            reg.append(self.reg_loss(pred_X[1], pred_T[1], w,
                                     targets['anchors'][lvl], avg_factor))
            reg_total = reg_total + w.sum()
            if self.loss_center is not None:
                out[f'center_l{lvl}'] = self.center_loss(
                    pred_X[2], pred_T[2], targets['labels'][lvl],
                    avg_factor)
        if self.family == 'gfl':  # normalised by all levels' weights
            reg_total = reg_total.clamp(
                min=torch.finfo(reg_total.dtype).tiny)
            reg = [value / reg_total for value in reg]
        out.update({f'reg_l{lvl}': value for lvl, value in enumerate(reg)})
        return out

    def compute(self, student: list, teacher: list,
                data_samples: Optional[list]) -> Dict[str, torch.Tensor]:
        """CrossKD's class, box (and centerness) losses per FPN level."""
        if not data_samples:
            raise ValueError(f'distill term {self.name!r} (mode cross_head)'
                             f' needs the batch data samples')
        x_S, x_T = student[0]['x'], teacher[0]['x']
        preds_T = teacher[0]['_return']
        if len(x_S) != self.num_levels or len(x_T) != self.num_levels:
            raise RuntimeError(
                f'distill term {self.name!r}: {len(x_S)} student and '
                f'{len(x_T)} teacher levels for {self.num_levels} expected')
        crossed = [self.cross(lvl, s, t)
                   for lvl, (s, t) in enumerate(zip(x_S, x_T))]
        targets, avg_factor = self.assignment(preds_T[0], data_samples)
        return self.run_loss(self.level_losses, crossed,
                             list(zip(*preds_T)), targets, avg_factor)
