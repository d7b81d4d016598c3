"""Several teachers: from_teacher, fused targets, per-teacher checks."""
import copy

import pytest
import torch

from tests.conftest import tiny_faster_rcnn, tiny_pspnet, tiny_retinanet
from visionkd.models.distillers.teacher_fusion import TermSource, fuse_levels
from visionkd.registry import MODELS

CWD = dict(type='ChannelWiseDivergence', tau=1.0, loss_weight=1.0)


def _seg(terms, teachers=None, **kwargs):
    teachers = teachers or dict(a=dict(model=tiny_pspnet(32)),
                                b=dict(model=tiny_pspnet(32)))
    return MODELS.build(dict(
        type='visionkd.SegmentationDistiller',
        student=tiny_pspnet(32), teachers=copy.deepcopy(teachers),
        distill_terms=copy.deepcopy(terms), **kwargs))


def _logits(name, **extra):
    return {name: dict(student='decode_head.conv_seg',
                       teacher='decode_head.conv_seg', loss=CWD, **extra)}


def _teacher_logits(model, name, x):
    t = model.teachers[name]
    with torch.no_grad():
        return t.decode_head.forward(t.extract_feat(x))


def _student_logits(model, x):
    return model.student.decode_head.forward(model.student.extract_feat(x))


def test_two_teacher_terms_sum_to_the_single_teacher_losses(seg_batch):
    torch.manual_seed(0)
    model = _seg({**_logits('from_a', from_teacher='a'),
                  **_logits('from_b', from_teacher='b')})
    model.eval()  # deterministic BN for the by-hand check
    data = model.data_preprocessor(seg_batch, True)
    losses = model.loss(**data)
    x = data['inputs']
    s = _student_logits(model, x)
    loss_fn = MODELS.build(CWD)
    by_hand = [loss_fn(s, _teacher_logits(model, n, x)) for n in 'ab']
    torch.testing.assert_close(losses['loss_kd_from_a'], by_hand[0])
    torch.testing.assert_close(losses['loss_kd_from_b'], by_hand[1])
    assert not torch.allclose(by_hand[0], by_hand[1])  # other teachers
    total = losses['loss_kd_from_a'] + losses['loss_kd_from_b']
    torch.testing.assert_close(total, by_hand[0] + by_hand[1])


def test_mean_fused_target_is_the_mean(seg_batch):
    torch.manual_seed(0)
    model = _seg(_logits('ens', from_teacher=('a', 'b'), fuse='mean'))
    model.eval()
    data = model.data_preprocessor(seg_batch, True)
    losses = model.loss(**data)
    x = data['inputs']
    mean = (_teacher_logits(model, 'a', x) + _teacher_logits(model, 'b', x)
            ) / 2
    expected = MODELS.build(CWD)(_student_logits(model, x), mean)
    torch.testing.assert_close(losses['loss_kd_ens'], expected)


def test_weighted_mean_and_max_confidence_fuse():
    a = torch.tensor([[[[4.0]], [[0.0]]]])  # (1, 2, 1, 1): confident
    b = torch.tensor([[[[0.1]], [[0.0]]]])  # nearly uniform
    src = TermSource(targets=('a', 'b'), weights=(3.0, 1.0))
    torch.testing.assert_close(fuse_levels([[a], [b]], src)[0],
                               (3 * a + b) / 4)
    a2 = torch.cat([a, b], dim=3)  # pixel 0 confident in a, pixel 1 not
    b2 = torch.cat([b, torch.tensor([[[[0.0]], [[5.0]]]])], dim=3)
    src = TermSource(targets=('a', 'b'), fuse='max_confidence')
    fused = fuse_levels([[a2], [b2]], src)[0]
    torch.testing.assert_close(fused[..., 0], a2[..., 0])
    torch.testing.assert_close(fused[..., 1], b2[..., 1])


def test_each_teacher_runs_only_to_its_recorded_layers(seg_batch):
    model = _seg(dict(feat=dict(student='backbone.layer1',
                                teacher='backbone.layer1', from_teacher='a',
                                loss=dict(type='ATLoss')),
                      **_logits('logits', from_teacher='b')))
    calls = {'a': [], 'b': []}
    for n in 'ab':
        # mmseg calls decode_head.forward directly: hook a child
        model.teachers[n].decode_head.bottleneck.register_forward_pre_hook(
            lambda *args, n=n: calls[n].append(1))
    model.train()
    losses = model.loss(**model.data_preprocessor(seg_batch, True))
    assert {'loss_kd_feat', 'loss_kd_logits'} <= set(losses)
    assert calls == {'a': [], 'b': [1]}  # a stops after layer1


def test_teachers_stay_out_of_state_dict_and_parameters():
    model = _seg(_logits('ens', from_teacher=('a', 'b')))
    keys = model.state_dict().keys()
    assert not any(k.startswith(('teacher', 'teachers', 'a.', 'b.'))
                   for k in keys)
    params = {id(p) for p in model.parameters()}
    for t in model.teachers.values():
        assert all(id(p) not in params and not p.requires_grad
                   for p in t.parameters())
    model.train()
    assert not any(t.training for t in model.teachers.values())


def test_detection_teachers_of_two_kinds(det_batch):
    """A Faster R-CNN and a RetinaNet teacher -> one Faster R-CNN student:
    RoI-level KD from one, FPN PKD from the other."""
    model = MODELS.build(dict(
        type='visionkd.DetectionDistiller', student=tiny_faster_rcnn(32),
        teachers=dict(frcnn=dict(model=tiny_faster_rcnn(32)),
                      retina=dict(model=tiny_retinanet(32))),
        distill_terms=dict(
            roi=dict(mode='roi', student='roi_head', teacher='roi_head',
                     from_teacher='frcnn',
                     loss=dict(type='RoIKDLoss', loss_weight=1.0)),
            # Faster R-CNN FPN is P2-P6, RetinaNet's P3-P7: pair P3-P6
            fpn=dict(student='neck', teacher='neck', from_teacher='retina',
                     levels=dict(student=[1, 2, 3, 4],
                                 teacher=[0, 1, 2, 3]),
                     loss=dict(type='PKDLoss', loss_weight=1.0)))))
    model.train()
    losses = model.loss(**model.data_preprocessor(det_batch, True))
    kd = sorted(k for k in losses if k.startswith('loss_kd'))
    assert any(k.startswith('loss_kd_roi') for k in kd)
    assert [k for k in kd if k.startswith('loss_kd_fpn')] == [
        f'loss_kd_fpn_l{i}' for i in (1, 2, 3, 4)]
    total, _ = model.parse_losses(losses)
    total.backward()
    for t in model.teachers.values():
        assert all(p.grad is None for p in t.parameters())


# ---------------------------------------------------------------- bad input
def test_unknown_teacher_lists_close_names():
    with pytest.raises(ValueError, match=r"unknown teacher 'alpha'.*'a'"):
        _seg(_logits('x', from_teacher='alpha'),
             teachers=dict(a=dict(model=tiny_pspnet(32)),
                           alpah=dict(model=tiny_pspnet(32))))


def test_from_teacher_on_a_one_teacher_config():
    with pytest.raises(ValueError, match='has one teacher: drop '
                                         'from_teacher'):
        MODELS.build(dict(type='visionkd.SegmentationDistiller',
                          student=tiny_pspnet(32), teacher=tiny_pspnet(32),
                          distill_terms=_logits('x', from_teacher='a')))


def test_fusing_teachers_of_other_widths_names_the_fix():
    teachers = dict(a=dict(model=tiny_pspnet(32)),
                    b=dict(model=tiny_pspnet(64)))
    term = dict(ens=dict(student='decode_head.bottleneck',
                         teacher='decode_head.bottleneck',
                         from_teacher=('a', 'b'),
                         connector=dict(type='ConvConnector'),
                         loss=dict(type='FeatureMSELoss')))
    with pytest.raises(ValueError, match="fused teachers record other "
                                         "shapes.*from_teacher='b'"):
        _seg(term, teachers=teachers)


def test_head_modes_cannot_fuse_and_max_confidence_needs_logits():
    with pytest.raises(ValueError, match='cannot fuse several teachers'):
        MODELS.build(dict(
            type='visionkd.DetectionDistiller', student=tiny_faster_rcnn(32),
            teachers=dict(a=dict(model=tiny_faster_rcnn(32)),
                          b=dict(model=tiny_faster_rcnn(32))),
            distill_terms=dict(roi=dict(
                mode='roi', student='roi_head', teacher='roi_head',
                from_teacher=('a', 'b'), loss=dict(type='RoIKDLoss')))))
    with pytest.raises(ValueError, match="fuse='max_confidence'.*not the "
                                         "classifier"):
        _seg(dict(f=dict(student='backbone.layer1', teacher='backbone.layer1',
                         from_teacher=('a', 'b'), fuse='max_confidence',
                         loss=dict(type='ATLoss'))))


def test_teacher_and_teachers_together_and_bad_entries():
    with pytest.raises(ValueError, match='either teachers=dict'):
        MODELS.build(dict(type='visionkd.SegmentationDistiller',
                          student=tiny_pspnet(32), teacher=tiny_pspnet(32),
                          teachers=dict(a=dict(model=tiny_pspnet(32))),
                          distill_terms=None))
    with pytest.raises(KeyError, match=r"teachers\['a'\]: unknown key"):
        _seg(None, teachers=dict(a=dict(model=tiny_pspnet(32), ckp='x')))


def test_wrong_checkpoint_names_the_teacher(tmp_path):
    wrong = MODELS.build(dict(
        type='visionkd.SegmentationDistiller', student=tiny_pspnet(32),
        teacher=tiny_pspnet(64), distill_terms=None)).teacher
    path = str(tmp_path / 'wrong.pth')
    torch.save(dict(state_dict=wrong.state_dict()), path)
    with pytest.raises(ValueError, match=r"teachers\['b'\].ckpt .* does not "
                                         r"match the teacher 'b'"):
        _seg(_logits('x', from_teacher='b'),
             teachers=dict(a=dict(model=tiny_pspnet(32)),
                           b=dict(model=tiny_pspnet(32), ckpt=path)))


def test_fused_logits_still_train_the_student(seg_batch):
    model = _seg(_logits('ens', from_teacher=('a', 'b'),
                         fuse='max_confidence'))
    model.train()
    losses = model.loss(**model.data_preprocessor(seg_batch, True))
    total, _ = model.parse_losses(losses)
    total.backward()
    grad = model.student.decode_head.conv_seg.weight.grad
    assert grad is not None and grad.abs().sum() > 0
