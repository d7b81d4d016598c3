"""Distiller for mmseg segmentors."""
from typing import List, Optional

import torch
import torch.nn as nn

from visionkd.registry import MODELS

from .base_distiller import BaseDistiller

__all__ = ['SegmentationDistiller']


@MODELS.register_module()
class SegmentationDistiller(BaseDistiller):
    """Distil an mmseg teacher segmentor into an mmseg student segmentor.

    Both models must be mmseg ``BaseSegmentor`` s. Ground-truth-driven
    losses receive the batch's ``SegDataSample`` list. See
    :class:`BaseDistiller` for the arguments.

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
