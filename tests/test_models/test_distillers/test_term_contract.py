"""The term contract: modes from a registry, terms complete when built, one
place for keys, detach and float32, and a NaN in any key of any mode names
its term."""
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub

from tests.conftest import REPO, build_distiller, tiny_retinanet
from tests.test_models.test_distillers.test_head_terms import (
    LD_KD,
    ROI_KD,
    small_rcnn_sampling,
    tiny_faster_rcnn,
    tiny_gfl,
)
from visionkd.models.distillers.terms import BaseDistillTerm
from visionkd.registry import TERM_MODES

FPN = dict(fpn=dict(student='neck', teacher='neck',
                    loss=dict(type='FeatureMSELoss')))


def preprocess(model, batch):
    return model.data_preprocessor(batch, True)


def test_modes_are_registered_subclasses_of_one_base():
    assert {'feature', 'roi', 'ld'} <= set(TERM_MODES.module_dict)
    for mode, cls in TERM_MODES.module_dict.items():
        assert issubclass(cls, BaseDistillTerm) and cls.mode == mode
        # no second construction phase
        assert not hasattr(cls, 'bind') and not hasattr(cls, 'build_levels')


def test_unknown_mode_and_mode_of_another_task():
    with pytest.raises(ValueError, match=r"unknown mode 'rio'; modes: \["):
        build_distiller('det', dict(roi=dict(ROI_KD['roi'], mode='rio')))
    with pytest.raises(ValueError,
                       match="mode 'roi' is for detection distillers, not "
                             'segmentation'):
        build_distiller('seg', dict(roi=dict(
            mode='roi', student='decode_head', teacher='decode_head',
            loss=dict(type='RoIKDLoss'))))


def test_unknown_key_names_the_mode():
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['wieght'\]; "
                                       "allowed keys with mode='feature'"):
        build_distiller('det', dict(fpn=dict(FPN['fpn'], wieght=2.0)))
    with pytest.raises(TypeError, match='weight must be a number'):
        build_distiller('det', dict(roi=dict(ROI_KD['roi'], weight='2')))


def test_loss_keys_are_declared_at_build_and_unique_across_terms():
    model = build_distiller('det', dict(
        FPN, p2=dict(student='neck', teacher='neck', levels=[0],
                     loss=dict(type='PKDLoss'))))
    fpn, p2 = model.distill_terms['fpn'], model.distill_terms['p2']
    assert fpn.loss_keys == [f'loss_kd_fpn_l{i}' for i in range(5)]
    assert p2.loss_keys == ['loss_kd_p2_l0']
    # ``owns`` is exact, not a prefix match
    assert not fpn.owns('loss_kd_fpn') and not fpn.owns('loss_kd_fpn_l10')
    with pytest.raises(ValueError, match="'fpn' and 'fpn_l0' both log "
                                         "'loss_kd_fpn_l0'"):
        build_distiller('det', dict(FPN, fpn_l0=dict(
            student='neck.fpn_convs.0', teacher='neck.fpn_convs.0',
            loss=dict(type='FeatureMSELoss'))))


def test_teacher_records_detached_and_loss_in_fp32_only_under_autocast():
    seen = []

    def fake_loss(s, t):
        seen.append((s.dtype, t.dtype, t.requires_grad,
                     torch.is_autocast_enabled('cpu')))
        return (s - t).pow(2).mean()

    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    out = BaseDistillTerm.run_loss(fake_loss, s, t.detach())
    assert out.dtype == torch.float64 and seen[-1][:3] == (
        torch.float64, torch.float64, False)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        BaseDistillTerm.run_loss(fake_loss, s.bfloat16(),
                                 dict(x=t.bfloat16())['x'])
    assert seen[-1][0] == seen[-1][1] == torch.float32
    assert seen[-1][3] is False


def _raise_nan_on(module):
    """Make ``module`` return NaN (a forward hook replacing its output)."""
    return module.register_forward_hook(
        lambda mod, args, out: out * float('nan'))


def _expect_nan_stop(model, data, term: str, key: str) -> None:
    hub = MessageHub.get_instance('test_term_contract_nan')
    hub.update_info('iter', 6)
    with pytest.raises(FloatingPointError) as info:
        model(**data, mode='loss')
    msg = str(info.value)
    assert msg.startswith(f"distillation term(s) ['{term}'] not finite at "
                          'training iteration 7: '), msg
    bad = re.findall(r'(loss_kd_\w+) = nan', msg)
    assert bad == [key], msg


def test_nan_in_one_feature_level_stops_naming_the_term(det_batch):
    torch.manual_seed(0)
    model = build_distiller('det', dict(FPN, ok=dict(
        student='neck', teacher='neck', levels=[0],
        loss=dict(type='FeatureMSELoss')))).train()
    _raise_nan_on(model.distill_terms['fpn'].losses[3])
    _expect_nan_stop(model, preprocess(model, det_batch), 'fpn',
                     'loss_kd_fpn_l3')


def test_nan_in_the_roi_term_stops_naming_the_term(det_batch):
    torch.manual_seed(0)
    model = build_distiller('det', ROI_KD,
                            student=small_rcnn_sampling(tiny_faster_rcnn(64)),
                            teacher=tiny_faster_rcnn(32)).train()
    _raise_nan_on(model.distill_terms['roi'].losses[0])
    _expect_nan_stop(model, preprocess(model, det_batch), 'roi',
                     'loss_kd_roi')


@pytest.fixture(scope='module')
def ld_pair():
    torch.manual_seed(0)
    return build_distiller('det', LD_KD, student=tiny_gfl(64),
                           teacher=tiny_gfl(64))


@pytest.mark.parametrize('which', ['loss_ld', 'loss_cls'])
def test_nan_in_ld_box_or_class_term_stops_naming_the_term(
        det_batch, ld_pair, which):
    model = ld_pair.train()
    handle = _raise_nan_on(getattr(model.distill_terms['ld'], which))
    hub = MessageHub.get_instance('test_term_contract_nan_ld')
    hub.update_info('iter', 0)
    try:
        with pytest.raises(FloatingPointError) as info:
            model(**preprocess(model, det_batch), mode='loss')
    finally:
        handle.remove()
    msg = str(info.value)
    assert msg.startswith("distillation term(s) ['ld'] not finite at "
                          'training iteration 1: '), msg
    # NaN on the levels with positives (the others are exact zeros)
    bad = re.findall(r'(loss_kd_\w+) = nan', msg)
    pattern = r'loss_kd_ld_l\d' if which == 'loss_ld' else \
        r'loss_kd_ld_cls_l\d'
    assert bad and all(re.fullmatch(pattern, k) for k in bad), msg


def _doc_example_code() -> str:
    text = open(f'{REPO}/docs/add_a_term_mode.md', encoding='utf-8').read()
    blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
    return next(b for b in blocks if b.startswith(
        '# my_project/dense_cls_term.py'))


def test_the_worked_example_of_docs_add_a_term_mode(det_batch):
    """The mode of docs/add_a_term_mode.md registers, builds and gives the
    loss computed by hand; no distiller code knows of it."""
    namespace = {}
    TERM_MODES.module_dict.pop('dense_cls', None)
    exec(compile(_doc_example_code(), 'add_a_term_mode.md', 'exec'),
         namespace)
    try:
        torch.manual_seed(0)
        model = build_distiller(
            'det', dict(cls=dict(mode='dense_cls', student='bbox_head',
                                 teacher='bbox_head', T=2.0, weight=0.5)),
            student=tiny_retinanet(32), teacher=tiny_retinanet(16))
        model.train()
        term = model.distill_terms['cls']
        assert term.loss_keys == [f'loss_kd_cls_l{i}' for i in range(5)]
        data = preprocess(model, det_batch)
        losses = model(**data, mode='loss')
        with torch.no_grad():
            cls_s = model.student.bbox_head(
                model.student.extract_feat(data['inputs']))[0]
            cls_t = model.teacher.bbox_head(
                model.teacher.extract_feat(data['inputs']))[0]
        for i, (s, t) in enumerate(zip(cls_s, cls_t)):
            expected = 0.5 * 4.0 * F.binary_cross_entropy_with_logits(
                s / 2.0, torch.sigmoid(t / 2.0))
            torch.testing.assert_close(losses[f'loss_kd_cls_l{i}'].detach(),
                                       expected)
        sum(losses[k] for k in term.loss_keys).backward()
        assert model.student.bbox_head.retina_cls.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.teacher.parameters())
        with pytest.raises(KeyError, match="allowed keys with "
                                           "mode='dense_cls'"):
            build_distiller('det', dict(cls=dict(
                mode='dense_cls', studnet='bbox_head', student='bbox_head',
                teacher='bbox_head')), student=tiny_retinanet(32),
                teacher=tiny_retinanet(16))
    finally:
        TERM_MODES.module_dict.pop('dense_cls', None)


@pytest.mark.parametrize('mode_cfg', [
    dict(loss=dict(type='FeatureMSELoss')),
    dict(loss=dict(type='PKDLoss')),
    dict(connector=dict(type='ConvConnector'),
         loss=dict(type='ChannelWiseDivergence', tau=2.0))])
def test_the_term_detaches_the_teacher_whatever_the_loss(mode_cfg):
    """Losses are pure math; the term is what keeps gradients out of the
    teacher, even for a teacher tensor that requires grad."""
    from tests.test_models.test_distillers.helpers import (
        StubRecords,
        build_term,
    )
    torch.manual_seed(0)
    s = [torch.randn(2, 4, 6, 6, requires_grad=True)]
    t = [torch.randn(2, 4, 6, 6, requires_grad=True)]
    term = build_term('x', dict(student='a', teacher='b', **mode_cfg), s, t)
    out = term(StubRecords(s, t))
    assert list(out) == ['loss_kd_x'] and out['loss_kd_x'] > 0
    out['loss_kd_x'].backward()
    assert s[0].grad is not None and s[0].grad.abs().sum() > 0
    assert t[0].grad is None
