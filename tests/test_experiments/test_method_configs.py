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
         'pixel_contrast_size', 'region_contrast_size'}


def _ids(specs):
    return [f'{s.task}-{s.name}' for s in specs]


def _config(spec) -> Config:
    return _load(spec.source)


@functools.lru_cache(maxsize=None)
def _load(source: str) -> Config:
    return Config.fromfile(osp.join(REPO_ROOT, source))


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
        method, _, family = spec.name.rpartition('_')
        assert spec.source.startswith(f'configs/{spec.name}/') or (
            family == spec.arch and spec.source.startswith(
                f'configs/{family}/') and spec.source.endswith(
                f'_{method}.py')), spec.name
        assert osp.isfile(osp.join(REPO_ROOT, spec.source)), spec.source
        assert set(spec.build_terms(PAPER[spec.task])) == set(
            _config(spec).model.distill_terms), spec.name


@pytest.mark.parametrize('spec', WITH_CONFIG, ids=_ids(WITH_CONFIG))
def test_terms_at_the_paper_setting_are_the_config(spec):
    """No rescaling at the paper's own setting: the config's terms."""
    paper = _config(spec).model.distill_terms.to_dict()
    runner = spec.build_terms(PAPER[spec.task])
    assert list(runner) == list(paper)  # term names and order
    got, want = _flat(runner), _flat(_single_process(paper))
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


SCALES = {
    'fgd': {'fpn.loss.alpha_fgd': _c, 'fpn.loss.beta_fgd': _c,
            'fpn.loss.gamma_fgd': _c, 'fpn.loss.lambda_fgd': _cs},
    'mgd': {'fpn.loss.alpha_mgd': _cs},
    'fgfi': {'fpn.loss.loss_weight': _c},
    'skd': {'pixel.loss.loss_weight':
            lambda info: info.batch_size / M.SEG_REF_BATCH},
    'ifvd': {'logits.loss.loss_weight':
             lambda info: M.SEG_REF_CLASSES / info.num_classes},
}


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
        want = _flat(_single_process(
            _config(spec).model.distill_terms.to_dict()))
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
