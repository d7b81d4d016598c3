"""The method table of the experiment runner.

One :class:`MethodSpec` per method and task: a function from the preset's
:class:`ModelInfo` to the distiller's ``distill_terms``. Hyperparameters
are those of the repo's paper configs (``configs/<method>/``, which follow
the official code); losses that *sum* over channels or locations instead of
averaging get their weight rescaled from the paper's setting (COCO 800x1333
inputs and 256 FPN channels; Cityscapes 512x1024 crops and 512 teacher
channels after the PSP module) to the preset's channels and input area, so
that the KD term keeps its paper-size share of the total loss. Averaged
losses (PKD, CWD, DeFeat, the segmentation KL terms) keep the paper weights.

Adding a method is one entry: ``_register(MethodSpec('roi_kd', 'det',
_roi_kd_terms, ...))``. A method that needs another model family (LD needs
a GFL student and teacher) names it in ``arch``; the preset must define that
family (``Preset.archs``), and the runner trains its own teacher and
baseline for it.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ['ModelInfo', 'MethodSpec', 'METHODS', 'methods_for',
           'DET_REF_CHANNELS', 'DET_REF_HW', 'SEG_REF_CHANNELS',
           'SEG_REF_HW']

#: FPN channels and input size of the paper detection settings (COCO).
DET_REF_CHANNELS = 256
DET_REF_HW = (800, 1333)
#: Teacher channels after the PSP module and crop of the paper
#: segmentation settings (PSPNet R101 on Cityscapes).
SEG_REF_CHANNELS = 512
SEG_REF_HW = (512, 1024)


@dataclass(frozen=True)
class ModelInfo:
    """What a method needs to know about the models and the input.

    Attributes:
        task: ``'det'`` or ``'seg'``.
        student_channels: Student channels of the distilled feature (FPN
            outputs; segmentation: the decode head's ``channels``, i.e. the
            feature after the PSP module).
        teacher_channels: The teacher's channels of the same feature.
        num_classes: Number of classes.
        input_hw: Nominal (h, w) of a training input.
        batch_size: Training images per iteration.
    """

    task: str
    student_channels: int
    teacher_channels: int
    num_classes: int
    input_hw: Tuple[int, int]
    batch_size: int

    def sum_scale(self, ref_channels: int, ref_hw: Tuple[int, int],
                  spatial: bool = True) -> float:
        """Factor keeping a sum-over-(C[, H, W]) loss at its paper size.

        ``ref_channels / teacher_channels``, times ``ref_area /
        input_area`` when the loss also sums over locations.
        """
        scale = ref_channels / self.teacher_channels
        if spatial:
            scale *= (ref_hw[0] * ref_hw[1]) / (self.input_hw[0] *
                                                self.input_hw[1])
        return scale


@dataclass(frozen=True)
class MethodSpec:
    """One distillation method of the runner.

    Attributes:
        name: Command-line name (``--methods NAME``).
        task: ``'det'`` or ``'seg'``.
        build_terms: ``ModelInfo -> distill_terms`` of the distiller.
        source: The paper config the hyperparameters come from.
        arch: Model family it needs; None = the preset's default.
    """

    name: str
    task: str
    build_terms: Callable[[ModelInfo], dict]
    source: str
    arch: Optional[str] = None


METHODS: Dict[str, Dict[str, MethodSpec]] = {'det': {}, 'seg': {}}


def _register(spec: MethodSpec) -> None:
    METHODS[spec.task][spec.name] = spec


def methods_for(task: str, names: Optional[List[str]] = None
                ) -> List[MethodSpec]:
    """Specs of ``names`` (all of the task's methods when None)."""
    table = METHODS[task]
    if names is None:
        return list(table.values())
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f'unknown {task} method(s) {unknown}; available: '
                         f'{sorted(table)}')
    return [table[n] for n in names]


# ---------------------------------------------------------------- detection
_P2_P5 = [0, 1, 2, 3]  # FPN levels of the paper settings (no P6)


def _fpn_term(loss: dict, levels: Optional[list] = _P2_P5,
              connector: bool = False) -> dict:
    term = dict(student='neck', teacher='neck', loss=loss)
    if levels is not None:
        term['levels'] = levels
    if connector:
        term['connector'] = dict(type='ConvConnector')
    return dict(fpn=term)


def _fitnet(info: ModelInfo) -> dict:
    # FitNets hint on P2-P5 through a 1x1 regressor; mean squared error,
    # weight 1 (no official detection setting exists).
    return _fpn_term(dict(type='FeatureMSELoss', loss_weight=1.0),
                     connector=True)


def _pkd(info: ModelInfo) -> dict:
    # configs/pkd: P2-P5, loss weight 6 (normalised features: no scaling).
    return _fpn_term(dict(type='PKDLoss', loss_weight=6.0), connector=True)


def _cwd(info: ModelInfo) -> dict:
    # configs/cwd (detection): tau 1, weight 5 per level (mean over N*C).
    return _fpn_term(dict(type='ChannelWiseDivergence', tau=1.0,
                          loss_weight=5.0), connector=True)


def _fgd(info: ModelInfo) -> dict:
    # configs/fgd Faster R-CNN weights. Focal/attention terms sum over the
    # channels (masks and attentions are normalised over locations); the
    # global term sums over channels and locations.
    c = info.sum_scale(DET_REF_CHANNELS, DET_REF_HW, spatial=False)
    cs = info.sum_scale(DET_REF_CHANNELS, DET_REF_HW)
    return _fpn_term(dict(type='FGDLoss', temp=0.5, alpha_fgd=5e-5 * c,
                          beta_fgd=2.5e-5 * c, gamma_fgd=5e-5 * c,
                          lambda_fgd=5e-7 * cs))


def _mgd(info: ModelInfo) -> dict:
    # configs/mgd (Faster R-CNN): alpha 5e-7 on a sum over C*H*W, lambda
    # 0.45.
    cs = info.sum_scale(DET_REF_CHANNELS, DET_REF_HW)
    return _fpn_term(dict(type='MGDLoss', alpha_mgd=5e-7 * cs,
                          lambda_mgd=0.45))


def _fgfi(info: ModelInfo) -> dict:
    # configs/fgfi: all five levels, psi 0.5, anchors scale 8 x 3 ratios,
    # weight 0.01 on a sum over channels / (2 * masked locations).
    c = info.sum_scale(DET_REF_CHANNELS, DET_REF_HW, spatial=False)
    return _fpn_term(dict(type='FGFILoss', thr_factor=0.5, stride=None,
                          scales=[8], ratios=[0.5, 1.0, 2.0],
                          adapter_relu=False, loss_weight=0.01 * c),
                     levels=None)


def _defeat(info: ModelInfo) -> dict:
    # configs/defeat: all five levels, object 3 / background 12 (already
    # normalised by channels and locations).
    return _fpn_term(dict(type='DeFeatLoss', loss_weight_fg=3.0,
                          loss_weight_bg=12.0, strides=[4, 8, 16, 32, 64]),
                     levels=None)


def _roi_kd(info: ModelInfo) -> dict:
    # configs/roi_kd: the teacher's RoI head on the student's sampled RoIs,
    # KL (tau 2) on fg and bg proposals (weight 1 each, averaged per
    # group) + L1 on the teacher's fg box deltas (weight 1).
    return dict(roi=dict(mode='roi', student='roi_head', teacher='roi_head',
                         loss=dict(type='RoIKDLoss', tau=2.0,
                                   loss_weight_fg=1.0, loss_weight_bg=1.0,
                                   loss_weight_bbox=1.0)))


def _ld(info: ModelInfo) -> dict:
    # configs/ld (official LD GFL setting): LD with T 10, weight 0.25 on the
    # student's positive locations + class KD with T 10, weight 0.5.
    return dict(ld=dict(
        mode='ld', student='bbox_head', teacher='bbox_head',
        loss=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                  loss_weight=0.25, T=10),
        loss_cls=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                      loss_weight=0.5, T=10)))


for _name, _fn, _src in [
        ('fitnet', _fitnet, 'FitNets hint, weight 1 (no official det cfg)'),
        ('pkd', _pkd, 'configs/pkd/faster_rcnn_r101_to_r50_fpn_2x_coco_pkd'),
        ('cwd', _cwd, 'configs/cwd/retinanet_r101_to_r50_fpn_2x_coco_cwd'),
        ('fgd', _fgd, 'configs/fgd/faster_rcnn_r101_to_r50_fpn_2x_coco_fgd'),
        ('mgd', _mgd, 'configs/mgd/faster_rcnn_r101_to_r50_fpn_2x_coco_mgd'),
        ('fgfi', _fgfi,
         'configs/fgfi/faster_rcnn_r101_to_r50_fpn_2x_coco_fgfi'),
        ('defeat', _defeat,
         'configs/defeat/faster_rcnn_r101_to_r50_fpn_2x_coco_defeat')]:
    _register(MethodSpec(_name, 'det', _fn, _src))
_register(MethodSpec('roi_kd', 'det', _roi_kd,
                     'configs/roi_kd/faster_rcnn_r101_to_r50_fpn_2x_coco_'
                     'roikd'))
_register(MethodSpec('ld', 'det', _ld,
                     'configs/ld/gfl_r101_to_r18_fpn_1x_coco_ld', arch='gfl'))


# ------------------------------------------------------------- segmentation
_LOGITS = 'decode_head.conv_seg'
_FEAT = 'decode_head.bottleneck'  # after the PSP module


def _term(student: str, loss: dict, **kwargs) -> dict:
    return dict(student=student, teacher=student, loss=loss, **kwargs)


def _seg_cwd(info: ModelInfo) -> dict:
    # configs/cwd (PSPNet): logits, tau 4, weight 3.
    return dict(logits=_term(_LOGITS, dict(
        type='ChannelWiseDivergence', tau=4.0, loss_weight=3.0)))


def _skd(info: ModelInfo) -> dict:
    # configs/skd: pixel-wise lambda 10 summed over the images of a GPU
    # (PixelWiseKDLoss averages: 10 * images per iteration), pair-wise
    # lambda 1 on 2x2-pooled nodes.
    return dict(
        pixel=_term(_LOGITS, dict(type='PixelWiseKDLoss', tau=1.0,
                                  loss_weight=10.0 * info.batch_size)),
        pair=_term(_FEAT, dict(type='PairWiseAffinityLoss', pool_scale=0.5,
                               loss_weight=1.0)))


def _ifvd(info: ModelInfo) -> dict:
    # configs/ifvd: IFV weight 200, pixel-wise KD 10 / num_classes.
    return dict(
        ifv=_term(_FEAT, dict(type='IFVDLoss', num_classes=info.num_classes,
                              loss_weight=200.0)),
        logits=_term(_LOGITS, dict(type='PixelWiseKDLoss', tau=1.0,
                                   loss_weight=10.0 / info.num_classes)))


def _cirkd(info: ModelInfo) -> dict:
    # configs/cirkd, with the memory and contrast sizes scaled to the
    # input area (the paper's 20000 / 2000 and 4096 / 1024 are for
    # 512x1024 Cityscapes crops).
    area = (info.input_hw[0] * info.input_hw[1]) / (SEG_REF_HW[0] *
                                                    SEG_REF_HW[1])
    size = lambda n: max(info.num_classes, int(n * area))  # noqa: E731
    return dict(
        logits=_term(_LOGITS, dict(type='PixelWiseKDLoss', tau=1.0,
                                   loss_weight=1.0)),
        minibatch=_term(_FEAT, dict(type='CIRKDMiniBatchLoss',
                                    temperature=0.1, loss_weight=1.0,
                                    gather=False)),
        memory=_term(
            _FEAT,
            dict(type='CIRKDMemoryLoss', num_classes=info.num_classes,
                 pixel_memory_size=size(20000),
                 region_memory_size=size(2000),
                 pixel_contrast_size=size(4096),
                 region_contrast_size=size(1024), loss_weight=0.1,
                 gather=False),
            connector=[dict(type='ConvConnector', norm_cfg=dict(type='BN'),
                            act_cfg=dict(type='ReLU')),
                       dict(type='ConvConnector')]))


def _dist(info: ModelInfo) -> dict:
    # configs/dist: decode logits weight 1, auxiliary logits 0.4.
    loss = dict(type='DISTLoss', beta=1.0, gamma=1.0, tau=1.0)
    return dict(
        logits=_term(_LOGITS, dict(loss, loss_weight=1.0)),
        aux_logits=_term('auxiliary_head.conv_seg',
                         dict(loss, loss_weight=0.4)))


for _name, _fn, _src in [
        ('cwd', _seg_cwd, 'configs/cwd/pspnet_r101_to_r18_cityscapes_cwd'),
        ('skd', _skd, 'configs/skd/pspnet_r101_to_r18_cityscapes_skd'),
        ('ifvd', _ifvd, 'configs/ifvd/pspnet_r101_to_r18_cityscapes_ifvd'),
        ('cirkd', _cirkd,
         'configs/cirkd/pspnet_r101_to_r18_cityscapes_cirkd'),
        ('dist', _dist, 'configs/dist/pspnet_r101_to_r18_cityscapes_dist')]:
    _register(MethodSpec(_name, 'seg', _fn, _src))
