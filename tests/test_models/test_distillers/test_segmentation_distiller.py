"""SegmentationDistiller on tiny real mmseg models."""
import torch

from tests.conftest import build_distiller, tiny_pspnet

CWD_LOGITS = dict(logits=dict(
    student='decode_head.conv_seg', teacher='decode_head.conv_seg',
    loss=dict(type='ChannelWiseDivergence', tau=1.0, loss_weight=3.0)))


def test_loss_keys_and_grads(seg_batch):
    torch.manual_seed(0)
    model = build_distiller('seg', CWD_LOGITS, teacher=tiny_pspnet(64))
    model.train()
    data = model.data_preprocessor(seg_batch, True)
    losses = model(**data, mode='loss')
    assert 'loss_kd_logits' in losses
    assert 'decode.loss_ce' in losses and 'aux.loss_ce' in losses
    total, _ = model.parse_losses(losses)
    total.backward()
    assert model.student.decode_head.conv_seg.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not model.teacher.training


def test_teacher_skips_auxiliary_head_and_predict_is_student(seg_batch):
    model = build_distiller('seg', dict(feat=dict(
        student='backbone', teacher='backbone',
        loss=dict(type='ATLoss', loss_weight=10.0))))
    calls = []
    model.teacher.decode_head.register_forward_hook(
        lambda *a: calls.append(1))
    model.train()
    losses = model(**model.data_preprocessor(seg_batch, True), mode='loss')
    assert sorted(k for k in losses if 'kd' in k) == [
        f'loss_kd_feat_l{i}' for i in range(4)]
    assert calls == []
    model.eval()
    data = model.data_preprocessor(seg_batch, False)
    with torch.no_grad():
        ours = model(**data, mode='predict')
        ref = model.student(**data, mode='predict')
    torch.testing.assert_close(ours[0].seg_logits.data,
                               ref[0].seg_logits.data)


def test_segmentor_rejected_by_detection_distiller():
    import pytest

    from tests.conftest import tiny_faster_rcnn
    with pytest.raises(TypeError, match='mmseg segmentor as teacher'):
        build_distiller('seg', CWD_LOGITS,
                        teacher=dict(tiny_faster_rcnn(), _scope_='mmdet'))


def test_auxiliary_head_logits_can_be_distilled(seg_batch):
    """mmseg runs auxiliary heads only in loss mode; the teacher runs them."""
    model = build_distiller('seg', dict(aux=dict(
        student='auxiliary_head.conv_seg', teacher='auxiliary_head.conv_seg',
        loss=dict(type='DISTLoss'))))
    model.train()
    losses = model(**model.data_preprocessor(seg_batch, True), mode='loss')
    assert losses['loss_kd_aux'].item() > 0


def test_seg_teacher_with_other_channel_order_gets_flipped_input():
    # mmseg's SegDataPreProcessor keeps bgr_to_rgb as channel_conversion
    # (mmdet's as _channel_conversion): a teacher trained on BGR input
    # must get the student's RGB batch flipped back
    teacher = tiny_pspnet(64)
    teacher['data_preprocessor'] = dict(size=(64, 64), bgr_to_rgb=False)
    model = build_distiller('seg', CWD_LOGITS, teacher=teacher)
    s = model.student.data_preprocessor
    assert s.channel_conversion
    raw = torch.rand(1, 3, 16, 16) * 255
    x_s = (raw.flip(1) - s.mean) / s.std
    t = model.teacher.data_preprocessor
    x_t = (raw - t.mean) / t.std
    torch.testing.assert_close(model._teacher_inputs(x_s), x_t,
                               atol=1e-4, rtol=1e-4)
