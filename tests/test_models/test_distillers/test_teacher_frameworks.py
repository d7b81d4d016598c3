"""A teacher at its own input scale, online (mutual), EMA and self
teachers."""
import copy

import pytest
import torch
import torch.nn as nn

from tests.conftest import tiny_faster_rcnn, tiny_pspnet
from visionkd.models.distillers.ema_teacher import ema_update
from visionkd.models.distillers.teacher_input import scale_data_samples
from visionkd.registry import MODELS

CWD = dict(type='ChannelWiseDivergence', tau=1.0, loss_weight=1.0)
LOGITS = dict(logits=dict(student='decode_head.conv_seg',
                          teacher='decode_head.conv_seg', loss=CWD))


def _seg(terms=LOGITS, **kwargs):
    kwargs.setdefault('teacher', tiny_pspnet(32))
    return MODELS.build(dict(
        type='visionkd.SegmentationDistiller', student=tiny_pspnet(32),
        distill_terms=copy.deepcopy(terms), **copy.deepcopy(kwargs)))


def _sgd_step(model, batch, lr=0.1):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    losses = model.loss(**model.data_preprocessor(batch, True))
    total, _ = model.parse_losses(losses)
    opt.zero_grad()
    total.backward()
    opt.step()
    return losses


# --------------------------------------------------------- teacher input
def test_teacher_at_2x_gets_a_2x_batch(seg_batch):
    model = _seg(teacher_input=dict(scale_factor=2.0))
    seen = []
    model.teacher.backbone.register_forward_hook(
        lambda m, args, out: seen.append(tuple(args[0].shape)))
    model.train()
    losses = model.loss(**model.data_preprocessor(seg_batch, True))
    assert seen == [(2, 3, 128, 128)]
    assert torch.isfinite(losses['loss_kd_logits'])
    # the teacher's 16x16 logits are resized to the student's 8x8 by an
    # inferred, parameter-free teacher connector
    chain = model.distill_terms['logits'].teacher_connectors[0]
    assert [type(c).__name__ for c in chain] == ['ResizeConnector']


def test_scaled_data_samples_scale_boxes_metas_and_masks(det_batch):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = det_batch['data_samples']
    for s in samples:
        s.set_metainfo(dict(batch_input_shape=(96, 128)))
    scaled = scale_data_samples(samples, 1.5, (96, 128))
    assert scaled[0].img_shape == (144, 192)
    assert scaled[0].batch_input_shape == (144, 192)
    torch.testing.assert_close(scaled[0].gt_instances.bboxes,
                               samples[0].gt_instances.bboxes * 1.5)
    seg = SegDataSample(metainfo=dict(img_shape=(2, 2)))
    seg.gt_sem_seg = PixelData(data=torch.tensor([[[1, 2], [3, 4]]]))
    out = scale_data_samples([seg], 2.0, (2, 2))[0]
    assert out.gt_sem_seg.data.tolist() == [[[1, 1, 2, 2], [1, 1, 2, 2],
                                             [3, 3, 4, 4], [3, 3, 4, 4]]]
    assert seg.gt_sem_seg.data.shape == (1, 2, 2)  # the input is untouched


def test_scaled_batch_is_rounded_to_the_teachers_divisor():
    """A 1.5x batch of 180 x 240 is 270 x 360; a teacher padding to 8
    (DDRNet's stride-8 sum) gets 272 x 360, and the metas and masks follow
    the size used; the divisor is read from the teacher's preprocessor."""
    from mmengine.structures import PixelData
    from mmseg.models import SegDataPreProcessor
    from mmseg.structures import SegDataSample

    from visionkd.models.distillers.teacher_input import (
        input_divisor,
        scale_inputs,
    )
    x = torch.rand(1, 3, 180, 240)
    assert tuple(scale_inputs(x, 1.5).shape[-2:]) == (270, 360)
    assert tuple(scale_inputs(x, 1.5, 8).shape[-2:]) == (272, 360)
    seg = SegDataSample(metainfo=dict(img_shape=(180, 240)))
    seg.gt_sem_seg = PixelData(data=torch.zeros(1, 180, 240,
                                                dtype=torch.uint8))
    out = scale_data_samples([seg], 1.5, (180, 240), 8)[0]
    assert out.img_shape == (272, 360)
    assert out.gt_sem_seg.data.shape == (1, 272, 360)

    class Model(nn.Module):
        def __init__(self, dp):
            super().__init__()
            self.data_preprocessor = dp
    assert input_divisor(Model(SegDataPreProcessor(
        size=(180, 240), test_cfg=dict(size_divisor=8)))) == 8
    assert input_divisor(Model(SegDataPreProcessor(size_divisor=16))) == 16
    assert input_divisor(Model(SegDataPreProcessor(size=(8, 8)))) == 1
    assert input_divisor(nn.Linear(1, 1)) == 1


def test_head_modes_reject_a_scaled_teacher():
    with pytest.raises(ValueError, match="mode 'roi' feeds the student's "
                                         'boxes.*drop input'):
        MODELS.build(dict(
            type='visionkd.DetectionDistiller', student=tiny_faster_rcnn(32),
            teacher=tiny_faster_rcnn(32),
            teacher_input=dict(scale_factor=1.5),
            distill_terms=dict(roi=dict(mode='roi', student='roi_head',
                                        teacher='roi_head',
                                        loss=dict(type='RoIKDLoss')))))


def test_detection_teacher_at_1_5x_on_the_fpn(det_batch):
    model = MODELS.build(dict(
        type='visionkd.DetectionDistiller', student=tiny_faster_rcnn(32),
        teacher=tiny_faster_rcnn(32), teacher_input=dict(scale_factor=1.5),
        distill_terms=dict(fpn=dict(student='neck', teacher='neck',
                                    loss=dict(type='PKDLoss')))))
    model.train()
    losses = model.loss(**model.data_preprocessor(det_batch, True))
    assert sum(k.startswith('loss_kd_fpn') for k in losses) == 5


# ---------------------------------------------------------------- online
def test_online_teacher_trains_and_frozen_never_does(seg_batch):
    torch.manual_seed(0)
    online = _seg(teacher_trainable=True)
    frozen = _seg()
    for model in (online, frozen):
        model.train()
        before = {k: v.clone() for k, v in
                  model.teacher.state_dict().items()}
        losses = _sgd_step(model, seg_batch)
        after = model.teacher.state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])
                   and after[k].is_floating_point()]
        if model is online:
            assert 'teacher.decode.loss_ce' in losses
            assert any('conv_seg.weight' in k for k in changed)
        else:
            assert changed == []
    keys = online.state_dict().keys()
    assert any(k.startswith('online_teachers.teacher.') for k in keys)
    assert not any(k.startswith('online_teachers') for k in
                   frozen.state_dict())


def test_mutual_learning_term_trains_only_the_teacher(seg_batch):
    terms = dict(**LOGITS, back=dict(
        student='decode_head.conv_seg', teacher='decode_head.conv_seg',
        direction='student_to_teacher', loss=CWD))
    model = _seg(terms, teacher_trainable=True)
    model.train()
    losses = model.loss(**model.data_preprocessor(seg_batch, True))
    losses['loss_kd_back'].backward()
    s_grad = model.student.decode_head.conv_seg.weight.grad
    t_grad = model.teacher.decode_head.conv_seg.weight.grad
    assert s_grad is None
    assert t_grad is not None and t_grad.abs().sum() > 0


def test_student_to_teacher_needs_a_trainable_teacher():
    terms = dict(back=dict(student='decode_head.conv_seg',
                           teacher='decode_head.conv_seg',
                           direction='student_to_teacher', loss=CWD))
    with pytest.raises(ValueError, match='needs one teacher that trains'):
        _seg(terms)


def test_trainable_teacher_entry_needs_an_explicit_ckpt():
    with pytest.raises(KeyError, match='a trainable teacher needs `ckpt`'):
        MODELS.build(dict(
            type='visionkd.SegmentationDistiller', student=tiny_pspnet(32),
            teachers=dict(peer=dict(model=tiny_pspnet(32), trainable=True)),
            distill_terms=LOGITS))
    with pytest.raises(ValueError, match='starts from scratch'):
        _seg(teacher_trainable=True, init_student=True)


def test_online_state_roundtrip_is_exact(seg_batch):
    torch.manual_seed(0)
    model = _seg(teacher_trainable=True)
    model.train()
    _sgd_step(model, seg_batch)
    twin = _seg(teacher_trainable=True)
    twin.load_state_dict(model.state_dict(), strict=True)
    for a, b in zip(model.teacher.state_dict().values(),
                    twin.teacher.state_dict().values()):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------- EMA
@pytest.mark.parametrize('warmup', [True, False])
def test_ema_teacher_follows_the_formula(seg_batch, warmup):
    """theta' <- d_t theta' + (1 - d_t) theta; d_t = 0.6 without the
    ramp, min(0.6, 1 - 1 / (t + 1)) = 0.5, 0.6, 0.6 with it (the mean
    teacher's code)."""
    torch.manual_seed(0)
    decay = 0.6
    model = _seg(teacher=dict(kind='ema', decay=decay, warmup=warmup))
    model.train()
    w = model.student.decode_head.conv_seg.weight
    ema = model.teacher.decode_head.conv_seg.weight.detach().clone()
    torch.testing.assert_close(ema, w.detach())  # starts as the student
    decays = [0.5, 0.6, 0.6] if warmup else [0.6] * 3
    for d in decays:
        expected = d * ema + (1 - d) * w.detach()
        _sgd_step(model, seg_batch)  # update with the weights, then step
        ema = expected
        torch.testing.assert_close(
            model.teacher.decode_head.conv_seg.weight, expected)
    assert not torch.allclose(ema, w.detach())
    assert model.teacher.decode_head.conv_seg.weight.grad is None
    assert int(model._teachers['teacher'].steps) == 3


def test_ema_state_in_checkpoint_and_resume_exact(seg_batch):
    torch.manual_seed(0)
    cfg = dict(teacher=dict(kind='ema', decay=0.5))
    model = _seg(**cfg)
    model.train()
    _sgd_step(model, seg_batch)
    state = copy.deepcopy(model.state_dict())
    assert 'ema_teachers.teacher._steps' in state
    assert not any(k.startswith('ema_teachers') for k, _ in
                   model.named_parameters())
    twin = _seg(**cfg)
    twin.load_state_dict(state, strict=True)
    twin.train()
    torch.manual_seed(1)
    _sgd_step(model, seg_batch)
    torch.manual_seed(1)
    _sgd_step(twin, seg_batch)
    for a, b in zip(model.teacher.state_dict().values(),
                    twin.teacher.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_ema_decay_ramp_by_hand():
    from visionkd.models.distillers.ema_teacher import ema_decay
    assert [ema_decay(0.999, k) for k in range(3)] == pytest.approx(
        [0.5, 2 / 3, 0.75], rel=1e-12)
    assert ema_decay(0.999, 10_000) == 0.999  # 1 - 1/10002 > 0.999
    assert ema_decay(0.999, 0, warmup=False) == 0.999
    with pytest.raises(ValueError, match="warmup is for kind='ema'"):
        MODELS.build(dict(
            type='visionkd.SegmentationDistiller', student=tiny_pspnet(32),
            teachers=dict(t=dict(model=tiny_pspnet(32), warmup=True)),
            distill_terms=copy.deepcopy(LOGITS)))
    with pytest.raises(ValueError, match=r"drop \['warmup'\]"):
        _seg(teacher=dict(kind='self', warmup=False))


def test_ema_update_copies_buffers():
    src, dst = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    src.running_mean.fill_(3.0)
    src.weight.data.fill_(2.0)
    ema_update(dst, src, 0.75)
    assert dst.running_mean.tolist() == [3.0, 3.0]
    torch.testing.assert_close(dst.weight.data, torch.full((2, ), 1.25))


def test_ema_teacher_bad_settings():
    with pytest.raises(ValueError, match='decay must be in'):
        _seg(teacher=dict(kind='ema', decay=1.5))
    with pytest.raises(ValueError, match='cannot be trainable'):
        _seg(teacher=dict(kind='ema'), teacher_trainable=True)


def test_ema_teacher_rejects_a_non_float_student():
    from mmengine.model import BaseModel

    from visionkd.models.distillers.ema_teacher import make_ema_teacher

    class IntStudent(BaseModel):
        def __init__(self):
            super().__init__()
            self.steps = torch.nn.Parameter(torch.zeros(1, dtype=torch.long),
                                            requires_grad=False)

        def forward(self, *args, **kwargs):
            return self.steps

    with pytest.raises(TypeError, match='not floating point.*frozen '
                                        'teacher'):
        make_ema_teacher(IntStudent(), 'teacher')


# ------------------------------------------------------------------ self
def test_self_distillation_auxiliary_head_learns_from_decode_head(
        seg_batch):
    torch.manual_seed(0)
    terms = dict(aux=dict(student='auxiliary_head.conv_seg',
                          teacher='decode_head.conv_seg', loss=CWD))
    model = _seg(terms, teacher='self')
    assert model.teacher is model.student
    model.train()
    assert model.student.training  # 'self' never puts the student in eval
    model.eval()  # no dropout: the by-hand forward below is the same
    data = model.data_preprocessor(seg_batch, True)
    losses = model.loss(**data)
    # by hand: the same forward's decode logits (detached) teach the aux's
    student = model.student
    feats = student.extract_feat(data['inputs'])
    expected = MODELS.build(CWD)(student.auxiliary_head.forward(feats),
                                 student.decode_head.forward(feats))
    torch.testing.assert_close(losses['loss_kd_aux'], expected)
    losses['loss_kd_aux'].backward()
    assert student.auxiliary_head.conv_seg.weight.grad.abs().sum() > 0
    assert student.decode_head.conv_seg.weight.grad is None
