"""DETRDistill's ``mode='detr_distill'`` on tiny DINO and Deformable DETR."""
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from tests.conftest import (
    build_distiller,
    tiny_deformable_detr,
    tiny_dino,
    tiny_faster_rcnn,
)

TERM = dict(detr=dict(mode='detr_distill',
                      loss_feat=dict(type='DETRDistillFeatureLoss',
                                     topk=10)))
FAMILIES = {'dino': tiny_dino, 'deformable_detr': tiny_deformable_detr}
KEYS = {f'loss_kd_detr_{s}' for s in ('cls', 'bbox', 'iou', 'feat')}


def _distiller(family, terms=TERM, teacher_layers=2, **kwargs):
    spec = FAMILIES[family]
    torch.manual_seed(0)
    model = build_distiller('det', terms, student=spec(),
                            teacher=spec(decoder_layers=teacher_layers),
                            **kwargs)
    model.init_weights()  # DETRs' level_embed is set by init_weights
    return model


def _records(model, det_batch):
    """Both recorded forward_transformer calls of a training step."""
    model.train()
    data = model.data_preprocessor(det_batch, True)
    model.records.clear()
    model.run_teacher(data['inputs'], data['data_samples'])
    model.student.loss(data['inputs'], data['data_samples'])
    term = model.distill_terms['detr']
    (name, ) = term.source.targets
    s_call = model.records.of('student').levels(term.student_key)[0]
    t_call = model.records.of(name).levels(term.teacher_key)[0]
    return data, term, s_call, t_call


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_gradients_reach_the_student_never_the_teacher(family, det_batch):
    model = _distiller(family)
    model.train()
    data = model.data_preprocessor(det_batch, True)
    losses = model(**data, mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd')}
    assert set(kd) == KEYS
    assert all(torch.isfinite(v) and v > 0 for v in kd.values()), kd
    assert 'loss_cls' in losses  # the student's own detection losses
    sum(kd.values()).backward()
    for part in ('decoder', 'encoder', 'neck', 'backbone'):
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in getattr(model.student, part).parameters()), part
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_teacher_predictions_are_its_own_forward(family, det_batch):
    """The recorded transformer call through the head equals the teacher's
    plain tensor-mode forward (every decoder layer)."""
    model = _distiller(family)
    data, term, _, t_call = _records(model, det_batch)
    with torch.no_grad():
        _, cls, box = term.predictions(model.teacher, t_call)
        want_cls, want_box = model.teacher(
            data['inputs'], data['data_samples'], mode='tensor')
    torch.testing.assert_close(cls, want_cls)
    torch.testing.assert_close(box, want_box)


def test_dino_denoising_queries_are_dropped(det_batch):
    """The training student's decoder also runs DINO's denoising queries:
    the term keeps the 20 matching queries."""
    model = _distiller('dino')
    _, term, s_call, _ = _records(model, det_batch)
    dn = s_call['_return']['dn_meta']['num_denoising_queries']
    assert dn > 0
    assert s_call['_return']['hidden_states'].shape[2] == dn + 20
    hidden, cls, box = term.predictions(model.student, s_call)
    assert hidden.shape[2] == cls.shape[2] == box.shape[2] == 20


def test_value_is_the_losses_on_both_heads_outputs(det_batch):
    """Student layer l vs teacher layer l with the match loss, every teacher
    layer's feature loss on the neck features, matched as scipy does."""
    model = _distiller('deformable_detr')
    data, term, s_call, t_call = _records(model, det_batch)
    got = term.compute([s_call], [t_call], data['data_samples'])
    _, cls_S, box_S = term.predictions(model.student, s_call)
    with torch.no_grad():
        hid_T, cls_T, box_T = term.predictions(model.teacher, t_call)
    want = [0, 0, 0]
    for layer in range(2):
        values = term.loss_match(cls_S[layer], box_S[layer], cls_T[layer],
                                 box_T[layer])
        want = [a + b for a, b in zip(want, values)]
        for n, (rows, cols) in enumerate(term.loss_match.match(
                cls_S[layer], box_S[layer], cls_T[layer], box_T[layer])):
            prob = cls_T[layer, n].sigmoid()
            xyxy = torch.cat([box_T[layer, n, :, :2] - box_T[layer, n, :,
                                                             2:] / 2,
                              box_T[layer, n, :, :2] + box_T[layer, n, :,
                                                             2:] / 2],
                             -1).clamp(0, 1)
            cost = term.loss_match.match_cost(cls_S[layer, n],
                                              box_S[layer, n], prob, xyxy)
            r, c = linear_sum_assignment(cost.numpy())
            assert rows.tolist() == r.tolist() and cols.tolist() == c.tolist()
    feat = sum(term.loss_feat(list(s_call['img_feats']),
                              list(t_call['img_feats']), hid_T[i], cls_T[i],
                              box_T[i], data['data_samples'])
               for i in range(2))
    torch.testing.assert_close(got['cls'], want[0])
    torch.testing.assert_close(got['bbox'], want[1])
    torch.testing.assert_close(got['iou'], want[2])
    torch.testing.assert_close(got['feat'], feat)


def test_teacher_layer_last_and_losses_left_out(det_batch):
    terms = dict(detr=dict(mode='detr_distill', teacher_layer='last',
                           loss_feat=None))
    model = _distiller('deformable_detr', terms, teacher_layers=3)
    model.train()
    data = model.data_preprocessor(det_batch, True)
    kd = {k for k in model(**data, mode='loss') if k.startswith('loss_kd')}
    assert kd == KEYS - {'loss_kd_detr_feat'}
    only_feat = dict(detr=dict(mode='detr_distill', loss_match=None))
    model = _distiller('deformable_detr', only_feat, teacher_layers=3)
    assert model.distill_terms['detr'].loss_keys == ['loss_kd_detr_feat']


@pytest.mark.parametrize('student, teacher, match', [
    (tiny_faster_rcnn(), tiny_dino(), 'is not a DETR-family detector'),
    (tiny_dino(num_classes=3), tiny_dino(num_classes=4), '3 and 4 classes'),
    (tiny_deformable_detr(), tiny_deformable_detr(decoder_layers=3),
     "teacher_layer='same' matches decoder layers by index, but the "
     'student has 2 and the teacher 3'),
    (tiny_deformable_detr(dims=32), tiny_deformable_detr(dims=64),
     'loss_feat compares the necks level by level'),
])
def test_bad_pairs_fail_at_build(student, teacher, match):
    with pytest.raises(ValueError, match=match):
        build_distiller('det', TERM, student=student, teacher=teacher)


@pytest.mark.parametrize('extra, error, match', [
    (dict(student='decoder'), KeyError, 'takes no `student` path'),
    (dict(loss_match=None, loss_feat=None), ValueError, 'both None'),
    (dict(teacher_layer='first'), ValueError, 'teacher_layer must be one'),
    (dict(loss=dict(type='PKDLoss')), KeyError, r"unknown key\(s\)"),
])
def test_bad_options_fail_at_build(extra, error, match):
    terms = dict(detr=dict(TERM['detr'], **extra))
    with pytest.raises(error, match=match):
        _distiller('deformable_detr', terms)


def test_a_training_teacher_is_refused():
    with pytest.raises(ValueError, match="mode 'detr_distill' needs a "
                       'frozen teacher'):
        _distiller('dino', teacher_trainable=True, teacher_ckpt=None)
