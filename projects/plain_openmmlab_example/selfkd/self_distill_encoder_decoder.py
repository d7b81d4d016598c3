"""Self-distillation of an mmseg segmentor with a visionkd loss, no distiller.

An example of a visionkd loss used on its own inside a plain MMSegmentation
project: the decode head's logits (the deepest classifier, detached) teach
the auxiliary head's logits (a shallower classifier), the deep-supervision
self-distillation of *Be Your Own Teacher: Improve the Performance of
Convolutional Neural Networks via Self Distillation* (Zhang et al., ICCV
2019). There is no teacher model: any visionkd loss that takes
``(preds_S, preds_T)`` dense logits works (``visionkd.PixelWiseKDLoss``,
``visionkd.ChannelWiseDivergence``, ``visionkd.KLDivergence``,
``visionkd.DISTLoss``).
"""
from typing import List

import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

__all__ = ['SelfDistillEncoderDecoder']


@MODELS.register_module()
class SelfDistillEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose auxiliary head also imitates the decode head.

    Training adds ``loss_selfkd = loss_kd(aux_logits, decode_logits)`` to
    mmseg's usual decode and auxiliary losses; inference is unchanged.

    Args:
        loss_kd: Config of the distillation loss, e.g.
            ``dict(type='visionkd.PixelWiseKDLoss', tau=1.0)`` (built from
            mmseg's registry; the ``visionkd.`` prefix reaches visionkd's).
        **kwargs: ``EncoderDecoder`` arguments; ``auxiliary_head`` must be a
            single head with the decode head's ``num_classes``.
    """

    def __init__(self, loss_kd: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        if not self.with_auxiliary_head or isinstance(
                self.auxiliary_head, torch.nn.ModuleList):
            raise ValueError('SelfDistillEncoderDecoder needs exactly one '
                             'auxiliary_head (the student classifier)')
        n_dec = self.decode_head.num_classes
        n_aux = self.auxiliary_head.num_classes
        if n_dec != n_aux:
            raise ValueError(f'decode head has {n_dec} classes but the '
                             f'auxiliary head {n_aux}')
        self.loss_kd = MODELS.build(loss_kd)

    def loss(self, inputs: torch.Tensor, data_samples: List) -> dict:
        """Decode, auxiliary and self-distillation losses.

        Args:
            inputs: Preprocessed images, (N, 3, H, W).
            data_samples: ``SegDataSample`` list with ``gt_sem_seg``.
        """
        x = self.extract_feat(inputs)
        dec_logits = self.decode_head.forward(x)  # (N, C, h, w)
        aux_logits = self.auxiliary_head.forward(x)  # (N, C, h', w')
        losses = add_prefix(
            self.decode_head.loss_by_feat(dec_logits, data_samples),
            'decode')
        losses.update(add_prefix(
            self.auxiliary_head.loss_by_feat(aux_logits, data_samples),
            'aux'))
        if aux_logits.shape[2:] != dec_logits.shape[2:]:
            aux_logits = resize(aux_logits, size=dec_logits.shape[2:],
                                mode='bilinear', align_corners=False)
        losses['loss_selfkd'] = self.loss_kd(aux_logits, dec_logits.detach())
        return losses
