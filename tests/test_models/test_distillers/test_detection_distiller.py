"""DetectionDistiller on tiny real mmdet models."""
import pytest
import torch
import torch.nn as nn

from tests.conftest import build_distiller, tiny_faster_rcnn, tiny_retinanet

PKD_FPN = dict(fpn=dict(student='neck', teacher='neck',
                        loss=dict(type='PKDLoss', loss_weight=2.0)))


def preprocess(model, batch):
    return model.data_preprocessor(batch, True)


def test_loss_keys_grads_and_frozen_teacher(det_batch):
    torch.manual_seed(0)
    model = build_distiller(
        'det', dict(fpn=dict(student='neck', teacher='neck',
                             connector=dict(type='ConvConnector'),
                             loss=dict(type='FeatureMSELoss'),
                             level_weights=[1, 1, 1, 0.5, 0.5])),
        teacher=tiny_faster_rcnn(32))
    model.train()
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    data = preprocess(model, det_batch)
    losses = model(**data, mode='loss')
    kd_keys = sorted(k for k in losses if k.startswith('loss_kd_'))
    assert kd_keys == [f'loss_kd_fpn_l{i}' for i in range(5)]
    # the student's task losses are reported unchanged
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'):
        assert key in losses
    total, _ = model.parse_losses(losses)
    total.backward()
    assert model.student.backbone.layer4[0].conv1.weight.grad is not None
    conn = model.distill_terms['fpn'].connectors[0][0]
    assert conn.conv.conv.weight.grad is not None
    assert conn.conv.conv.weight.shape[:2] == (32, 64)  # inferred channels
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_teacher_outside_state_dict_parameters_and_optimizer():
    from mmengine.optim import build_optim_wrapper
    model = build_distiller('det', PKD_FPN)
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert teacher_ids
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert not any(k.startswith('teacher.') for k in model.state_dict())
    assert any(k.startswith('student.') for k in model.state_dict())
    optim = build_optim_wrapper(
        model, dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)))
    in_optim = {id(p) for g in optim.optimizer.param_groups
                for p in g['params']}
    assert not teacher_ids & in_optim
    assert {id(p) for p in model.student.parameters()} <= in_optim


def test_teacher_stops_after_recorded_layers(det_batch):
    model = build_distiller('det', PKD_FPN)
    calls = {'neck': 0, 'rpn': 0, 'roi': 0}
    model.teacher.neck.register_forward_pre_hook(
        lambda *a: calls.__setitem__('neck', calls['neck'] + 1))
    model.teacher.rpn_head.register_forward_hook(
        lambda *a: calls.__setitem__('rpn', calls['rpn'] + 1))
    model.teacher.roi_head.bbox_head.register_forward_hook(
        lambda *a: calls.__setitem__('roi', calls['roi'] + 1))
    model.train()
    model(**preprocess(model, det_batch), mode='loss')
    assert calls == {'neck': 1, 'rpn': 0, 'roi': 0}


def test_levels_select_a_subset_of_fpn_levels(det_batch):
    model = build_distiller('det', dict(p2_p5=dict(
        student='neck', teacher='neck', levels=[0, 1, 2, 3],
        level_weights=[1, 1, 1, 2], loss=dict(type='PKDLoss'))))
    assert len(model.distill_terms['p2_p5'].losses) == 4
    model.train()
    losses = model(**preprocess(model, det_batch), mode='loss')
    assert sorted(k for k in losses if k.startswith('loss_kd')) == [
        f'loss_kd_p2_p5_l{i}' for i in range(4)]
    with pytest.raises(ValueError, match=r'levels \[7\] out of range'):
        build_distiller('det', dict(a=dict(student='neck', teacher='neck',
                                           levels=[0, 7],
                                           loss=dict(type='PKDLoss'))))


def test_distillation_can_be_switched_off(det_batch):
    model = build_distiller('det', PKD_FPN)
    model.distill_enabled = False
    losses = model(**preprocess(model, det_batch), mode='loss')
    assert not [k for k in losses if k.startswith('loss_kd')]


def test_predict_and_tensor_delegate_to_student(det_batch):
    model = build_distiller('det', PKD_FPN).eval()
    data = model.data_preprocessor(det_batch, False)
    with torch.no_grad():
        ours = model(**data, mode='predict')
        ref = model.student(**data, mode='predict')
        raw = model(**data, mode='tensor')
        raw_ref = model.student(**data, mode='tensor')
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.pred_instances.bboxes,
                                   b.pred_instances.bboxes)
    torch.testing.assert_close(raw[0][0], raw_ref[0][0])


def test_one_stage_shared_head_gives_one_level_per_call(det_batch):
    model = build_distiller(
        'det',
        dict(cls=dict(student='bbox_head.retina_cls',
                      teacher='bbox_head.retina_cls',
                      loss=dict(type='ChannelWiseDivergence', tau=2.0))),
        student=tiny_retinanet(32), teacher=tiny_retinanet(64))
    model.train()
    losses = model(**preprocess(model, det_batch), mode='loss')
    assert sorted(k for k in losses if 'kd' in k) == [
        f'loss_kd_cls_l{i}' for i in range(5)]
    assert all(torch.isfinite(v) for k, v in losses.items() if 'kd' in k)


def test_teacher_checkpoint_is_loaded(tmp_path):
    from visionkd.registry import MODELS
    from visionkd.utils import resolve_model_cfg
    torch.manual_seed(1)
    teacher = MODELS.build(resolve_model_cfg(tiny_faster_rcnn(64), 'mmdet',
                                             'teacher'))
    for p in teacher.parameters():
        nn.init.normal_(p)
    path = tmp_path / 'teacher.pth'
    # mmengine-style checkpoint with non-tensor meta (needs weights_only off)
    torch.save(dict(state_dict=teacher.state_dict(),
                    meta=dict(epoch=3, note=object.__name__)), path)
    model = build_distiller('det', PKD_FPN, teacher_ckpt=str(path))
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(model.teacher.state_dict()[k], v)


def test_teacher_gets_its_own_normalisation():
    teacher = tiny_faster_rcnn(64)
    teacher['data_preprocessor'] = dict(
        type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
        std=[1.0, 1.0, 1.0], bgr_to_rgb=False, pad_size_divisor=32)
    model = build_distiller('det', PKD_FPN, teacher=teacher)
    raw = torch.rand(1, 3, 32, 32) * 255
    rgb = raw.flip(1)
    s = model.student.data_preprocessor
    x_s = (rgb - s.mean) / s.std
    x_t = raw - torch.tensor([103.53, 116.28, 123.675]).view(1, 3, 1, 1)
    torch.testing.assert_close(model._teacher_inputs(x_s), x_t,
                               atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize('terms, exc, words', [
    (dict(a=dict(student='nek', teacher='neck', loss=dict(type='PKDLoss'))),
     ValueError, ["student layer 'nek'", 'neck']),
    (dict(a=dict(student='neck', teacher='neck.fpn_conv',
                 loss=dict(type='PKDLoss'))),
     ValueError, ["teacher layer 'neck.fpn_conv'", 'neck.fpn_convs']),
    (dict(a=dict(student='neck', teacher='neck',
                 loss=dict(type='FeatureMSELoss'))),
     ValueError, ["'a' level 0", '(1, 64, 32, 32)', '(1, 32, 32, 32)',
                  'ConvConnector']),
    (dict(a=dict(student='neck', teacher='backbone',
                 loss=dict(type='ATLoss'))),
     ValueError, ['5 level', '4']),
    (dict(a=dict(student='neck', teacher='neck',
                 loss=dict(type='PKDLos'))),
     KeyError, ["'PKDLos'", 'PKDLoss']),
    (dict(a=dict(student='neck', teacher='neck',
                 loss=dict(type='PKDLoss', resize_stu='yes', bogus=1))),
     TypeError, ["'a'", 'bogus']),
    (dict(a=dict(student='neck', teacher='neck', loss=dict(type='PKDLoss'),
                 wieght=2)),
     KeyError, ["'a'", 'wieght', 'weight']),
    (dict(a=dict(student='neck', teacher='neck', loss=dict(type='PKDLoss'),
                 level_weights=[1, 2])),
     ValueError, ["'a'", 'level_weights', '5 level']),
])
def test_build_time_validation(terms, exc, words):
    with pytest.raises(exc) as info:
        build_distiller('det', terms, teacher=tiny_faster_rcnn(32))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_loss_with_unfeedable_input_names_the_term():
    from visionkd.registry import MODELS

    @MODELS.register_module(force=True)
    class _AnchorNeedingLoss(nn.Module):

        def forward(self, preds_S, preds_T, anchors):
            return (preds_S - preds_T).sum()

    with pytest.raises(TypeError) as info:
        build_distiller('det', dict(odd=dict(
            student='neck', teacher='neck',
            loss=dict(type='_AnchorNeedingLoss'))))
    assert "'odd'" in str(info.value) and 'anchors' in str(info.value)
    MODELS.module_dict.pop('_AnchorNeedingLoss')


def test_teacher_checkpoint_errors(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        build_distiller('det', PKD_FPN, teacher_ckpt=missing)
    junk = tmp_path / 'junk.pth'
    junk.write_text('not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth'):
        build_distiller('det', PKD_FPN, teacher_ckpt=str(junk))
    other = tmp_path / 'other.pth'
    torch.save(dict(state_dict={'foo.weight': torch.zeros(1)}), other)
    with pytest.raises(ValueError, match='no weight of the teacher'):
        build_distiller('det', PKD_FPN, teacher_ckpt=str(other))


def test_task_mismatch_is_rejected():
    from tests.conftest import tiny_pspnet
    with pytest.raises(TypeError, match='mmdet detector as teacher'):
        build_distiller('det', PKD_FPN, teacher=dict(tiny_pspnet(),
                                                     _scope_='mmseg'))
