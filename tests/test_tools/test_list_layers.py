"""tools/analysis_tools/list_layers.py: the layers it lists are those a
real forward produces, and the terms it suggests build a distiller."""
import json
import os.path as osp
import time

import pytest
import torch

from tests.conftest import (
    FASTER_RCNN,
    REPO,
    build_distiller,
    tiny_faster_rcnn,
    tiny_pspnet,
    tiny_retinanet,
)
from tools.analysis_tools.list_layers import (
    LayerRecorder,
    build_bare_distiller,
    format_report,
    inspect_pair,
    load_pair,
    main,
    map_stride,
    strip_pretrained,
    terms_snippet,
)

SIZE = (128, 192)  # not square: strides are checked on H and W


def _layer(report: dict, role: str, path: str):
    found = [x for x in report[role]['layers'] if x.path == path]
    assert found, (path, [x.path for x in report[role]['layers']])
    return found[0]


def _pair(report: dict, name: str) -> dict:
    found = [p for p in report['pairs'] if p['name'] == name]
    assert found, (name, [p['name'] for p in report['pairs']])
    return found[0]


def _snippet_terms(report: dict) -> dict:
    namespace: dict = {}
    exec(terms_snippet(report['pairs']), namespace)
    return namespace['distill_terms']


@pytest.fixture(scope='module')
def det_report():
    """Tiny Faster R-CNNs, FPN 64 (teacher) and 32 (student) wide."""
    pair = load_pair(teacher=tiny_faster_rcnn(64),
                     student=tiny_faster_rcnn(32))
    return inspect_pair(pair, SIZE)


def test_neck_shapes_and_strides_equal_a_real_forward(det_report):
    pair = load_pair(teacher=tiny_faster_rcnn(64),
                     student=tiny_faster_rcnn(32))
    student = build_bare_distiller(pair, SIZE).student.eval()
    with torch.no_grad():
        feats = student.extract_feat(torch.zeros(1, 3, *SIZE))
    neck = _layer(det_report, 'student', 'neck')
    assert neck.shapes == [tuple(f.shape) for f in feats]
    assert neck.strides == [SIZE[0] // f.shape[2] for f in feats]
    assert neck.strides == [SIZE[1] // f.shape[3] for f in feats]
    assert neck.strides == [4, 8, 16, 32, 64]
    assert _layer(det_report, 'teacher', 'neck').shapes[0][1] == 64


def test_fpn_is_one_five_level_entry(det_report):
    neck = _layer(det_report, 'student', 'neck')
    assert (neck.kind, neck.levels, neck.calls) == ('neck (FPN)', 5, 1)
    assert not neck.per_level_calls
    # the default listing holds the candidates, not the FPN's inner convs
    paths = [x.path for x in det_report['student']['layers']]
    assert not [p for p in paths if p.startswith('neck.')]
    kinds = {x.path: x.kind for x in det_report['student']['layers']}
    assert {kinds[f'backbone.layer{i}'] for i in range(1, 5)} == {
        'backbone stage'}
    assert kinds['rpn_head.rpn_cls'] == 'logits'
    assert kinds['roi_head.bbox_roi_extractor'] == 'roi feature'
    assert kinds['roi_head.bbox_head.fc_cls'] == 'roi logits'


def test_shared_dense_head_conv_runs_once_per_level():
    pair = load_pair(teacher=tiny_retinanet(32), student=tiny_retinanet(32))
    report = inspect_pair(pair, SIZE)
    cls = _layer(report, 'student', 'bbox_head.retina_cls')
    assert (cls.kind, cls.calls, cls.levels) == ('logits', 5, 5)
    assert cls.per_level_calls
    assert cls.strides == [8, 16, 32, 64, 128]
    assert 'runs once per level (5 calls)' in format_report(report)
    # the same layer, same shapes on both: paired without connector
    assert _pair(report, 'retina_cls')['connector'] is None


def test_different_fpn_widths_pair_the_necks_with_a_conv_connector(
        det_report):
    fpn = _pair(det_report, 'fpn')
    assert (fpn['student'], fpn['teacher'], fpn['levels']) == ('neck',
                                                               'neck', 5)
    assert fpn['connector'] == dict(type='ConvConnector')
    assert 'levels' not in fpn['term']  # one entry covers all levels
    # stages have equal widths here (same R18): no connector
    assert _pair(det_report, 'backbone_s32')['connector'] is None
    # the snippet pastes into a distiller that builds
    terms = _snippet_terms(det_report)
    assert terms['fpn']['connector'] == dict(type='ConvConnector')
    model = build_distiller('det', terms, student=tiny_faster_rcnn(32),
                            teacher=tiny_faster_rcnn(64),
                            dry_run_input_size=SIZE)
    assert model.distill_terms['fpn'].num_levels == 5
    assert model.distill_terms['rpn_cls'].num_levels == 5


def test_equal_models_get_a_snippet_without_connector():
    pair = load_pair(teacher=tiny_faster_rcnn(64),
                     student=tiny_faster_rcnn(64))
    report = inspect_pair(pair, SIZE)
    snippet = terms_snippet(report['pairs'])
    assert 'connector' not in snippet
    assert "fpn=dict(\n        student='neck',\n        teacher='neck'," in (
        snippet)
    build_distiller('det', _snippet_terms(report), dry_run_input_size=SIZE)


def test_segmentation_logits_and_head_feature():
    pair = load_pair(teacher=tiny_pspnet(32), student=tiny_pspnet(16))
    report = inspect_pair(pair, (64, 64))
    assert report['task'] == 'segmentation'
    logits = _layer(report, 'student', 'decode_head.conv_seg')
    assert (logits.kind, logits.shapes, logits.strides) == (
        'logits', [(1, 19, 8, 8)], [8])
    assert _layer(report, 'student', 'auxiliary_head.conv_seg').kind == (
        'logits')
    feat = _layer(report, 'student', 'decode_head.bottleneck')
    assert (feat.kind, feat.shapes[0][1]) == ('head conv', 16)
    assert _pair(report, 'logits')['connector'] is None
    assert _pair(report, 'decode_feat')['connector'] == dict(
        type='ConvConnector')
    assert _pair(report, 'backbone_s8')['student'] == 'backbone.layer4'
    model = build_distiller('seg', _snippet_terms(report),
                            student=tiny_pspnet(16), teacher=tiny_pspnet(32),
                            dry_run_input_size=(64, 64))
    assert 'auxiliary_logits' in model.distill_terms


def test_all_lists_every_module_with_a_tensor_output():
    pair = load_pair(teacher=tiny_retinanet(32), student=tiny_retinanet(32))
    report = inspect_pair(pair, SIZE, all_layers=True)
    paths = {x.path: x for x in report['student']['layers']}
    assert {'backbone.conv1', 'neck.fpn_convs.0.conv',
            'bbox_head.cls_convs.0.conv'} <= set(paths)
    assert paths['neck.fpn_convs.0.conv'].kind == ''
    # the pairs are those of the candidates
    assert {p['name'] for p in report['pairs']} >= {'fpn', 'retina_cls'}


def test_hooks_are_removed_after_recording():
    pair = load_pair(teacher=tiny_retinanet(32), student=tiny_retinanet(32))
    model = build_bare_distiller(pair, SIZE).student
    with LayerRecorder(model):
        assert model.neck._forward_hooks
    assert not any(m._forward_hooks or m._forward_pre_hooks
                   for m in model.modules())


def _write_model_config(path, spec: dict) -> str:
    spec = dict(spec)
    base = spec.pop('config')
    path.write_text(f'_base_ = [{base!r}]\nmodel = {spec!r}\n')
    return str(path)


def test_cli_json_with_teacher_and_student_files(tmp_path, capsys):
    teacher = _write_model_config(tmp_path / 't.py', tiny_faster_rcnn(64))
    student = _write_model_config(tmp_path / 's.py', tiny_retinanet(32))
    main(['--teacher', teacher, '--student', student, '--input-size', '128',
          '128', '--json'])
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {'teacher', 'student', 'pairs', 'distill_terms'}
    assert out['input_size'] == [128, 128]
    assert out['teacher']['model'] == 'FasterRCNN'
    assert out['student']['model'] == 'RetinaNet'
    neck = [x for x in out['student']['layers'] if x['path'] == 'neck'][0]
    assert neck['levels'] == 5 and neck['strides'][0] == 8
    # P2-P6 against P3-P7: level i is not of the same stride on both
    assert not [p for p in out['pairs'] if p['kind'] == 'neck (FPN)']
    assert any('necks not paired' in n for n in out['notes'])
    assert out['distill_terms'] == {p['name']: p['term']
                                    for p in out['pairs']}


def test_cli_reads_the_distiller_configs_input_size(tmp_path, capsys):
    cfg = tmp_path / 'kd.py'
    cfg.write_text(
        'model = ' + repr(dict(
            type='visionkd.DetectionDistiller',
            student=tiny_faster_rcnn(32), teacher=tiny_faster_rcnn(64),
            dry_run_input_size=[64, 96], distill_terms={})) + '\n')
    main([str(cfg)])
    text = capsys.readouterr().out
    assert 'zero 1x3x64x96 image' in text
    assert "connector=dict(type='ConvConnector')" in text
    assert text.rstrip().splitlines()[-1].endswith(')')


def test_a_plain_model_config_is_rejected():
    with pytest.raises(ValueError, match='no visionkd distiller config'):
        load_pair(osp.join(REPO, 'configs', 'demo',
                           'faster_rcnn_r18_bccd_student.py'))


def test_strip_pretrained():
    cfg = dict(type='M', pretrained='x.pth', backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://r18')),
        head=dict(init_cfg=[dict(type='Normal', std=0.01),
                            dict(type='Pretrained', checkpoint='h.pth')]),
        timm=dict(pretrained=True))
    assert strip_pretrained(cfg) == dict(
        type='M', pretrained=None, backbone=dict(init_cfg=None),
        head=dict(init_cfg=[dict(type='Normal', std=0.01)]),
        timm=dict(pretrained=False))
    assert cfg['backbone']['init_cfg']['type'] == 'Pretrained'  # a copy


def test_map_stride():
    assert map_stride((320, 320), (1, 256, 80, 80)) == 4
    assert map_stride((100, 100), (1, 8, 4, 4)) == 32  # ceil(100 / 32)
    assert map_stride((100, 100), (1, 8, 25, 25)) == 4
    assert map_stride((224, 224), (1, 8, 16, 16)) == 14  # ViT patch 14
    assert map_stride((320, 320), (1000, 256, 7, 7)) is None  # RoIs
    assert map_stride((320, 320), (1, 80)) is None


def test_full_size_config_lists_without_downloading(monkeypatch):
    """configs/kd/faster_rcnn_r101_to_r18.py: R101 and R18 at full size."""
    import mmengine.runner.checkpoint as ckpt

    def no_download(*args, **kwargs):
        raise AssertionError('list_layers downloaded something')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    monkeypatch.setattr(ckpt, 'load_from_http', no_download)
    start = time.time()
    pair = load_pair(osp.join(REPO, 'configs', 'kd',
                              'faster_rcnn_r101_to_r18.py'))
    assert 'faster-rcnn_r101' in pair['sources']['teacher']
    assert FASTER_RCNN.split('::')[1] in pair['sources']['student']
    report = inspect_pair(pair, (128, 128))
    assert time.time() - start < 60
    assert _layer(report, 'teacher', 'backbone.layer4').shapes == [
        (1, 2048, 4, 4)]
    assert _layer(report, 'student', 'backbone.layer4').shapes == [
        (1, 512, 4, 4)]
    assert _pair(report, 'fpn')['connector'] is None  # both FPNs 256 wide
    assert _pair(report, 'backbone_s32')['connector'] == dict(
        type='ConvConnector')
    assert any("mode='roi'" in n for n in report['notes'])
