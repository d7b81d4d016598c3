"""The runner's distillation terms are those of ``MethodSpec.source``.

Each method reads ``model.distill_terms`` of its ``configs/<method>/``
config; these tests fail when the runner's terms and the configs disagree
beyond the documented adaptations (``visionkd/experiments/methods.py``):
at the paper's own setting the terms equal the config's (plus connectors
and single-process settings), and at every preset each hyperparameter is
the config's times its documented rescaling factor.
"""
import functools
import inspect
import os.path as osp

import pytest
from mmengine.config import Config

from visionkd.experiments import METHODS, ModelInfo, get_preset
from visionkd.experiments import methods as M
from visionkd.experiments.presets import PRESETS, REPO_ROOT
from visionkd.experiments.run_configs import model_cfgs, model_info
from visionkd.registry import MODELS
from visionkd.utils.model_spec import config_path

SPECS = [spec for table in METHODS.values() for spec in table.values()]
WITH_CONFIG = [s for s in SPECS if s.source is not None]
#: The paper settings: COCO Faster R-CNN (256-channel FPN, 800x1333) and
#: Cityscapes PSPNet R101 -> R18 (512 / 128 channels, 512x1024, 2 per GPU).
PAPER = {'det': ModelInfo('det', 256, 256, 80, (800, 1333), 2),
         'seg': ModelInfo('seg', 128, 512, 19, (512, 1024), 2)}
#: Keys the runner may add to a config's term or loss.
ADDED = {'connector', 'gather', 'pixel_memory_size', 'region_memory_size',
         'pixel_contrast_size', 'region_contrast_size', 'pool_size'}
#: Terms a family's method leaves out (methods.py says why).
DROPPED = {'dist_ddrnet': {'aux_logits'}, 'fgd_from_gfl': {'roi'}}
#: Keys a method removes from the config's terms (one teacher of two).
REMOVED = {'fgd_from_gfl': {'fpn.from_teacher'}}
#: Layers a family's method distils instead of the config's.
LAYERS = {
    'ifvd_ddrnet': {'ifv.student': 'decode_head.head',
                    'ifv.teacher': 'decode_head.head'},
    'af_dcd_ddrnet': {'af_dcd.student': 'decode_head.head.0.activate',
                      'af_dcd.teacher': 'decode_head.head.0.activate'},
}


#: Framework methods (issue #15) and their config folders.
FRAMEWORK_FOLDERS = {'cwd_hires': 'configs/teacher_input/',
                     'dml': 'configs/online/',
                     'ema_cwd': 'configs/self_kd/',
                     'self_aux': 'configs/self_kd/',
                     # several teachers / a teacher of another family
                     'roi_fgd_two': 'configs/multi_teacher/',
                     'fgd_from_gfl': 'configs/multi_teacher/',
                     'cwd_two': 'configs/multi_teacher/',
                     'cwd_from_ddrnet': 'configs/cwd/'}


def _ids(specs):
    return [f'{s.task}-{s.name}' for s in specs]


def _config(spec) -> Config:
    return _load(spec.source)


@functools.lru_cache(maxsize=None)
def _load(source: str) -> Config:
    return Config.fromfile(osp.join(REPO_ROOT, source))


def _config_terms(spec) -> dict:
    """The config's terms with the family's documented changes (dropped
    terms, other layers), single-process and flattened."""
    terms = _config(spec).model.distill_terms.to_dict()
    for name in DROPPED.get(spec.name, ()):
        del terms[name]
    flat = _flat(_single_process(terms))
    flat.update(LAYERS.get(spec.name, {}))
    for key in REMOVED.get(spec.name, ()):
        del flat[key]
    return flat


def _same(got, want) -> bool:
    if isinstance(want, float) and not isinstance(got, bool):
        return got == pytest.approx(want, rel=1e-12)
    return type(got) is type(want) and got == want


def _flat(d, prefix=''):
    """``{'a.b.c': leaf}`` of nested dicts (lists are leaves)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def _single_process(value):
    """A config value as the runner uses it in one process (BN)."""
    if isinstance(value, dict):
        if value.get('type') == 'SyncBN':
            return dict(value, type='BN')
        return {k: _single_process(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_single_process(v) for v in value]
    return value


def test_every_method_names_its_config():
    for spec in SPECS:
        if spec.name == 'fitnet':  # no official detection setting
            assert spec.source is None
            continue
        # configs/<method>/, or for '<method>_<family>' the family's folder
        # or the method's
        method, _, family = spec.name.rpartition('_')
        assert spec.source.startswith(f'configs/{spec.name}/') or (
            family == spec.arch and (spec.source.startswith(
                f'configs/{family}/') and spec.source.endswith(
                f'_{method}.py') or spec.source.startswith(
                f'configs/{method}/'))) or spec.source.startswith(
                    FRAMEWORK_FOLDERS.get(spec.name, '-')) or (
                        family == spec.arch and spec.source.startswith(
                            FRAMEWORK_FOLDERS.get(method, '-'))), spec.name
        assert osp.isfile(osp.join(REPO_ROOT, spec.source)), spec.source
        assert set(spec.build_terms(PAPER[spec.task])) == set(
            _config(spec).model.distill_terms) - DROPPED.get(
                spec.name, set()), spec.name


@pytest.mark.parametrize('spec', WITH_CONFIG, ids=_ids(WITH_CONFIG))
def test_terms_at_the_paper_setting_are_the_config(spec):
    """No rescaling at the paper's own setting: the config's terms."""
    paper = _config(spec).model.distill_terms.to_dict()
    runner = spec.build_terms(PAPER[spec.task])
    assert list(runner) == [t for t in paper  # term names and order
                            if t not in DROPPED.get(spec.name, ())]
    got, want = _flat(runner), _config_terms(spec)
    for key, value in want.items():
        assert key in got, f'{spec.name}: {key} missing'
        assert _same(got[key], value), \
            f'{spec.name}: {key} is {got[key]!r}, the config has {value!r}'
    for key in set(got) - set(want):
        assert key.rsplit('.', 1)[-1] in ADDED or \
            key.split('.')[1] == 'connector', f'{spec.name}: added {key}'
    if spec.name == 'cirkd':  # memory sizes: the loss defaults
        loss = runner['memory']['loss']
        params = inspect.signature(MODELS.get(loss['type'])).parameters
        for key in M._CIRKD_SIZES:
            assert loss[key] == params[key].default


def _preset_infos():
    out = []
    for task, presets in PRESETS.items():
        for name, preset in presets.items():
            for arch in preset.archs:
                for n in (3, 19):
                    out.append((task, name, arch, n))
    return out


#: The documented rescaling: term.loss.key -> factor(info).
def _c(info):
    return M.DET_REF_CHANNELS / info.teacher_channels


def _cs(info):
    h, w = M.DET_REF_HW
    return _c(info) * (h * w) / (info.input_hw[0] * info.input_hw[1])


def _af_dcd_fd(info):
    """Af-DCD's L_fd sums over the teacher feature's C x H x W."""
    h, w = M.SEG_REF_HW
    return (M.AF_DCD_REF_CHANNELS / info.teacher_backbone_channels *
            (h * w) / (info.input_hw[0] * info.input_hw[1]))


SCALES = {
    'fgd': {'fpn.loss.alpha_fgd': _c, 'fpn.loss.beta_fgd': _c,
            'fpn.loss.gamma_fgd': _c, 'fpn.loss.lambda_fgd': _cs},
    'mgd': {'fpn.loss.alpha_mgd': _cs},
    'fgfi': {'fpn.loss.loss_weight': _c},
    'skd': {'pixel.loss.loss_weight':
            lambda info: info.batch_size / M.SEG_REF_BATCH},
    'ifvd': {'logits.loss.loss_weight':
             lambda info: M.SEG_REF_CLASSES / info.num_classes},
    'af_dcd': {'af_dcd.loss.lambda_fd': _af_dcd_fd},
}
SCALES['ifvd_ddrnet'] = SCALES['ifvd']
SCALES['roi_fgd_two'] = SCALES['fgd_from_gfl'] = SCALES['fgd']
SCALES['af_dcd_ddrnet'] = SCALES['af_dcd']


@pytest.mark.parametrize('task,preset_name,arch,num_classes',
                         _preset_infos())
def test_terms_at_the_presets_are_the_config_rescaled(task, preset_name,
                                                      arch, num_classes):
    preset = get_preset(task, preset_name)
    teacher, student = model_cfgs(preset, arch, num_classes)
    info = model_info(preset, teacher, student, num_classes)
    for spec in WITH_CONFIG:
        if spec.task != task or (spec.arch or preset.default_arch) != arch:
            continue
        want = _config_terms(spec)
        got = _flat(spec.build_terms(info))
        scales = SCALES.get(spec.name, {})
        for key, value in want.items():
            if key in scales:
                value = value * scales[key](info)
            elif key.endswith('.num_classes'):
                value = num_classes
            assert _same(got[key], value), \
                f'{spec.name} ({preset_name}): {key} is {got[key]!r}, ' \
                f'expected {value!r}'
        if spec.name == 'cirkd':  # sizes scaled to the input area
            area = (info.input_hw[0] * info.input_hw[1]) / (
                M.SEG_REF_HW[0] * M.SEG_REF_HW[1])
            loss = spec.build_terms(info)['memory']['loss']
            params = inspect.signature(MODELS.get(loss['type'])).parameters
            for key in M._CIRKD_SIZES:
                assert loss[key] == max(num_classes,
                                        int(params[key].default * area))


def test_reference_settings_are_those_of_the_configs():
    det = Config.fromfile(osp.join(REPO_ROOT, METHODS['det']['pkd'].source))
    resize = [t for t in det.train_pipeline if t['type'] == 'Resize'][0]
    assert tuple(resize['scale'][::-1]) == M.DET_REF_HW
    teacher = Config.fromfile(config_path(det.model.teacher)).model
    assert teacher.neck.out_channels == M.DET_REF_CHANNELS

    seg = Config.fromfile(osp.join(REPO_ROOT, METHODS['seg']['skd'].source))
    crop = [t for t in seg.train_pipeline if t['type'] == 'RandomCrop'][0]
    assert tuple(crop['crop_size']) == M.SEG_REF_HW
    assert seg.train_dataloader.batch_size == M.SEG_REF_BATCH
    teacher = Config.fromfile(config_path(seg.model.teacher)).model
    assert teacher.decode_head.channels == M.SEG_REF_CHANNELS
    assert teacher.decode_head.num_classes == M.SEG_REF_CLASSES


@pytest.mark.parametrize('arch', ['pspnet', 'ddrnet'])
def test_af_dcd_at_cpu_small_by_hand(arch):
    """cpu-small, 240x320 crops: lambda_fd 2e-6 x 2048 / 256 teacher
    channels (PSPNet's half-width layer4, DDRNet-23's fused map) x
    (512 x 1024) / (240 x 320); the 30x40 stride-8 maps pooled 2x
    (round(4 x sqrt(76800 / 524288)) = round(1.53)) to 15x20, at least
    one 4x4 patch; lambda_ctr and the logits term as in the config."""
    preset = get_preset('seg', 'cpu-small')
    teacher, student = model_cfgs(preset, arch, 19)
    info = model_info(preset, teacher, student, 19)
    assert info.teacher_backbone_channels == 256
    name = 'af_dcd' if arch == 'pspnet' else 'af_dcd_ddrnet'
    terms = METHODS['seg'][name].build_terms(info)
    loss = terms['af_dcd']['loss']
    assert loss['lambda_fd'] == pytest.approx(
        2e-6 * 8 * 524288 / 76800, rel=1e-12)
    assert loss['pool_size'] == 2 and loss['lambda_ctr'] == 5e-3
    assert terms['logits']['loss'] == dict(type='PixelWiseKDLoss', tau=1.0,
                                           loss_weight=1.0)


def test_af_dcd_pooling_follows_the_crop():
    """4x at the paper's 512x1024 crop, 3x at 512x512 (round(2.83)),
    none (0) at the tiny 120x160 crop (round(0.77) = 1), and shrunk until
    the pooled map holds one 4x4 patch (a 64x512 crop: round(1.41) = 1
    -> no pooling; 160x1024: round(2.0) = 2, but 20 // 2 = 10 rows >= 4)."""
    loss = dict(type='AfDCDLoss')
    for hw, want in (((512, 1024), 4), ((512, 512), 3), ((120, 160), 0),
                     ((240, 320), 2), ((64, 512), 0), ((160, 1024), 2),
                     ((40, 2048), 0)):
        info = ModelInfo('seg', 64, 256, 19, hw, 2, 256)
        assert M._af_dcd_pool(info, loss) == want, hw
