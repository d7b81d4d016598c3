"""Model sizes, input scale and schedule of the experiment presets.

Three presets per task:

* ``tiny``: 2 iterations on a handful of images at a quarter of the
  ``cpu-small`` input area, with half-width models, for tests;
* ``cpu-small``: feasible on 2 CPU cores. Detection is the README demo
  (``configs/demo``): teacher Faster R-CNN ResNet-18-FPN at half width,
  400 iterations; student at quarter width, 300 iterations; 320x240
  inputs, batch 4. Segmentation is PSPNet ResNet-18-D8 at half (teacher,
  800 iterations) and quarter (student, 600 iterations) width on 240x320
  crops of 480x360 frames, batch 4;
* ``gpu``: real sizes (Faster R-CNN R101 -> R18, PSPNet R101 -> R18, with
  ImageNet-pretrained backbones) at the usual input scales.

A preset holds one or more model *families* (``archs``): a method may ask
for a family other than the preset's default (e.g. LD needs a GFL
student), and the runner then trains that family's teacher and baseline
too (and the default family's only if a method, or no method, needs it).

The ``rtmdet`` family (mmdet's RTMDet, the models of ``configs/rtmdet``):
``gpu`` is RTMDet-s -> RTMDet-tiny as in mmdet's configs; ``cpu-small``
the same widths and depths at 320x240; ``tiny`` a quarter/eighth-width
pair. All from scratch (``init_cfg=None``, no download), BN instead of
SyncBN (one process), inputs padded to a multiple of 32 (the PAFPN's
upsampled maps must match the strided ones). The family trains with
AdamW as in mmdet (:data:`RTMDET_OPTIMIZER`); iterations, warm-up and LR
policy are the preset's.
"""
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

__all__ = ['Schedule', 'ModelPair', 'Preset', 'PRESETS', 'get_preset',
           'REPO_ROOT', 'RTMDET_OPTIMIZER']

#: Root of the visionkd checkout (holds ``configs/`` and ``tools/``).
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_DEMO = osp.join(REPO_ROOT, 'configs', 'demo')


@dataclass(frozen=True)
class Schedule:
    """Iterations and optimisation of the runs of a preset.

    Attributes:
        teacher_iters: Training iterations of the teacher.
        student_iters: Training iterations of every student (baseline and
            distilled, the same for all).
        batch_size: Training images per iteration.
        lr: Base learning rate (SGD, momentum 0.9).
        weight_decay: SGD weight decay.
        warmup_iters: Linear warm-up iterations.
        policy: ``'cosine'`` or ``'poly'`` after the warm-up; ``'constant'``
            without warm-up.
        clip_grad: Max gradient norm, or None.
        checkpoint_interval: Checkpoint every this many iterations (the
            resume granularity of an interrupted run).
        log_interval: Log every this many iterations.
        train_subset: Use only the first N training images (None: all).
        val_subset: Use only the first N val images (None: all).
    """

    teacher_iters: int
    student_iters: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_iters: int
    policy: str
    clip_grad: Optional[float]
    checkpoint_interval: int
    log_interval: int
    train_subset: Optional[int] = None
    val_subset: Optional[int] = None


@dataclass(frozen=True)
class ModelPair:
    """Teacher and student specs of one model family.

    Both are ``visionkd.utils.resolve_model_cfg`` specs (``config=`` a file
    or ``mmdet::``/``mmseg::`` reference, plus overrides) and get the
    number of classes filled in by the runner.

    Attributes:
        teacher: The teacher's spec.
        student: The students' spec (baseline and distilled).
        optimizer: The family's own ``optim_wrapper.optimizer`` (RTMDet:
            AdamW), used instead of the preset's SGD with its ``lr`` and
            ``weight_decay``; None: the preset's. Warm-up, LR policy,
            gradient clipping and iterations stay the preset's.
        assistants: Name -> spec of the family's teacher assistants
            (``--assistant NAME``): the same architecture between teacher
            and student in size, so that a method's terms (written for the
            family's student and teacher layers) apply to it as the
            student of the teacher and as the teacher of the student.
            ``'mid'``: half-way widths. Empty for a family whose teacher
            and student differ in architecture.
    """

    teacher: dict
    student: dict
    optimizer: Optional[dict] = None
    assistants: Dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """One preset of one task.

    Attributes:
        name: ``'tiny'``, ``'cpu-small'`` or ``'gpu'``.
        task: ``'det'`` or ``'seg'``.
        archs: Model family name -> builder ``num_classes -> ModelPair``.
        default_arch: Family of the main teacher/baseline.
        schedule: Iterations and optimisation.
        scale: Detection: (w, h) resize scale (keep ratio). Segmentation:
            (w, h) base scale of the random resize and of the test resize.
        crop: Segmentation training crop (h, w); None for detection.
        ratio_range: Segmentation random-resize ratio range.
    """

    name: str
    task: str
    archs: Dict[str, Callable[[int], ModelPair]]
    default_arch: str
    schedule: Schedule
    scale: Tuple[int, int]
    crop: Optional[Tuple[int, int]] = None
    ratio_range: Tuple[float, float] = (0.5, 1.0)

    def input_hw(self) -> Tuple[int, int]:
        """Nominal (h, w) of a training input (for loss-weight scaling)."""
        if self.crop is not None:
            return self.crop
        return self.scale[1], self.scale[0]


# ---------------------------------------------------------------- detection
def _faster_rcnn_demo(num_classes: int) -> ModelPair:
    """Teacher/student of the README demo (``configs/demo``)."""
    head = dict(roi_head=dict(bbox_head=dict(num_classes=num_classes)))
    return ModelPair(
        teacher=dict(config=osp.join(_DEMO,
                                     'faster_rcnn_r18x2_bccd_teacher.py'),
                     **head),
        student=dict(config=osp.join(_DEMO,
                                     'faster_rcnn_r18_bccd_student.py'),
                     **head),
        # between the teacher (32, FPN 64, fc 256) and the student (16,
        # FPN 32, fc 128)
        assistants={'mid': _faster_rcnn_narrow(24, 48, num_classes,
                                               fc=192)})


def _faster_rcnn_narrow(width: int, fpn: int, num_classes: int,
                        fc: Optional[int] = None) -> dict:
    """The demo student's Faster R-CNN at another width (from scratch);
    ``fc``: the box head's FC width (default ``2 * fpn``)."""
    return dict(
        config=osp.join(_DEMO, 'faster_rcnn_r18_bccd_student.py'),
        backbone=dict(base_channels=width),
        neck=dict(in_channels=[width * 2**i for i in range(4)],
                  out_channels=fpn),
        rpn_head=dict(in_channels=fpn, feat_channels=fpn),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=fpn),
            bbox_head=dict(in_channels=fpn,
                           fc_out_channels=fc or 2 * fpn,
                           num_classes=num_classes)))


def _faster_rcnn_tiny(num_classes: int) -> ModelPair:
    """Test-sized pair: R18 base width 16 (FPN 32) -> 8 (FPN 16); the
    assistant 12 (FPN 24)."""
    return ModelPair(teacher=_faster_rcnn_narrow(16, 32, num_classes),
                     student=_faster_rcnn_narrow(8, 16, num_classes),
                     assistants={'mid': _faster_rcnn_narrow(12, 24,
                                                            num_classes)})


def _faster_rcnn_real(num_classes: int) -> ModelPair:
    """Faster R-CNN R101-FPN -> R18-FPN with ImageNet backbones; the
    assistant R50-FPN."""
    head = dict(roi_head=dict(bbox_head=dict(num_classes=num_classes)))
    return ModelPair(
        teacher=dict(
            config='mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py',
            **head),
        assistants={'mid': dict(
            config='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
            **head)},
        student=dict(
            config='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
            backbone=dict(depth=18, init_cfg=dict(
                type='Pretrained', checkpoint='torchvision://resnet18')),
            neck=dict(in_channels=[64, 128, 256, 512]),
            **head))


def _gfl_narrow(width: int, fpn: int, num_classes: int) -> dict:
    """GFL ResNet-18-FPN at another width, from scratch (LD's family).

    The head's GroupNorm uses 8 groups so narrow heads stay valid.
    """
    return dict(
        config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        backbone=dict(depth=18, base_channels=width, frozen_stages=-1,
                      norm_eval=False, init_cfg=None),
        neck=dict(in_channels=[width * 2**i for i in range(4)],
                  out_channels=fpn),
        bbox_head=dict(in_channels=fpn, feat_channels=fpn,
                       num_classes=num_classes,
                       norm_cfg=dict(type='GN', num_groups=8,
                                     requires_grad=True)))


def _gfl_pair(teacher: Tuple[int, int], student: Tuple[int, int]
              ) -> Callable[[int], ModelPair]:
    """GFL pair, (width, FPN channels) each."""
    def build(num_classes: int) -> ModelPair:
        return ModelPair(teacher=_gfl_narrow(*teacher, num_classes),
                         student=_gfl_narrow(*student, num_classes))
    return build


def _gfl_real(num_classes: int) -> ModelPair:
    """GFL R101-FPN -> R18-FPN with ImageNet backbones (LD's setting)."""
    head = dict(bbox_head=dict(num_classes=num_classes))
    return ModelPair(
        teacher=dict(config='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py', **head),
        student=dict(
            config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
            backbone=dict(depth=18, init_cfg=dict(
                type='Pretrained', checkpoint='torchvision://resnet18')),
            neck=dict(in_channels=[64, 128, 256, 512]), **head))


_RTMDET = 'mmdet::rtmdet/rtmdet_{}_8xb32-300e_coco.py'
#: The RTMDet family's optimizer: mmdet's RTMDet AdamW (lr 0.004, weight
#: decay 0.05; mmdet's lr is for 256 images per step, kept here for batch
#: 4 from scratch). With the presets' SGD (lr 0.02) the RTMDet-s teacher
#: reached 10.6 bbox mAP after 400 iterations on BCCD (cpu-small), below
#: its RTMDet-tiny students (21.3); with this AdamW, 40.1 (see
#: configs/rtmdet/README.md, "Evidence on BCCD").
RTMDET_OPTIMIZER = dict(type='AdamW', lr=0.004, weight_decay=0.05)


def _rtmdet(size: str, widen: float, deepen: float, neck: int,
            num_classes: int) -> dict:
    """RTMDet from mmdet's ``rtmdet_<size>`` config, from scratch.

    Args:
        size: mmdet config (``'tiny'``, ``'s'``): head settings.
        widen: CSPNeXt ``widen_factor`` (s 0.5, tiny 0.375).
        deepen: CSPNeXt ``deepen_factor`` (s 0.33, tiny 0.167).
        neck: PAFPN and head channels (s 128, tiny 96).
        num_classes: Number of classes.
    """
    bn = dict(type='BN')
    return dict(
        config=_RTMDET.format(size),
        data_preprocessor=dict(pad_size_divisor=32),
        backbone=dict(deepen_factor=deepen, widen_factor=widen,
                      norm_cfg=bn, init_cfg=None),
        neck=dict(in_channels=[int(c * widen) for c in (256, 512, 1024)],
                  out_channels=neck, norm_cfg=bn),
        bbox_head=dict(in_channels=neck, feat_channels=neck,
                       num_classes=num_classes, norm_cfg=bn))


def _rtmdet_pair(teacher: Tuple[str, float, float, int],
                 student: Tuple[str, float, float, int]
                 ) -> Callable[[int], ModelPair]:
    """RTMDet pair, (config size, widen, deepen, neck channels) each."""
    def build(num_classes: int) -> ModelPair:
        return ModelPair(teacher=_rtmdet(*teacher, num_classes),
                         student=_rtmdet(*student, num_classes),
                         optimizer=dict(RTMDET_OPTIMIZER))
    return build


#: RTMDet-s and RTMDet-tiny (mmdet's widths, depths and channels).
_RTMDET_S = ('s', 0.5, 0.33, 128)
_RTMDET_TINY = ('tiny', 0.375, 0.167, 96)


# ------------------------------------------------------------- segmentation
_BN = dict(type='BN', requires_grad=True)


def _pspnet_r18(width: int, channels: int, crop: Tuple[int, int],
                num_classes: int) -> dict:
    """PSPNet ResNet-18-D8 from scratch, ``width`` = stem/base channels."""
    return dict(
        config='mmseg::_base_/models/pspnet_r50-d8.py',
        pretrained=None,
        data_preprocessor=dict(size=crop),
        backbone=dict(depth=18, stem_channels=width, base_channels=width,
                      norm_cfg=_BN),
        decode_head=dict(in_channels=width * 8, channels=channels,
                         norm_cfg=_BN, num_classes=num_classes),
        auxiliary_head=dict(in_channels=width * 4, channels=channels // 2,
                            norm_cfg=_BN, num_classes=num_classes))


def _pspnet_narrow(teacher: Tuple[int, int], student: Tuple[int, int],
                   crop: Tuple[int, int]) -> Callable[[int], ModelPair]:
    """PSPNet R18-D8 pair, (width, decode channels) each; the assistant
    ``'mid'`` at the mean of both."""
    mid = ((teacher[0] + student[0]) // 2, (teacher[1] + student[1]) // 2)

    def build(num_classes: int) -> ModelPair:
        return ModelPair(
            teacher=_pspnet_r18(*teacher, crop, num_classes),
            student=_pspnet_r18(*student, crop, num_classes),
            assistants={'mid': _pspnet_r18(*mid, crop, num_classes)})
    return build


def _pspnet_real(crop: Tuple[int, int]) -> Callable[[int], ModelPair]:
    def build(num_classes: int) -> ModelPair:
        heads = dict(
            data_preprocessor=dict(size=crop),
            backbone=dict(norm_cfg=_BN),
            decode_head=dict(norm_cfg=_BN, num_classes=num_classes),
            auxiliary_head=dict(norm_cfg=_BN, num_classes=num_classes))
        return ModelPair(
            teacher=dict(config='mmseg::pspnet/'
                         'pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
                         **heads),
            student=dict(config='mmseg::pspnet/'
                         'pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
                         **heads),
            assistants={'mid': dict(
                config='mmseg::pspnet/'
                'pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py', **heads)})
    return build


_DDRNET = ('mmseg::ddrnet/'
           'ddrnet_23{}_in1k-pre_2xb6-120k_cityscapes-1024x1024.py')
#: Share of a batch's pixels the DDRNet recipe's OHEM keeps at least
#: (min_kept 131072 of 6 images of 1024x1024).
DDRNET_OHEM_SHARE = 131072 / (6 * 1024 * 1024)


def _ddrnet(channels: int, head: int, crop: Tuple[int, int], batch: int,
            num_classes: int) -> dict:
    """DDRNet-23 from mmseg's ``ddrnet_23[-slim]`` config, from scratch.

    ``channels`` is the backbone width (DDRNet-23-slim 32, DDRNet-23 64;
    the decode head reads ``4 * channels``), ``head`` the DDRHead's
    channels (64, 128). Test images padded to a multiple of 8 (DDRNet
    adds its stride-8 branch to maps resized to (h // 8, w // 8), which
    fails for other sizes, e.g. the tiny preset's 240x180). BN instead of
    SyncBN; the recipe's two OHEM
    cross-entropies (context head 1.0, training-only spatial head 0.4,
    ``thres`` 0.9) keep at least the recipe's share of the batch's pixels
    (``min_kept`` scaled from 6 x 1024 x 1024 to ``batch`` x crop), and
    drop its Cityscapes class weights (frequencies of Cityscapes' 19
    classes, not of the user's dataset).
    """
    kept = max(1, round(DDRNET_OHEM_SHARE * batch * crop[0] * crop[1]))
    ohem = [dict(type='OhemCrossEntropy', thres=0.9, min_kept=kept,
                 loss_weight=w) for w in (1.0, 0.4)]
    return dict(
        config=_DDRNET.format('-slim'),
        # the stride-8 branch is added to maps resized to (h // 8, w // 8):
        # test images are padded to a multiple of 8
        data_preprocessor=dict(size=crop, test_cfg=dict(size_divisor=8)),
        backbone=dict(channels=channels, norm_cfg=_BN, init_cfg=None),
        decode_head=dict(in_channels=channels * 4, channels=head,
                         norm_cfg=_BN, num_classes=num_classes,
                         loss_decode=ohem))


def _ddrnet_pair(teacher: Tuple[int, int], student: Tuple[int, int],
                 crop: Tuple[int, int],
                 batch: int) -> Callable[[int], ModelPair]:
    """DDRNet pair, (backbone channels, head channels) each; the assistant
    ``'mid'`` at the mean of both.

    The real-time family (issue #14): DDRNet-23-slim, the cheapest
    real-time student that learned from scratch on CamVid (a training
    step at the cpu-small crop, batch 4, one thread: 0.76 s, 1.4 x the
    quarter-width PSPNet student's 0.54 s; STDC1 1.31 s, Fast-SCNN 0.91 s,
    BiSeNetV2 about 1.2 x STDC1; see docs/experiments.md), taught by
    DDRNet-23, the same network at twice the width (mmseg's pair; 1.88 s,
    3.5 x the parameters). A same-family teacher has the student's
    strides, heads and layer names, so every method's terms apply on both
    sides with only the channels differing (and the assistant, between
    both, can be a student and a teacher).
    """
    mid = ((teacher[0] + student[0]) // 2, (teacher[1] + student[1]) // 2)

    def build(num_classes: int) -> ModelPair:
        return ModelPair(
            teacher=_ddrnet(*teacher, crop, batch, num_classes),
            student=_ddrnet(*student, crop, batch, num_classes),
            assistants={'mid': _ddrnet(*mid, crop, batch, num_classes)})
    return build


#: DDRNet-23 and DDRNet-23-slim: (backbone channels, head channels).
_DDRNET_23 = (64, 128)
_DDRNET_23_SLIM = (32, 64)

_SEG_TINY_CROP = (120, 160)
_SEG_SMALL_CROP = (240, 320)
_SEG_REAL_CROP = (512, 512)

PRESETS: Dict[str, Dict[str, Preset]] = {
    'det': {
        'tiny': Preset(
            'tiny', 'det', {'faster_rcnn': _faster_rcnn_tiny,
                            'gfl': _gfl_pair((16, 32), (8, 32)),
                            'gfl_same_width': _gfl_pair((16, 32), (8, 32)),
                            'rtmdet': _rtmdet_pair(
                                ('tiny', 0.25, 0.167, 32),
                                ('tiny', 0.125, 0.167, 16))},
            'faster_rcnn',
            Schedule(teacher_iters=2, student_iters=2, batch_size=2,
                     lr=0.02, weight_decay=1e-4, warmup_iters=0,
                     policy='constant', clip_grad=10.0,
                     checkpoint_interval=1, log_interval=1,
                     train_subset=4, val_subset=2),
            scale=(160, 120)),
        'cpu-small': Preset(
            'cpu-small', 'det', {'faster_rcnn': _faster_rcnn_demo,
                                 'gfl': _gfl_pair((32, 64), (16, 32)),
                                 'gfl_same_width': _gfl_pair((32, 64),
                                                             (16, 64)),
                                 'rtmdet': _rtmdet_pair(_RTMDET_S,
                                                        _RTMDET_TINY)},
            'faster_rcnn',
            Schedule(teacher_iters=400, student_iters=300, batch_size=4,
                     lr=0.02, weight_decay=1e-4, warmup_iters=50,
                     policy='cosine', clip_grad=10.0,
                     checkpoint_interval=50, log_interval=20),
            scale=(320, 240)),
        'gpu': Preset(
            'gpu', 'det', {'faster_rcnn': _faster_rcnn_real,
                           'gfl': _gfl_real, 'gfl_same_width': _gfl_real,
                           'rtmdet': _rtmdet_pair(_RTMDET_S, _RTMDET_TINY)},
            'faster_rcnn',
            Schedule(teacher_iters=6000, student_iters=6000, batch_size=8,
                     lr=0.02, weight_decay=1e-4, warmup_iters=500,
                     policy='cosine', clip_grad=35.0,
                     checkpoint_interval=500, log_interval=50),
            scale=(1333, 800)),
    },
    'seg': {
        'tiny': Preset(
            'tiny', 'seg',
            {'pspnet': _pspnet_narrow((16, 32), (8, 16), _SEG_TINY_CROP),
             'ddrnet': _ddrnet_pair((16, 32), (8, 16), _SEG_TINY_CROP, 2)},
            'pspnet',
            Schedule(teacher_iters=2, student_iters=2, batch_size=2,
                     lr=0.01, weight_decay=5e-4, warmup_iters=0,
                     policy='constant', clip_grad=None,
                     checkpoint_interval=1, log_interval=1,
                     train_subset=4, val_subset=2),
            scale=(240, 180), crop=_SEG_TINY_CROP),
        'cpu-small': Preset(
            'cpu-small', 'seg',
            {'pspnet': _pspnet_narrow((32, 64), (16, 32), _SEG_SMALL_CROP),
             'ddrnet': _ddrnet_pair(_DDRNET_23, _DDRNET_23_SLIM,
                                    _SEG_SMALL_CROP, 4)},
            'pspnet',
            Schedule(teacher_iters=800, student_iters=600, batch_size=4,
                     lr=0.01, weight_decay=5e-4, warmup_iters=50,
                     policy='poly', clip_grad=None,
                     checkpoint_interval=100, log_interval=20),
            scale=(480, 360), crop=_SEG_SMALL_CROP),
        'gpu': Preset(
            'gpu', 'seg', {'pspnet': _pspnet_real(_SEG_REAL_CROP),
                           'ddrnet': _ddrnet_pair(_DDRNET_23, _DDRNET_23_SLIM,
                                                  _SEG_REAL_CROP, 8)},
            'pspnet',
            Schedule(teacher_iters=20000, student_iters=20000,
                     batch_size=8, lr=0.01, weight_decay=5e-4,
                     warmup_iters=0, policy='poly', clip_grad=None,
                     checkpoint_interval=2000, log_interval=50),
            scale=(960, 720), crop=_SEG_REAL_CROP, ratio_range=(0.5, 2.0)),
    },
}


def get_preset(task: str, name: str) -> Preset:
    """The preset ``name`` of ``task`` with a clear error if unknown."""
    if task not in PRESETS:
        raise ValueError(f'unknown task {task!r}; choose from '
                         f'{sorted(PRESETS)}')
    if name not in PRESETS[task]:
        raise ValueError(f'unknown preset {name!r} for {task}; choose from '
                         f'{sorted(PRESETS[task])}')
    return PRESETS[task][name]
