"""Distiller for mmdet detectors."""
import torch.nn as nn

from visionkd.registry import MODELS

from .base_distiller import BaseDistiller

__all__ = ['DetectionDistiller']


@MODELS.register_module()
class DetectionDistiller(BaseDistiller):
    """Distil an mmdet teacher detector into an mmdet student detector.

    Both models must be mmdet ``BaseDetector`` s (one-stage, two-stage,
    DETR-like). Ground-truth-driven losses receive the batch's
    ``DetDataSample`` list. See :class:`BaseDistiller` for the arguments.

    Besides feature/logit terms (``mode='feature'``, the default,
    :class:`FeatureDistillTerm`), a term may set ``mode`` to any mode
    registered in :data:`visionkd.registry.TERM_MODES` for detection:

    * ``mode='roi'`` (:class:`RoIDistillTerm`): RoI-level KD of two-stage
      detectors; the teacher's RoI head scores the student's sampled
      proposals;
    * ``mode='ld'`` (:class:`LDDistillTerm`): Localization Distillation
      (and optional class KD) of GFL heads on the student's positive
      locations.

    Example::

        model = dict(
            type='visionkd.DetectionDistiller',
            student=dict(config='mmdet::faster_rcnn/'
                                'faster-rcnn_r50_fpn_1x_coco.py',
                         backbone=dict(depth=18),
                         neck=dict(in_channels=[64, 128, 256, 512])),
            teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
            teacher_ckpt='https://download.openmmlab.com/...pth',
            distill_terms=dict(
                fpn=dict(student='neck', teacher='neck',
                         loss=dict(type='PKDLoss', loss_weight=6.0))))
    """

    default_scope = 'mmdet'
    task = 'detection'
    gt_field = 'gt_instances'

    @property
    def detector(self) -> nn.Module:
        """The student: what mmdet hooks written for wrapped detectors
        reach through ``model.detector`` (e.g. ``YOLOXModeSwitchHook``
        switching on the student's L1 loss)."""
        return self.student

    def _check_task(self, model: nn.Module, role: str) -> None:
        from mmdet.models.detectors import BaseDetector
        if not isinstance(model, BaseDetector):
            raise TypeError(
                f'DetectionDistiller needs an mmdet detector as {role}, got '
                f'{type(model).__name__}; use SegmentationDistiller for '
                f'mmseg segmentors')

    def _dummy_data_samples(self, height: int, width: int) -> list:
        from mmdet.structures import DetDataSample
        meta = dict(
            img_shape=(height, width),
            ori_shape=(height, width),
            pad_shape=(height, width),
            batch_input_shape=(height, width),
            scale_factor=(1.0, 1.0))
        return [DetDataSample(metainfo=meta)]
