"""Distiller for mmseg segmentors."""
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn

from visionkd.models.connectors import class_logits_of, input_size_scope
from visionkd.registry import MODELS

from .base_distiller import BaseDistiller

__all__ = ['SegmentationDistiller']

_HEADS = ('decode_head', 'auxiliary_head')
#: mmseg 1.2 decode heads with outputs only their training forward
#: computes (for their auxiliary losses): the eval-mode dry run and the
#: teacher never run these children.
_TRAINING_ONLY = {
    'PIDHead': ('p_head', 'p_cls_seg', 'd_head', 'd_cls_seg'),
    'DDRHead': ('aux_head', 'aux_cls_seg'),
}
#: mmseg 1.2 modules whose output is a tuple in training but one map in
#: eval (the dry run would see one level, training several).
_TUPLE_IN_TRAINING = {
    'PIDNet': "'backbone.dfm' (the fused map the head predicts from)",
    'DDRNet': "'backbone.spp' or 'backbone.spatial_branch_layers.2'",
    'PIDHead': "'decode_head.conv_seg' (the I-branch logits)",
    'DDRHead': "'decode_head.conv_seg'",
}


def _head_logit_paths(model: nn.Module) -> List[str]:
    """The class-logit layers of a segmentor's heads."""
    return [name for name, _ in model.named_modules()
            if name.split('.')[0] in _HEADS and class_logits_of(
                model, name) is not None]


def _check_head(name: str, role: str, model: nn.Module, path: str) -> None:
    """Raise if ``path`` names a head the segmentor does not have."""
    parts = path.split('.')
    if parts[0] not in _HEADS:
        return
    head = getattr(model, parts[0], None)
    where = (f'distill term {name!r}: {role} layer {path!r}: the {role} '
             f'({type(model).__name__})')
    if head is None:
        raise ValueError(
            f'{where} has no {parts[0]} (its config defines none); distil '
            f'one of its heads, {_head_logit_paths(model)}, or drop the term')
    if not isinstance(head, nn.ModuleList):
        return
    n = len(head)
    if len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < n:
        return
    kinds = [type(h).__name__ for h in head]
    rest = '.'.join(parts[1:]) or 'conv_seg'
    if parts[1:] and parts[1].isdigit():
        rest = '.'.join(parts[2:]) or 'conv_seg'
    raise ValueError(
        f'{where} has {n} heads in {parts[0]} ({kinds}); name one by its '
        f"index: '{parts[0]}.<i>.{rest}' with i in 0..{n - 1}, e.g. "
        f"'{parts[0]}.0.{rest}'")


def _check_training_layout(name: str, role: str, model: nn.Module,
                           path: str) -> None:
    """Raise for a layer that only runs, or gives another number of maps,
    in training (PIDNet's and DDRNet's auxiliary branches)."""
    parts = path.split('.')
    for i in range(len(parts) + 1):
        try:
            module = model.get_submodule('.'.join(parts[:i]))
        except AttributeError:
            return  # the recorder names the missing layer
        if i == len(parts):
            break
        kind = type(module).__name__
        if parts[i] in _TRAINING_ONLY.get(kind, ()):
            head = '.'.join(parts[:i])
            raise ValueError(
                f'distill term {name!r}: {role} layer {path!r} runs only in '
                f'training ({kind} uses it for an auxiliary loss), so the '
                f'build-time dry run cannot record it and an eval-mode '
                f"teacher never runs it; distil '{head}.conv_seg' (the "
                f'logits it predicts with) instead')
    kind = type(module).__name__
    if role == 'student' and kind in _TUPLE_IN_TRAINING and path:
        raise ValueError(
            f'distill term {name!r}: student layer {path!r} ({kind}) '
            f'returns several maps in training but one in eval, so its '
            f'levels would not match the dry run; record a layer inside it, '
            f'e.g. {_TUPLE_IN_TRAINING[kind]}')


def _check_classes(name: str, cfg: dict, student: nn.Module,
                   teacher: nn.Module) -> None:
    """Raise for logits of two models that predict other classes."""
    s_path, t_path = cfg['student'], cfg['teacher']
    s_cls = class_logits_of(student, s_path)
    t_cls = class_logits_of(teacher, t_path)
    if s_cls is None or t_cls is None or s_cls == t_cls:
        return
    raise ValueError(
        f'distill term {name!r}: student {s_path!r} gives logits of {s_cls} '
        f'classes but teacher {t_path!r} of {t_cls}; logit KD compares the '
        f'class distributions class by class, so both must predict the '
        f'same classes: give the student num_classes={t_cls} (trained on the '
        f"teacher's label set), pick the teacher head of {s_cls} classes, or "
        f'distil features instead (e.g. the layers before the classifiers, '
        f"with connector=dict(type='ConvConnector'))")


@MODELS.register_module()
class SegmentationDistiller(BaseDistiller):
    """Distil an mmseg teacher segmentor into an mmseg student segmentor.

    Both models must be mmseg ``BaseSegmentor`` s. Ground-truth-driven
    losses receive the batch's ``SegDataSample`` list. See
    :class:`BaseDistiller` for the arguments.

    Any two segmentors of the same classes can share logit terms (CWD,
    DIST, pixel-wise KD, ...): the distilled head is the one named, e.g.
    ``decode_head.conv_seg`` (the logits the model predicts with; PIDNet's
    I-branch, DDRNet's main head) or ``auxiliary_head.<i>.conv_seg`` (one
    more term per auxiliary head; mmseg runs those only in training, the
    distiller runs the teacher's for the term). Logits at another stride
    than the teacher's (SegFormer and DeepLabV3+ at 1/4 against DeepLabV3
    at 1/8) are resized, bilinear, to the teacher's size by an inferred
    ``ResizeConnector``; a token layer against a map gets an inferred
    ``TokensToMapConnector`` (see :mod:`visionkd.models.connectors.
    inference`). At build time each term is checked: a head the segmentor
    does not have, logits of other class counts, a layer that only runs in
    training (PIDNet's P/D branches, DDRNet's auxiliary head) each fail with
    the term's name and the fix. A head with a fixed-size layer (LRASPP's
    49x49 image pool needs 392 px at stride 8) needs
    ``dry_run_input_size=(512, 1024)``.

    Example::

        model = dict(
            type='visionkd.SegmentationDistiller',
            student=dict(config='mmseg::pspnet/'
                                'pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
            teacher='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_'
                    'cityscapes-512x1024.py',
            teacher_ckpt='https://download.openmmlab.com/...pth',
            distill_terms=dict(
                logits=dict(student='decode_head.conv_seg',
                            teacher='decode_head.conv_seg',
                            loss=dict(type='ChannelWiseDivergence', tau=1.0,
                                      loss_weight=3.0))))
    """

    default_scope = 'mmseg'
    task = 'segmentation'
    gt_field = 'gt_sem_seg'

    def _check_task(self, model: nn.Module, role: str) -> None:
        from mmseg.models.segmentors import BaseSegmentor
        if not isinstance(model, BaseSegmentor):
            raise TypeError(
                f'SegmentationDistiller needs an mmseg segmentor as {role}, '
                f'got {type(model).__name__}; use DetectionDistiller for '
                f'mmdet detectors')

    def _check_seg_terms(self, cfgs: Union[str, Dict[str, dict], None]
                         ) -> None:
        """Segmentor-specific checks of the explicit feature terms."""
        if not isinstance(cfgs, dict):
            return  # a preset: resolved and checked by the pairing
        for name, cfg in cfgs.items():
            if not isinstance(cfg, dict) or cfg.get(
                    'mode', 'feature') != 'feature':
                continue
            paths = (cfg.get('student'), cfg.get('teacher'))
            if not all(isinstance(p, str) and p != 'auto' for p in paths):
                continue
            cfg, _, learner, target = self.term_models(name, cfg)
            paths = (cfg['student'], cfg['teacher'])
            for role, model, path in (('student', learner, paths[0]),
                                      ('teacher', target, paths[1])):
                _check_head(name, role, model, path)
                _check_training_layout(name, role, model, path)
            _check_classes(name, cfg, learner, target)

    def _build_terms(self, cfgs) -> nn.ModuleDict:
        """Check the terms, then build them (the dry-run input size is the
        input size token connectors see)."""
        self._check_seg_terms(cfgs)
        with input_size_scope(self.dry_run_input_size):
            return super()._build_terms(cfgs)

    def _dry_run(self) -> bool:
        """The base dry run; a model that cannot run at the dry-run size
        fails with the fix."""
        try:
            return super()._dry_run()
        except RuntimeError as e:
            h, w = self.dry_run_input_size
            raise RuntimeError(
                f'the build-time dry run of the student and teacher on a '
                f'{h}x{w} zero image failed: {e}. A model with a fixed-size '
                f"layer (e.g. LRASPP's 49x49 image pool) needs a larger one: "
                f'set dry_run_input_size=(512, 1024) in the distiller') from e

    def loss(self, inputs: torch.Tensor,
             data_samples: Optional[list] = None) -> Dict[str, torch.Tensor]:
        """:meth:`BaseDistiller.loss`, with the batch's (H, W) as the input
        size token connectors see."""
        with input_size_scope(inputs.shape[-2:]):
            return super().loss(inputs, data_samples)

    def _forward_for_records(self, model: nn.Module, inputs: torch.Tensor,
                             data_samples: Optional[list],
                             paths: List[str]) -> None:
        """Tensor-mode forward, plus the auxiliary heads when recorded.

        mmseg runs auxiliary heads only in ``loss`` mode; a term on
        ``auxiliary_head...`` makes them run here on the same backbone
        features (no second backbone pass, no loss).
        """
        wants_aux = any(p.split('.')[0] == 'auxiliary_head' for p in paths)
        if not wants_aux or not getattr(model, 'with_auxiliary_head', False):
            model(inputs, data_samples, mode='tensor')
            return
        feats = model.extract_feat(inputs)
        if isinstance(model.decode_head, nn.ModuleList):  # cascade heads
            model(inputs, data_samples, mode='tensor')
        else:
            model.decode_head.forward(feats)
        heads = model.auxiliary_head
        for head in (heads if isinstance(heads, nn.ModuleList) else [heads]):
            head.forward(feats)

    def _dummy_data_samples(self, height: int, width: int) -> list:
        from mmseg.structures import SegDataSample
        meta = dict(
            img_shape=(height, width),
            ori_shape=(height, width),
            pad_shape=(height, width),
            batch_input_shape=(height, width))
        return [SegDataSample(metainfo=meta)]
