"""KD-DETR's ``mode='detr_query'`` on tiny DINO and Deformable DETR."""
import pytest
import torch

from tests.conftest import (
    build_distiller,
    tiny_deformable_detr,
    tiny_dino,
    tiny_faster_rcnn,
)

QUERY = dict(query=dict(mode='detr_query', student='decoder',
                        teacher='decoder', num_random=7))
FAMILIES = {'dino': tiny_dino, 'deformable_detr': tiny_deformable_detr}


def _distiller(family, terms=QUERY, teacher_layers=3, **kwargs):
    spec = FAMILIES[family]
    torch.manual_seed(0)
    model = build_distiller('det', terms, student=spec(),
                            teacher=spec(decoder_layers=teacher_layers),
                            **kwargs)
    # as the runner does: DETRs hold uninitialised parameters (level_embed)
    # until init_weights; the frozen teacher was initialised at build
    model.init_weights()
    return model


def _teacher_call(model, det_batch):
    """The teacher's recorded decoder call on the batch (run_teacher)."""
    data = model.data_preprocessor(det_batch, True)
    model.records.clear()
    model.run_teacher(data['inputs'], data['data_samples'])
    term = model.distill_terms['query']
    (name, ) = term.source.targets
    (call, ) = model.records.of(name).levels(term.teacher_key)
    return data, term, call


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_teacher_queries_give_the_teacher_own_predictions(family, det_batch):
    """The specific points are the teacher's own decoder inputs: its
    outputs there equal its plain forward's (tensor mode, all layers)."""
    model = _distiller(family)
    data, term, call = _teacher_call(model, det_batch)
    specific, general = term.distillation_points(call)
    assert general['reference_points'].shape[1] == 7
    with torch.no_grad():
        cls_t, box_t = term.decode(model.teacher, call, specific,
                                   call['_return'])
        want_cls, want_box = model.teacher(
            data['inputs'], data['data_samples'], mode='tensor')
    torch.testing.assert_close(cls_t, want_cls)
    torch.testing.assert_close(box_t, want_box)
    # and replaying the decoder on them gives the same as the recorded run
    with torch.no_grad():
        again = term.decode(model.teacher, call, specific)
    torch.testing.assert_close(again[0], cls_t)


def test_random_points_equal_a_by_hand_dino_decoder_call(det_batch):
    """The general points through the teacher: zero content queries at
    sigmoid(N(0, 1)) boxes, no denoising mask, the teacher's memory."""
    model = _distiller('dino')
    _, term, call = _teacher_call(model, det_batch)
    torch.manual_seed(3)
    points = term.distillation_points(call)[1]
    torch.manual_seed(3)
    ref = points['reference_points']
    assert ref.shape == (2, 7, 4) and (ref[0] == ref[1]).all()
    torch.testing.assert_close(ref[0], torch.randn(7, 4).sigmoid())
    assert ((ref > 0) & (ref < 1)).all() and not points['query'].any()
    t = model.teacher
    with torch.no_grad():
        hidden, refs = t.decoder(
            query=points['query'], value=call['value'],
            key_padding_mask=call['key_padding_mask'], self_attn_mask=None,
            reference_points=ref, spatial_shapes=call['spatial_shapes'],
            level_start_index=call['level_start_index'],
            valid_ratios=call['valid_ratios'],
            reg_branches=t.bbox_head.reg_branches)
        want = t.bbox_head.forward(hidden, list(refs))
        got = term.decode(t, call, points)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert got[0].shape == (3, 2, 7, 3)  # teacher layers, images, points


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_gradients_reach_the_student_decoder_never_the_teacher(family,
                                                               det_batch):
    model = _distiller(family)
    model.train()
    data = model.data_preprocessor(det_batch, True)
    losses = model(**data, mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd')}
    assert set(kd) == {'loss_kd_query_cls', 'loss_kd_query_bbox'}
    assert all(torch.isfinite(v) and v > 0 for v in kd.values()), kd
    # the detection losses are the student's own (DINO: with denoising)
    assert 'loss_cls' in losses and 'd0.loss_bbox' in losses
    (kd['loss_kd_query_cls'] + kd['loss_kd_query_bbox']).backward()
    for part in ('decoder', 'encoder', 'backbone'):
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in getattr(model.student, part).parameters()), part
    assert all(p.grad is None for p in model.teacher.parameters())


def test_loss_is_the_losses_on_the_decoded_points(det_batch):
    """The term's value: every student layer vs the teacher's last layer,
    weighted by the teacher's confidence, both point sets summed."""
    model = _distiller('deformable_detr')
    model.train()
    data = model.data_preprocessor(det_batch, True)
    model.records.clear()
    model.run_teacher(data['inputs'], data['data_samples'])
    model.student.loss(data['inputs'], data['data_samples'])
    term = model.distill_terms['query']
    s_call = model.records.of('student').levels(term.student_key)[0]
    (name, ) = term.source.targets
    t_call = model.records.of(name).levels(term.teacher_key)[0]
    torch.manual_seed(5)
    got = term.compute([s_call], [t_call], None)
    torch.manual_seed(5)
    want_cls = want_box = 0
    for i, points in enumerate(term.distillation_points(t_call)):
        with torch.no_grad():
            cls_t, box_t = term.decode(model.teacher, t_call, points,
                                       t_call['_return'] if i == 0 else None)
        cls_s, box_s = term.decode(model.student, s_call, points)
        w = cls_t[-1].sigmoid().amax(-1)
        for layer in range(cls_s.shape[0]):  # 2 student layers
            want_cls = want_cls + term.loss_cls(cls_s[layer], cls_t[-1], w)
            want_box = want_box + term.loss_bbox(box_s[layer], box_t[-1], w)
    torch.testing.assert_close(got['cls'], want_cls)
    torch.testing.assert_close(got['bbox'], want_box)


def test_teacher_layer_same_pairs_layers_and_needs_equal_depths():
    terms = dict(query=dict(QUERY['query'], teacher_layer='same'))
    _distiller('deformable_detr', terms, teacher_layers=2)  # builds
    with pytest.raises(ValueError, match="teacher_layer='same' pairs "
                       'decoder layers by index, but the student has 2 and '
                       'the teacher 3'):
        _distiller('deformable_detr', terms, teacher_layers=3)


@pytest.mark.parametrize('student, teacher, match', [
    (tiny_faster_rcnn(), tiny_dino(), 'the student .* is not a DETR-family'),
    (tiny_deformable_detr(dims=32), tiny_deformable_detr(dims=64),
     '32 and 64 wide'),
    (tiny_deformable_detr(dims=256), tiny_dino(),
     '2-d and the teacher\'s 4-d reference points'),
    (tiny_dino(num_classes=3), tiny_dino(num_classes=4), '3 and 4 classes'),
])
def test_bad_pairs_fail_at_build(student, teacher, match):
    with pytest.raises(ValueError, match=match):
        build_distiller('det', QUERY, student=student, teacher=teacher)


@pytest.mark.parametrize('extra, match', [
    (dict(num_random=0, teacher_queries=False), 'no distillation point'),
    (dict(num_random=-1), 'num_random must be >= 0'),
    (dict(teacher_layer='first'), 'teacher_layer must be one of'),
    (dict(queries=3), r"unknown key\(s\) \['queries'\]"),
])
def test_bad_options_fail_at_build(extra, match):
    terms = dict(query=dict(QUERY['query'], **extra))
    with pytest.raises((ValueError, KeyError), match=match):
        _distiller('deformable_detr', terms)


def test_a_training_teacher_is_refused():
    """An online DINO teacher would add its own denoising queries to its
    decoder call: the mode needs a frozen teacher."""
    with pytest.raises(ValueError, match="mode 'detr_query' needs a frozen "
                       "teacher .* 'teacher' trains"):
        _distiller('dino', teacher_trainable=True, teacher_ckpt=None)
