"""The real-time segmentation family of the runner: DDRNet-23 ->
DDRNet-23-slim (presets, methods, a tiny end-to-end run on CamVid)."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import SHARED_DATA
from tests.test_experiments.helpers import seg_batch, walk_config
from visionkd.experiments import METHODS, get_preset
from visionkd.experiments.dataset_configs import DataSpec
from visionkd.experiments.presets import DDRNET_OHEM_SHARE, PRESETS
from visionkd.experiments.run_configs import model_cfgs, run_config
from visionkd.utils.model_spec import config_path

CAMVID = osp.join(SHARED_DATA, 'camvid')
DDRNET_METHODS = ['cwd_ddrnet', 'dist_ddrnet', 'ifvd_ddrnet',
                  'af_dcd_ddrnet', 'bpkd_ddrnet']
_REF = 'mmseg::ddrnet/ddrnet_23{}_in1k-pre_2xb6-120k_cityscapes-1024x1024.py'



@pytest.mark.parametrize('preset_name', sorted(PRESETS['seg']))
def test_ddrnet_models_from_scratch_single_process(preset_name):
    preset = get_preset('seg', preset_name)
    teacher, student = model_cfgs(preset, 'ddrnet', 11)
    h, w = preset.crop
    kept = round(DDRNET_OHEM_SHARE * preset.schedule.batch_size * h * w)
    for model in (teacher, student):
        assert model['backbone']['type'] == 'DDRNet'
        head = model['decode_head']
        assert head['type'] == 'DDRHead' and head['num_classes'] == 11
        assert head['in_channels'] == 4 * model['backbone']['channels']
        assert model['data_preprocessor']['size'] == preset.crop
        # OHEM at the recipe's share of a batch's pixels, no Cityscapes
        # class weights
        assert [(loss['min_kept'], loss['loss_weight'], loss['thres'])
                for loss in head['loss_decode']] == [(kept, 1.0, 0.9),
                                                     (kept, 0.4, 0.9)]
        for key, value in walk_config(model):
            assert 'class_weight' not in key, key
            assert not (key.endswith('init_cfg') and value), key
            assert value != 'SyncBN', key
    assert teacher['backbone']['channels'] == \
        2 * student['backbone']['channels']


@pytest.mark.parametrize('preset_name', ['cpu-small', 'gpu'])
def test_ddrnet_family_is_mmsegs_23_and_23_slim(preset_name):
    teacher, student = model_cfgs(get_preset('seg', preset_name), 'ddrnet',
                                  19)
    for got, size in ((teacher, ''), (student, '-slim')):
        ref = Config.fromfile(config_path(_REF.format(size))).model
        assert got['backbone']['channels'] == ref.backbone.channels
        assert got['backbone']['ppm_channels'] == ref.backbone.ppm_channels
        assert got['decode_head']['in_channels'] == ref.decode_head.in_channels
        assert got['decode_head']['channels'] == ref.decode_head.channels


def test_cpu_small_ohem_min_kept_by_hand():
    """131072 / (6 x 1024 x 1024) of 4 x 240 x 320 pixels = 6400."""
    teacher, _ = model_cfgs(get_preset('seg', 'cpu-small'), 'ddrnet', 19)
    assert teacher['decode_head']['loss_decode'][0]['min_kept'] == 6400


def test_ddrnet_methods_distil_ddrnets_layers():
    preset = get_preset('seg', 'cpu-small')
    data = DataSpec(CAMVID, 'train', 'val')
    terms = {name: run_config(preset, data, data.class_names('seg'),
                              'distill', 'ddrnet', METHODS['seg'][name])[
                                  'model']['distill_terms']
             for name in DDRNET_METHODS}
    for name, t in terms.items():
        assert METHODS['seg'][name].arch == 'ddrnet'
        # every method distils the context head's logits, never the
        # training-only spatial head
        logits = t['bpkd' if name == 'bpkd_ddrnet' else 'logits']
        assert logits['student'] == logits['teacher'] == \
            'decode_head.conv_seg', name
        assert 'aux_cls_seg' not in json.dumps(t)
    assert sorted(terms['dist_ddrnet']) == ['logits']
    assert terms['ifvd_ddrnet']['ifv']['student'] == 'decode_head.head'
    assert terms['af_dcd_ddrnet']['af_dcd']['teacher'] == \
        'decode_head.head.0.activate'
    assert terms['cwd_ddrnet'] == METHODS['seg']['cwd'].build_terms(None)
    assert terms['bpkd_ddrnet'] == METHODS['seg']['bpkd'].build_terms(None)
    assert terms['bpkd_ddrnet']['bpkd']['loss']['type'] == 'BPKDLoss'


@pytest.mark.parametrize('name', DDRNET_METHODS + ['af_dcd', 'bpkd'])
def test_tiny_terms_build_a_distiller_that_trains(name):
    """Each DDRNet method (and Af-DCD, BPKD on the default PSPNet family)
    on the tiny preset: finite positive KD losses whose gradients reach the
    student's backbone, never the teacher."""
    from visionkd.registry import MODELS
    preset = get_preset('seg', 'tiny')
    spec = METHODS['seg'][name]
    data = DataSpec(CAMVID, 'train', 'val')
    cfg = run_config(preset, data, data.class_names('seg'), 'distill',
                     spec.arch or 'pspnet', spec)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg['model'])
    model.train()
    losses = model(**model.data_preprocessor(seg_batch(preset.crop), True),
                   mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd')}
    assert len(kd) == len(cfg['model']['distill_terms']), sorted(losses)
    assert all(torch.isfinite(v) and v > 0 for v in kd.values()), kd
    sum(kd.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.backbone.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())


def test_ddrnet_predicts_images_of_any_size():
    """Test images are padded to a multiple of 8 (DDRNet's stride-8 sum
    fails otherwise, e.g. at the tiny preset's 240x180) and the
    prediction cropped back to the image."""
    from mmengine.config import ConfigDict
    from mmseg.structures import SegDataSample

    from visionkd.registry import MODELS
    _, student = model_cfgs(get_preset('seg', 'tiny'), 'ddrnet', 11)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(ConfigDict(student))
    model.eval()
    for h, w in ((180, 240), (97, 131)):
        sample = SegDataSample()
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w)))
        data = model.data_preprocessor(dict(
            inputs=[torch.rand(3, h, w) * 255], data_samples=[sample]))
        assert data['inputs'].shape[2] % 8 == data['inputs'].shape[3] % 8 \
            == 0
        with torch.no_grad():
            pred = model(**data, mode='predict')[0].pred_sem_seg.data
        assert pred.shape == (1, h, w)


@pytest.mark.skipif(not osp.isdir(CAMVID), reason='../shared/data is absent')
def test_tiny_ddrnet_family_end_to_end(tmp_path):
    """Teacher, baseline and CWD of the DDRNet family on CamVid, 2
    iterations: no PSPNet run, metrics 0-100, the KD loss logged."""
    from tools.run_experiments import main
    work = tmp_path / 'ddrnet'
    rc = main(['--task', 'seg', '--data-root', CAMVID, '--methods',
               'cwd_ddrnet', '--seeds', '0', '--preset', 'tiny',
               '--work-dir', str(work)])
    assert rc == 0
    runs = json.loads((work / 'runs.json').read_text())['runs']
    assert [r['name'] for r in runs] == [
        'teacher_ddrnet', 'baseline_ddrnet_seed0', 'cwd_ddrnet_seed0']
    doc = json.loads((work / 'results.json').read_text())
    entry = doc['methods']['cwd_ddrnet']
    values = [entry['teacher']['metric'], *entry['baseline']['metric'],
              *entry['metric']]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert 'loss_kd_logits' in (work / 'runs' / 'cwd_ddrnet_seed0' /
                                'run.log').read_text()
