"""Automatic pairing: ``student='auto'`` terms and ``distill_terms`` presets
resolve at build time to the terms the hand-written configs spell out."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from tests.conftest import (
    REPO,
    build_distiller,
    tiny_faster_rcnn,
    tiny_pspnet,
    tiny_retinanet,
)
from tests.test_models.test_distillers.test_rtmdet_yolox import (
    tiny_rtmdet,
    train_step,
)

#: The FPN configs: every term distils the neck (``student='neck'``).
FPN_CONFIGS = [
    'configs/pkd/faster_rcnn_r101_to_r18_pkd.py',
    'configs/pkd/faster_rcnn_r101_to_r50_fpn_2x_coco_pkd.py',
    'configs/pkd/retinanet_r101_to_r50_fpn_2x_coco_pkd.py',
    'configs/cwd/retinanet_r101_to_r50_fpn_2x_coco_cwd.py',
    'configs/mgd/faster_rcnn_r101_to_r50_fpn_2x_coco_mgd.py',
    'configs/kd/faster_rcnn_r101_to_r18.py',
    'configs/demo/faster_rcnn_r18x2_to_r18_bccd_pkd.py',
    'configs/rtmdet/rtmdet_s_to_tiny_300e_coco_pkd.py',
]


def _config_terms(rel: str) -> dict:
    return Config.fromfile(osp.join(REPO, rel)).model.distill_terms.to_dict()


def _tiny_models(rel: str, terms: dict) -> tuple:
    """(student, teacher) tiny specs of the config's family; of other widths
    when the config has a connector (its teacher is wider), else equal."""
    wide = any('connector' in t for t in terms.values())
    if 'rtmdet' in rel:
        return tiny_rtmdet(0.125, 16), tiny_rtmdet(0.25, 32)
    if 'retinanet' in rel:
        return tiny_retinanet(16 if wide else 32), tiny_retinanet(32)
    return tiny_faster_rcnn(32 if wide else 64), tiny_faster_rcnn(64)


def _auto(terms: dict) -> dict:
    """The terms with their layers and connectors left to the pairing."""
    out = {}
    for name, term in terms.items():
        term = {k: v for k, v in copy.deepcopy(term).items()
                if k != 'connector'}
        out[name] = dict(term, student='auto', teacher='auto')
    return out


def _structure(model) -> dict:
    """What the built terms are: layers, levels, modules and shapes."""
    return {
        name: (term.student_path, term.teacher_path, term.level_ids,
               [[type(c).__name__ for c in chain]
                for chain in term.connectors],
               [type(loss).__name__ for loss in term.losses],
               {k: tuple(v.shape) for k, v in term.state_dict().items()})
        for name, term in model.distill_terms.items()}


@pytest.mark.parametrize('rel', FPN_CONFIGS)
def test_auto_gives_the_hand_written_fpn_terms(rel):
    hand = _config_terms(rel)
    assert all(t['student'] == t['teacher'] == 'neck' for t in hand.values())
    student, teacher = _tiny_models(rel, hand)
    kw = dict(student=student, teacher=teacher)
    explicit = build_distiller('det', hand, **kw)
    auto = build_distiller('det', _auto(hand), **kw)
    # the resolved config is the hand-written one, key for key
    assert auto.resolved_distill_terms == hand
    assert _structure(auto) == _structure(explicit)
    assert explicit.resolved_distill_terms == hand  # no 'auto': as given


def test_fpn_preset_is_the_demo_config_itself():
    """configs/demo: a 2x-wide teacher, PKD (weight 6) on all five FPN
    levels through a ConvConnector -- exactly ``distill_terms='fpn'``."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo',
                                   'faster_rcnn_r18x2_to_r18_bccd_pkd.py'))
    from visionkd.registry import MODELS
    model_cfg = cfg.model.to_dict()
    hand = MODELS.build(copy.deepcopy(model_cfg))
    for preset in ('fpn', 'auto'):
        model_cfg['distill_terms'] = preset
        auto = MODELS.build(copy.deepcopy(model_cfg))
        assert auto.resolved_distill_terms == cfg.model.distill_terms
        assert _structure(auto) == _structure(hand)
    assert auto.distill_terms['fpn'].level_ids == [0, 1, 2, 3, 4]


def test_segmentation_logits_preset_is_the_cwd_config():
    hand = _config_terms('configs/cwd/pspnet_r101_to_r18_cityscapes_cwd.py')
    kw = dict(student=tiny_pspnet(16), teacher=tiny_pspnet(32),
              dry_run_input_size=(64, 64))
    for terms in ('logits', 'auto',
                  dict(logits=dict(student='auto', teacher='auto'))):
        model = build_distiller('seg', terms, **kw)
        assert model.resolved_distill_terms == hand
    # a term keeps its own loss and weight
    own = dict(logits=dict(student='auto', teacher='auto', weight=0.5,
                           loss=dict(type='KLDivergence', tau=2.0)))
    model = build_distiller('seg', own, **kw)
    assert model.resolved_distill_terms['logits'] == dict(
        student='decode_head.conv_seg', teacher='decode_head.conv_seg',
        weight=0.5, loss=dict(type='KLDivergence', tau=2.0))


def test_detection_logits_preset_trains(det_batch):
    """RetinaNet: the shared class conv, five calls, the teacher's
    sigmoid scores as targets; a training step gives a positive loss per
    level and gradients on the student's head only."""
    model = build_distiller('det', 'logits', student=tiny_retinanet(16),
                            teacher=tiny_retinanet(32))
    term = model.resolved_distill_terms['logits']
    assert term == dict(
        student='bbox_head.retina_cls', teacher='bbox_head.retina_cls',
        loss=dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0))
    losses = train_step(model, det_batch, kd_only=True)
    keys = [f'loss_kd_logits_l{i}' for i in range(5)]
    assert all(float(losses[k]) > 0 for k in keys), losses
    grad = model.student.bbox_head.retina_cls.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_one_given_side_pairs_without_preset():
    model = build_distiller('det', dict(feat=dict(
        student='backbone.layer4', teacher='auto',
        loss=dict(type='FeatureMSELoss'))), student=tiny_faster_rcnn(32),
        teacher=tiny_faster_rcnn(64))
    assert model.resolved_distill_terms['feat'] == dict(
        student='backbone.layer4', teacher='backbone.layer4',
        loss=dict(type='FeatureMSELoss'))


def test_levels_of_other_strides_are_left_out():
    """A three-level RTMDet student and a five-level RetinaNet teacher:
    levels 0-2 (strides 8, 16, 32) have equal strides."""
    student = tiny_rtmdet(0.125, 16)
    model = build_distiller('det', 'fpn', student=student,
                            teacher=tiny_retinanet(32))
    term = model.resolved_distill_terms['fpn']
    assert term['levels'] == [0, 1, 2]
    assert term['connector'] == dict(type='ConvConnector')
    assert model.distill_terms['fpn'].level_ids == [0, 1, 2]
    with pytest.raises(ValueError, match=r"distill term 'fpn': levels \[3\] "
                       r'are not of equal stride'):
        build_distiller('det', dict(fpn=dict(
            student='auto', teacher='auto', levels=[0, 3])),
            student=student, teacher=tiny_retinanet(32))


def test_resolved_terms_are_logged_as_a_pasteable_dict(tmp_path):
    log = tmp_path / 'build.log'
    MMLogger.get_instance('test_auto_pairing_log', log_file=str(log),
                          log_level='INFO')
    model = build_distiller('det', dict(
        fpn=dict(student='auto', teacher='auto', loss=dict(
            type='PKDLoss', loss_weight=2.0)),
        rpn=dict(student='rpn_head.rpn_cls', teacher='rpn_head.rpn_cls',
                 loss=dict(type='FeatureMSELoss'))),
        student=tiny_faster_rcnn(32), teacher=tiny_faster_rcnn(64))
    text = log.read_text()
    assert 'automatic pairing resolved distill_terms' in text
    snippet = text[text.index('distill_terms=dict('):]
    snippet = snippet[:snippet.index('))\n') + 2]
    namespace: dict = {}
    exec(snippet, namespace)
    assert namespace['distill_terms'] == model.resolved_distill_terms
    assert namespace['distill_terms']['fpn']['student'] == 'neck'
    # the pasted dict builds the same distiller
    again = build_distiller('det', namespace['distill_terms'],
                            student=tiny_faster_rcnn(32),
                            teacher=tiny_faster_rcnn(64))
    assert _structure(again) == _structure(model)


def test_errors_name_the_term_and_the_fix():
    faster, retina = tiny_faster_rcnn(64), tiny_retinanet(32)
    # P2-P6 against P3-P7: no level of equal stride
    with pytest.raises(ValueError, match=(
            r"distill term 'fpn' \(student='auto', teacher='auto'\): preset "
            r"'fpn'.*no teacher-student pair.*necks not paired.*Write "
            r'student= and teacher=')):
        build_distiller('det', 'fpn', student=faster, teacher=retina)
    # RTMDet's class convs are one per level: three candidate pairs
    with pytest.raises(ValueError, match=(
            r"distill term 'logits'.*ambiguous, 3 pairs match "
            r'\(bbox_head.rtm_cls.0 -> bbox_head.rtm_cls.0, .*\); write '
            r"student= and teacher= explicitly, e.g. "
            r"student='bbox_head.rtm_cls.0'")):
        build_distiller('det', 'logits', student=tiny_rtmdet(0.125, 16),
                        teacher=tiny_rtmdet(0.25, 16))
    with pytest.raises(ValueError, match=(
            r"distill term 'kd': student='auto' and teacher='auto' need to "
            r"know what to pair.*preset='fpn'")):
        build_distiller('det', dict(kd=dict(student='auto', teacher='auto',
                                            loss=dict(type='PKDLoss'))))
    with pytest.raises(ValueError, match=r"unknown preset 'necks'"):
        build_distiller('det', dict(kd=dict(student='auto', teacher='auto',
                                            preset='necks')))
    with pytest.raises(ValueError, match=r"distill_terms='necks': unknown "
                       r"preset; use 'auto' or one of \['fpn', 'logits'\]"):
        build_distiller('det', 'necks')
    with pytest.raises(ValueError, match=r"for feature terms.*not "
                       r"mode='roi'"):
        build_distiller('det', dict(roi=dict(
            mode='roi', student='auto', teacher='roi_head',
            loss=dict(type='RoIKDLoss'))))


def test_pairing_runs_only_for_auto_terms(monkeypatch):
    import visionkd.models.distillers.auto_pairing as auto_pairing

    def no_survey(*args, **kwargs):
        raise AssertionError('surveyed a model without auto terms')

    monkeypatch.setattr(auto_pairing, 'survey', no_survey)
    model = build_distiller('det', dict(fpn=dict(
        student='neck', teacher='neck', loss=dict(type='PKDLoss'))))
    assert model.distill_terms['fpn'].num_levels == 5
    with pytest.raises(AssertionError, match='surveyed'):
        build_distiller('det', 'fpn')


def test_auto_term_forward_equals_the_explicit_one(det_batch):
    """Same seed, same terms: the same distillation losses."""
    student, teacher = tiny_faster_rcnn(32), tiny_faster_rcnn(64)
    hand = _config_terms('configs/demo/faster_rcnn_r18x2_to_r18_bccd_pkd.py')
    values = []
    for terms in (hand, 'fpn'):
        torch.manual_seed(0)
        model = build_distiller('det', terms, student=student,
                                teacher=teacher)
        losses = train_step(model, det_batch)
        values.append({k: float(v) for k, v in losses.items()
                       if k.startswith('loss_kd')})
    assert len(values[0]) == 5 and values[0] == values[1]
