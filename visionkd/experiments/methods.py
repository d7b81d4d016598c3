"""The method table of the experiment runner.

One :class:`MethodSpec` per method and task. Its ``source`` is the paper
config (``configs/<method>/``, which follows the official code): the
distiller's ``distill_terms`` -- loss types and hyperparameters -- are read
from that file's ``model.distill_terms``, and ``adapt`` applies only what
the runner's smaller models and inputs need:

* a 1x1 ``ConvConnector`` where the student's features are narrower than
  the teacher's (the paper pairs have equal FPN widths);
* losses that *sum* over channels or locations instead of averaging get
  their weight rescaled from the paper's setting (COCO 800x1333 inputs and
  256 FPN channels; Cityscapes 512x1024 crops and 512 teacher channels
  after the PSP module, 2 images per GPU, 19 classes) to the preset's
  channels, input area, batch and classes, so that the KD term keeps its
  paper-size share of the total loss. Averaged losses (PKD, CWD, DeFeat,
  the segmentation KL terms) keep the paper weights;
* the dataset's number of classes, CIRKD's memory sizes scaled to the crop
  area, and single-process settings (``BN`` instead of ``SyncBN``, no
  cross-GPU ``gather``).

FitNets has no official detection setting, so its (only) term is defined
here (``source=None``).

Adding a method is one entry: ``_register(MethodSpec('roi_kd', 'det',
_as_is, 'configs/roi_kd/....py'))``. A method that needs another model
family (LD needs a GFL student and teacher) names it in ``arch``; the
preset must define that family (``Preset.archs``), and the runner trains
its own teacher and baseline for it. A method of another family has the
family in its name when the plain name is taken (``cwd_rtmdet``,
``pkd_rtmdet``: the RTMDet recipes of ``configs/rtmdet``).
"""
import copy
import functools
import inspect
import math
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from mmengine.config import Config

from .presets import REPO_ROOT

__all__ = ['ModelInfo', 'MethodSpec', 'METHODS', 'methods_for',
           'paper_terms', 'paper_framework', 'FRAMEWORK_KEYS',
           'DET_REF_CHANNELS', 'DET_REF_HW',
           'SEG_REF_CHANNELS', 'SEG_REF_HW', 'SEG_REF_BATCH',
           'SEG_REF_CLASSES']

#: FPN channels and input size of the paper detection settings (COCO).
DET_REF_CHANNELS = 256
DET_REF_HW = (800, 1333)
#: Teacher channels after the PSP module, crop, images per GPU and classes
#: of the paper segmentation settings (PSPNet R101 on Cityscapes, 4xb2).
SEG_REF_CHANNELS = 512
SEG_REF_HW = (512, 1024)
SEG_REF_BATCH = 2
SEG_REF_CLASSES = 19


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
        teacher_backbone_channels: Channels of the teacher map its decode
            head reads, the last backbone stage (a ResNet's ``layer4``,
            DDRNet's fused map: Af-DCD's feature); None for detection.
    """

    task: str
    student_channels: int
    teacher_channels: int
    num_classes: int
    input_hw: Tuple[int, int]
    batch_size: int
    teacher_backbone_channels: Optional[int] = None

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


@functools.lru_cache(maxsize=None)
def _load_model(source: str) -> dict:
    cfg = Config.fromfile(osp.join(REPO_ROOT, source))
    return cfg.model.to_dict()


def _load_terms(source: str) -> dict:
    return _load_model(source)['distill_terms']


#: Distiller arguments of a framework config the runner takes over (the
#: teacher only when it is the student's own: ``'self'`` or an EMA).
FRAMEWORK_KEYS = ('teacher_input', 'teacher_trainable')


def paper_framework(source: Optional[str]) -> dict:
    """The student-teacher framework of a config: its ``teacher_input``,
    ``teacher_trainable`` (with ``teacher_ckpt``: a trainable teacher's
    start, None = from scratch with the student) and a ``teacher`` that is
    the student itself (``'self'``, ``dict(kind='ema', ...)``); ``{}`` for
    one frozen teacher at the student's input (and for None).
    """
    return copy.deepcopy(_framework(source)) if source is not None else {}


@functools.lru_cache(maxsize=None)
def _framework(source: str) -> dict:
    """:func:`paper_framework` of one config, read once (not to be
    changed: callers get copies)."""
    model = _load_model(source)
    out = {k: model[k] for k in FRAMEWORK_KEYS if model.get(k)}
    if out.get('teacher_trainable'):
        out['teacher_ckpt'] = model.get('teacher_ckpt')
    teacher = model.get('teacher')
    if teacher == 'self' or (isinstance(teacher, dict) and
                             teacher.get('kind') in ('ema', 'self')):
        out['teacher'] = teacher
    return out


def paper_terms(source: Optional[str]) -> dict:
    """``model.distill_terms`` of a paper config (``{}`` for None).

    Args:
        source: Path of the config relative to the repo root.
    """
    if source is None:
        return {}
    return copy.deepcopy(_load_terms(source))


@dataclass(frozen=True)
class MethodSpec:
    """One distillation method of the runner.

    Attributes:
        name: Command-line name (``--methods NAME``).
        task: ``'det'`` or ``'seg'``.
        adapt: ``(paper terms, ModelInfo) -> distill_terms``: the paper
            config's terms adapted to the preset's models and input.
        source: The paper config the terms come from (relative to the repo
            root); None when no official setting exists.
        arch: Model family it needs; None = the preset's default.
        teacher_archs: The families whose trained teachers it learns from
            (empty: its own family's). One family: that family's teacher
            replaces its own (a teacher of another architecture); several:
            the distiller's ``teachers``, in the order of the source
            config's ``teachers``, each renamed to its family (the terms'
            ``from_teacher`` with it, :meth:`teacher_names`).

    The source config's student-teacher framework
    (:func:`paper_framework`: a teacher at another input scale, a teacher
    that trains too, an EMA or the student itself as the teacher) is
    applied to the family's models as well (:meth:`framework`).
    """

    name: str
    task: str
    adapt: Callable[[dict, ModelInfo], dict]
    source: Optional[str]
    arch: Optional[str] = None
    teacher_archs: Tuple[str, ...] = ()

    def teacher_families(self, default_arch: str) -> Tuple[str, ...]:
        """The families whose teacher runs it needs (none for an EMA /
        self teacher or one trained with the student from scratch)."""
        if not self.needs_teacher_run:
            return ()
        return self.teacher_archs or (self.arch or default_arch, )

    def teacher_names(self) -> Dict[str, str]:
        """Several teachers: the source config's teacher name -> its
        family (``{}`` for one teacher)."""
        if len(self.teacher_archs) < 2:
            return {}
        names = list(_load_model(self.source).get('teachers') or {})
        if len(names) != len(self.teacher_archs):
            raise ValueError(
                f'method {self.name}: teacher_archs {self.teacher_archs} '
                f'but its config {self.source} has the teachers {names}')
        return dict(zip(names, self.teacher_archs))

    def build_terms(self, info: ModelInfo) -> dict:
        """The distiller's ``distill_terms`` for these models."""
        return self.adapt(paper_terms(self.source), info)

    def framework(self) -> dict:
        """Distiller arguments of the source's framework
        (:func:`paper_framework`), e.g. ``teacher_input``."""
        return paper_framework(self.source)

    @property
    def needs_teacher_run(self) -> bool:
        """Whether it learns from the family's trained teacher (not an EMA
        or the student itself, nor a teacher trained from scratch with the
        student)."""
        if self.source is None:
            return True
        fw = _framework(self.source)  # read only: no copy
        if 'teacher' in fw:
            return False
        return not fw.get('teacher_trainable') or \
            fw['teacher_ckpt'] is not None


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


def _as_is(terms: dict, info: ModelInfo) -> dict:
    """The paper's terms unchanged (averaged losses, same-shape features)."""
    return terms


def _scaled(loss: dict, **factors: float) -> dict:
    """``loss`` with ``loss[key] * factor`` for each of ``factors``."""
    return dict(loss, **{k: loss[k] * f for k, f in factors.items()})


# ---------------------------------------------------------------- detection
def _fpn(term: dict, loss: Optional[dict] = None,
         connector: bool = False) -> dict:
    """An FPN term: ``term``'s features and levels with ``loss``."""
    out = dict(student=term['student'], teacher=term['teacher'],
               loss=term['loss'] if loss is None else loss)
    if 'levels' in term:
        out['levels'] = term['levels']
    if connector:
        out['connector'] = dict(type='ConvConnector')
    return dict(fpn=out)


def _fitnet(terms: dict, info: ModelInfo) -> dict:
    # FitNets hint on P2-P5 through a 1x1 regressor; mean squared error,
    # weight 1 (no official detection setting exists).
    hint = dict(student='neck', teacher='neck', levels=[0, 1, 2, 3])
    return _fpn(hint, dict(type='FeatureMSELoss', loss_weight=1.0),
                connector=True)


def _with_connector(terms: dict, info: ModelInfo) -> dict:
    # PKD, CWD: the presets' student FPN is narrower than the teacher's,
    # so a 1x1 connector maps it to the teacher's width; the losses are
    # means (PKD normalises the features), no rescaling.
    return _fpn(terms['fpn'], connector=True)


def _det_scales(info: ModelInfo) -> Tuple[float, float]:
    """(per-channel, per-channel-and-location) sum scales to COCO."""
    return (info.sum_scale(DET_REF_CHANNELS, DET_REF_HW, spatial=False),
            info.sum_scale(DET_REF_CHANNELS, DET_REF_HW))


def _fgd(terms: dict, info: ModelInfo) -> dict:
    # Focal/attention terms sum over the channels (masks and attentions are
    # normalised over locations); the global term sums over channels and
    # locations.
    c, cs = _det_scales(info)
    fpn = terms['fpn']
    return _fpn(fpn, _scaled(fpn['loss'], alpha_fgd=c, beta_fgd=c,
                             gamma_fgd=c, lambda_fgd=cs))


def _mgd(terms: dict, info: ModelInfo) -> dict:
    # alpha on a sum over C*H*W; lambda (the masking ratio) unchanged.
    _, cs = _det_scales(info)
    fpn = terms['fpn']
    return _fpn(fpn, _scaled(fpn['loss'], alpha_mgd=cs))


def _fgfi(terms: dict, info: ModelInfo) -> dict:
    # weight on a sum over channels / (2 * masked locations).
    c, _ = _det_scales(info)
    fpn = terms['fpn']
    return _fpn(fpn, _scaled(fpn['loss'], loss_weight=c))


_DET = 'configs/{}/faster_rcnn_r101_to_r50_fpn_2x_coco_{}.py'
for _name, _fn, _src in [
        ('fitnet', _fitnet, None),
        ('pkd', _with_connector, _DET.format('pkd', 'pkd')),
        # the RetinaNet setting (no Faster R-CNN one exists)
        ('cwd', _with_connector,
         'configs/cwd/retinanet_r101_to_r50_fpn_2x_coco_cwd.py'),
        ('fgd', _fgd, _DET.format('fgd', 'fgd')),
        ('mgd', _mgd, _DET.format('mgd', 'mgd')),
        ('fgfi', _fgfi, _DET.format('fgfi', 'fgfi')),
        ('defeat', _as_is, _DET.format('defeat', 'defeat')),
        ('roi_kd', _as_is, _DET.format('roi_kd', 'roikd'))]:
    _register(MethodSpec(_name, 'det', _fn, _src))
_register(MethodSpec('ld', 'det', _as_is,
                     'configs/ld/gfl_r101_to_r18_fpn_1x_coco_ld.py',
                     arch='gfl'))
# BCKD's losses average over the locations and compare head outputs of the
# same shape: the paper's terms as they are
_register(MethodSpec('bckd', 'det', _as_is,
                     'configs/bckd/gfl_r101_to_r50_fpn_1x_coco_bckd.py',
                     arch='gfl'))
# CrossKD feeds the student's head features into the teacher's head convs:
# the family's student head has the teacher's width (as in the paper's
# pairs), with a narrower backbone
_register(MethodSpec('crosskd', 'det', _as_is,
                     'configs/crosskd/gfl_r101_to_r50_fpn_1x_coco_crosskd.py',
                     arch='gfl_same_width'))
# The RTMDet family (mmdet's RTMDet-s -> RTMDet-tiny at the presets'
# scales). The mmyolo CWD recipe on the three neck outputs (NormConnector
# on both sides, the student's with a 1x1 conv to the teacher's width) and
# PKD on P3-P5 (one entry, a ConvConnector per level): both losses are
# means (CWD: KL per channel / (N x C); PKD: MSE of normalised maps) and
# the connectors read their channels off the models, so the configs' terms
# as they are. CrossKD does not support RTMDetSepBNHead (see
# configs/rtmdet/README.md).
_RTMDET = 'configs/rtmdet/rtmdet_s_to_tiny_300e_coco_{}.py'
for _name in ('cwd', 'pkd'):
    _register(MethodSpec(f'{_name}_rtmdet', 'det', _as_is,
                         _RTMDET.format(_name), arch='rtmdet'))


# ------------------------------------------------------------- segmentation
def _skd(terms: dict, info: ModelInfo) -> dict:
    # The official pixel-wise term sums over the images of a GPU, which the
    # paper weight (10 * 2 images per GPU) folds in; PixelWiseKDLoss
    # averages, so the weight follows the preset's images per iteration.
    pixel = terms['pixel']
    pixel['loss'] = _scaled(pixel['loss'],
                            loss_weight=info.batch_size / SEG_REF_BATCH)
    return terms


def _ifvd(terms: dict, info: ModelInfo) -> dict:
    # The official pixel-wise KD is a mean over the classes too (10 / 19
    # on PixelWiseKDLoss): 10 / the dataset's classes.
    terms['ifv']['loss']['num_classes'] = info.num_classes
    loss = terms['logits']['loss']
    loss['loss_weight'] = (loss['loss_weight'] * SEG_REF_CLASSES /
                           info.num_classes)
    return terms


_CIRKD_SIZES = ('pixel_memory_size', 'region_memory_size',
                'pixel_contrast_size', 'region_contrast_size')


def _loss_default(loss_type: str, arg: str):
    """Default of ``arg`` of the registered loss ``loss_type``."""
    from visionkd.registry import MODELS
    return inspect.signature(MODELS.get(loss_type)).parameters[arg].default


def _cirkd(terms: dict, info: ModelInfo) -> dict:
    # Memory and contrast sizes (the loss defaults: 20000 / 2000 and
    # 4096 / 1024, for 512x1024 crops) scaled to the input area; BN and no
    # gather (one process).
    area = (info.input_hw[0] * info.input_hw[1]) / (SEG_REF_HW[0] *
                                                    SEG_REF_HW[1])
    memory = terms['memory']
    paper = memory['loss']
    loss = dict(type=paper['type'], num_classes=info.num_classes)
    for key in _CIRKD_SIZES:
        n = paper.get(key, _loss_default(paper['type'], key))
        loss[key] = max(info.num_classes, int(n * area))
    loss.update((k, v) for k, v in paper.items() if k not in loss)
    loss['gather'] = False
    connector = copy.deepcopy(memory['connector'])
    for conn in connector:
        if conn.get('norm_cfg', {}).get('type') == 'SyncBN':
            conn['norm_cfg']['type'] = 'BN'
    terms['memory'] = dict(student=memory['student'],
                           teacher=memory['teacher'], loss=loss,
                           connector=connector)
    return terms


#: Teacher channels of Af-DCD's feature in the paper setting (DeepLabV3
#: R101's layer4) and the stride of that feature (dilated ResNets: 8).
AF_DCD_REF_CHANNELS = 2048
AF_DCD_STRIDE = 8


def _af_dcd_pool(info: ModelInfo, loss: dict) -> int:
    """Max-pooling window of the contrastive term at the preset's crop.

    The paper pools the 64x128 stride-8 maps of 512x1024 crops 4x (to
    16x32 = 512 locations, a bound on the term's cost; the official
    CamVid setting does not pool its 45x45 maps): the window shrinks with
    the crop's side, ``round(4 * sqrt(area / paper area))``, so the pooled
    map keeps about the paper's number of locations, and never leaves
    less than one patch; 1 or less is no pooling (0).
    """
    pool = loss.get('pool_size', _loss_default(loss['type'], 'pool_size'))
    ph, pw = loss.get('patch_size',
                      _loss_default(loss['type'], 'patch_size'))
    h, w = (x // AF_DCD_STRIDE for x in info.input_hw)
    ref = (SEG_REF_HW[0] * SEG_REF_HW[1])
    pool = round(pool * math.sqrt(info.input_hw[0] * info.input_hw[1] /
                                  ref))
    while pool > 1 and (h // pool < ph or w // pool < pw):
        pool -= 1
    return pool if pool > 1 else 0


def _af_dcd(terms: dict, info: ModelInfo) -> dict:
    # L_fd sums (P - T)^2 over C x H x W of the stride-8 maps (/ N):
    # lambda_fd x 2048 / teacher channels x (512 x 1024) / crop area. L_ctr
    # is a mean over the pooled locations (cross-entropies summed over the
    # tokens / (h x w) / N), so lambda_ctr and tau stay the paper's; the
    # pooling follows the crop (_af_dcd_pool). The logits term
    # (PixelWiseKDLoss) is a mean: as it is.
    term = terms['af_dcd']
    loss = term['loss']
    channels = info.teacher_backbone_channels or AF_DCD_REF_CHANNELS
    area = (SEG_REF_HW[0] * SEG_REF_HW[1]) / (info.input_hw[0] *
                                              info.input_hw[1])
    loss['pool_size'] = _af_dcd_pool(info, loss)
    loss['lambda_fd'] = (loss['lambda_fd'] * AF_DCD_REF_CHANNELS /
                         channels * area)
    return terms


_SEG = 'configs/{0}/pspnet_r101_to_r18_cityscapes_{0}.py'
for _name, _fn in [('cwd', _as_is), ('skd', _skd), ('ifvd', _ifvd),
                   ('cirkd', _cirkd), ('dist', _as_is)]:
    _register(MethodSpec(_name, 'seg', _fn, _SEG.format(_name)))
_AF_DCD = 'configs/af_dcd/deeplabv3_r101_to_r18_cityscapes_af_dcd.py'
_register(MethodSpec('af_dcd', 'seg', _af_dcd, _AF_DCD))
# BPKD's edge loss averages over each class's edge pixels (summed over the
# classes an image has edges of) and its body loss is a CWD (a mean over
# the class maps of spatial distributions): both independent of the crop
# and the channels, the paper's weights as they are.
_BPKD = 'configs/bpkd/pspnet_r101_to_r18_cityscapes_bpkd.py'
_register(MethodSpec('bpkd', 'seg', _as_is, _BPKD))

# Student-teacher frameworks (issue #15) on the PSPNet family, each from its
# config (the terms are means: as they are): CWD from the teacher at 1.5x
# the student's input; deep mutual learning (teacher and student from
# scratch, pixel-wise KL both ways); CWD from an EMA of the student (no
# teacher run); the auxiliary head learning from the decode head
# (teacher='self').
for _name, _src in [
        ('cwd_hires', 'configs/teacher_input/'
         'pspnet_r101_1.5x_to_r18_cityscapes_cwd.py'),
        ('dml', 'configs/online/pspnet_r50_r18_mutual_cityscapes.py'),
        ('ema_cwd',
         'configs/self_kd/pspnet_r18_ema_teacher_cityscapes_cwd.py'),
        ('self_aux',
         'configs/self_kd/pspnet_r18_aux_from_decode_cityscapes.py')]:
    _register(MethodSpec(_name, 'seg', _as_is, _src))


# The DDRNet family (DDRNet-23 -> DDRNet-23-slim, presets.py). Both predict
# with the context head's logits, decode_head.conv_seg (stride 8): the
# logit terms as they are. The DDRHead's second (spatial) head,
# decode_head.aux_cls_seg, runs only in training (an eval-mode teacher
# never computes it), so it trains on labels only and DIST keeps its
# decode-logits term alone. The feature terms move to DDRNet's layers:
# IFVD's feature after the PSP module -> decode_head.head (the head's
# conv-BN-ReLU feature before the classifier); Af-DCD's last backbone
# stage (a post-ReLU ResNet stage in the paper) -> the fused stride-8 map
# the backbone returns, as the head's first BN-ReLU normalises it
# (decode_head.head.0.activate, 4 x the backbone width: 'backbone' itself
# returns a tuple in training, and its raw sum has no normalisation).
_DDRNET_HEAD = 'decode_head.head'
_DDRNET_FUSED = 'decode_head.head.0.activate'


def _on_layer(term: dict, layer: str) -> None:
    """Point a feature term at ``layer`` of both models."""
    term['student'] = term['teacher'] = layer


def _dist_ddrnet(terms: dict, info: ModelInfo) -> dict:
    del terms['aux_logits']  # the spatial head runs only in training
    return terms


def _ifvd_ddrnet(terms: dict, info: ModelInfo) -> dict:
    terms = _ifvd(terms, info)
    _on_layer(terms['ifv'], _DDRNET_HEAD)
    return terms


def _af_dcd_ddrnet(terms: dict, info: ModelInfo) -> dict:
    terms = _af_dcd(terms, info)
    _on_layer(terms['af_dcd'], _DDRNET_FUSED)
    return terms


for _name, _fn, _src in [
        ('cwd', _as_is, _SEG.format('cwd')),
        ('dist', _dist_ddrnet, _SEG.format('dist')),
        ('ifvd', _ifvd_ddrnet, _SEG.format('ifvd')),
        ('af_dcd', _af_dcd_ddrnet, _AF_DCD),
        ('bpkd', _as_is, _BPKD)]:
    _register(MethodSpec(f'{_name}_ddrnet', 'seg', _fn, _src,
                         arch='ddrnet'))


# The frameworks on the DDRNet family, from the same configs: CWD from the
# DDRNet-23 teacher at 1.5x the input (its batch rounded to a multiple of
# 8, teacher_input.py), deep mutual learning of DDRNet-23 and -23-slim
# from scratch, CWD from an EMA of the student. No self_aux: DDRNet's
# auxiliary (spatial) head runs only in training, which the build-time dry
# run (eval mode) cannot record; the distiller refuses it by name.
for _name in ('cwd_hires', 'dml', 'ema_cwd'):
    _register(MethodSpec(f'{_name}_ddrnet', 'seg', _as_is,
                         METHODS['seg'][_name].source, arch='ddrnet'))


# Several teachers and a teacher of another family (issue #15), from the
# multi-teacher configs (ours, not paper settings). Detection: RoI-level KD
# from the Faster R-CNN teacher plus FGD on P3-P6 from the GFL teacher
# (student FPN levels 1-4 = the GFL FPN's 0-3), FGD rescaled as `fgd`;
# `fgd_from_gfl` is its FGD term alone (the GFL teacher alone; `roi_kd` is
# the Faster R-CNN teacher alone). Segmentation: CWD towards the mean of
# the PSPNet and DDRNet-23 teachers' logits (both stride 8, CamVid's
# classes); `cwd_from_ddrnet` is CWD from the DDRNet-23 teacher alone
# (`cwd`: the PSPNet teacher alone).
_MULTI_DET = ('configs/multi_teacher/'
              'faster_rcnn_r101_gfl_r101_to_faster_rcnn_r18_coco.py')
_MULTI_SEG = ('configs/multi_teacher/'
              'pspnet_deeplabv3_r101_to_pspnet_r18_cityscapes_cwd.py')


def _fgd_term(term: dict, info: ModelInfo) -> dict:
    """An FGD FPN term rescaled as `fgd`, its levels kept."""
    return _fgd(dict(fpn=term), info)['fpn']


def _roi_fgd_two(terms: dict, info: ModelInfo) -> dict:
    fpn = _fgd_term(terms['fpn'], info)
    fpn['from_teacher'] = terms['fpn']['from_teacher']
    return dict(roi=terms['roi'], fpn=fpn)


def _fgd_from_gfl(terms: dict, info: ModelInfo) -> dict:
    return dict(fpn=_fgd_term(terms['fpn'], info))


# Detection self-distillation from an EMA of the student (no teacher run):
# CWD on P2-P5, a mean, as it is.
_register(MethodSpec('ema_cwd', 'det', _as_is, 'configs/self_kd/'
                     'faster_rcnn_r50_ema_teacher_coco_cwd.py'))


# Detection frameworks (issue #15) on the Faster R-CNN family, from their
# configs: CWD on P3-P6 from the teacher at 1.5x the student's input
# (`cwd` is the same term at the student's input); mutual learning of the
# family's teacher and student, both from scratch, CWD on P2-P5 both ways.
# The family's student FPN is narrower than the teacher's, so each term
# gets a 1x1 ConvConnector on its learner's side, as `cwd` does.
def _learner_connectors(terms: dict, info: ModelInfo) -> dict:
    return {name: dict(term, connector=dict(type='ConvConnector'))
            for name, term in terms.items()}


_register(MethodSpec('cwd_hires', 'det', _learner_connectors,
                     'configs/teacher_input/'
                     'retinanet_r101_1.5x_to_r50_fpn_2x_coco_cwd.py'))
_register(MethodSpec('dml', 'det', _learner_connectors,
                     'configs/online/faster_rcnn_r50_r18_mutual_coco_cwd.py'))
_register(MethodSpec('roi_fgd_two', 'det', _roi_fgd_two, _MULTI_DET,
                     teacher_archs=('faster_rcnn', 'gfl')))
_register(MethodSpec('fgd_from_gfl', 'det', _fgd_from_gfl, _MULTI_DET,
                     teacher_archs=('gfl', )))
_register(MethodSpec('cwd_two', 'seg', _as_is, _MULTI_SEG,
                     teacher_archs=('pspnet', 'ddrnet')))
_register(MethodSpec('cwd_from_ddrnet', 'seg', _as_is, _SEG.format('cwd'),
                     teacher_archs=('ddrnet', )))
