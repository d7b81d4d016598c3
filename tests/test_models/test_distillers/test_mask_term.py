"""Mask-head KD of DetectionDistiller (mode='mask') on a tiny Mask R-CNN."""
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_distiller, tiny_faster_rcnn

MASK_RCNN = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
MASK_KD = dict(mask=dict(mode='mask', student='roi_head', teacher='roi_head',
                         T=2.0))
FPN_KD = dict(fpn=dict(student='neck', teacher='neck',
                       connector=dict(type='ConvConnector'),
                       loss=dict(type='FeatureMSELoss')))


def tiny_mask_rcnn(fpn_channels: int = 32, num_classes: int = 3) -> dict:
    """Mask R-CNN R18-FPN spec, narrow FPN/heads, few RoIs, no weights."""
    c = fpn_channels
    return dict(
        config=MASK_RCNN,
        backbone=dict(depth=18, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=c),
        rpn_head=dict(in_channels=c, feat_channels=c),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=c),
            bbox_head=dict(in_channels=c, fc_out_channels=64,
                           num_classes=num_classes),
            mask_roi_extractor=dict(out_channels=c),
            mask_head=dict(num_convs=1, in_channels=c, conv_out_channels=16,
                           num_classes=num_classes)),
        train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                       rcnn=dict(sampler=dict(num=64))))


@pytest.fixture
def mask_batch():
    """Two 96x128 images with boxes and bitmap masks of 3 classes."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    return demo_mm_inputs(batch_size=2, image_shapes=(3, 96, 128),
                          num_items=[3, 2], num_classes=3, with_mask=True)


def preprocess(model, batch):
    return model.data_preprocessor(batch, True)


@pytest.fixture(scope='module')
def mask_distiller():
    torch.manual_seed(0)
    return build_distiller('det', MASK_KD, student=tiny_mask_rcnn(32),
                           teacher=tiny_mask_rcnn(16))


@pytest.fixture
def mask_model(mask_distiller):
    """The module's mask-KD distiller in train mode, without hooks/grads."""
    handles = []
    mask_distiller.handles = handles
    mask_distiller.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    yield mask_distiller.train()
    for h in handles:
        h.remove()
    mask_distiller.zero_grad(set_to_none=True)


def hook(model, module, fn):
    model.handles.append(module.register_forward_hook(fn))


def test_mask_heads_see_the_same_positive_rois(mask_batch, mask_model):
    model = mask_model
    rois_s, rois_t, calls = [], [], {'rpn': 0, 'bbox': 0}
    hook(model, model.student.roi_head.mask_roi_extractor,
         lambda mod, args, out: rois_s.append(args[1].clone()))
    hook(model, model.teacher.roi_head.mask_roi_extractor,
         lambda mod, args, out: rois_t.append(args[1].clone()))
    hook(model, model.teacher.rpn_head,
         lambda *a: calls.__setitem__('rpn', calls['rpn'] + 1))
    hook(model, model.teacher.roi_head.bbox_head,
         lambda *a: calls.__setitem__('bbox', calls['bbox'] + 1))
    losses = model(**preprocess(model, mask_batch), mode='loss')
    assert 'loss_kd_mask' in losses and 'loss_mask' in losses
    assert torch.isfinite(losses['loss_kd_mask'])
    assert len(rois_s) == 1 and len(rois_t) == 1
    assert rois_s[0].shape[0] > 0
    torch.testing.assert_close(rois_t[0], rois_s[0], rtol=0, atol=0)
    # positives only: fewer than the sampled RoIs (64 per image)
    assert rois_s[0].shape[0] < 128
    # the teacher stopped after its neck: no RPN, no box head of its own
    assert calls == {'rpn': 0, 'bbox': 0}


def test_mask_kd_value_matches_a_direct_computation(mask_batch, mask_model):
    model = mask_model
    seen, rois, samplings = {}, [], []
    hook(model, model.student.roi_head.mask_head,
         lambda mod, args, out: seen.update(mask=out))
    hook(model, model.student.roi_head.mask_roi_extractor,
         lambda mod, args, out: rois.append(args[1].clone()))
    orig = model.student.roi_head.mask_loss

    def mask_loss(x, sampling_results, *args, **kwargs):
        samplings.append(sampling_results)
        return orig(x, sampling_results, *args, **kwargs)

    model.student.roi_head.mask_loss = mask_loss
    try:
        data = preprocess(model, mask_batch)
        value = model(**data, mode='loss')['loss_kd_mask']
    finally:
        del model.student.roi_head.mask_loss
    with torch.no_grad():
        feats = model.teacher.extract_feat(data['inputs'])
        mask_t = model.teacher.roi_head._mask_forward(
            feats, rois[0])['mask_preds']
    labels = torch.cat([r.pos_gt_labels for r in samplings[0]])
    mask_s = seen['mask']
    assert mask_s.shape == mask_t.shape and mask_s.shape[1:] == (3, 28, 28)
    assert len(labels) == len(mask_s) and labels.max() < 3
    T = 2.0
    idx = torch.arange(len(labels))
    s, t = mask_s[idx, labels] / T, torch.sigmoid(mask_t[idx, labels] / T)
    bce = -(t * F.logsigmoid(s) + (1 - t) * F.logsigmoid(-s))
    torch.testing.assert_close(value, bce.mean() * T * T, rtol=1e-5,
                               atol=1e-7)


def test_mask_kd_grads_reach_student_mask_head_never_teacher(mask_batch,
                                                             mask_model):
    model = mask_model
    losses = model(**preprocess(model, mask_batch), mode='loss')
    losses['loss_kd_mask'].backward()
    head = model.student.roi_head.mask_head
    assert head.conv_logits.weight.grad.abs().sum() > 0
    assert head.convs[0].conv.weight.grad.abs().sum() > 0
    # through the mask RoI features into the neck and backbone
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert model.student.backbone.layer4[0].conv1.weight.grad is not None
    # the box head and the RPN get nothing from this term
    assert model.student.roi_head.bbox_head.fc_cls.weight.grad is None
    assert model.student.rpn_head.rpn_cls.weight.grad is None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_feature_and_mask_terms_train_one_step(mask_batch):
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    model = build_distiller('det', {**FPN_KD, **MASK_KD},
                            student=tiny_mask_rcnn(32),
                            teacher=tiny_mask_rcnn(16))
    model.train()
    optim = build_optim_wrapper(
        model, dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)))
    before = model.student.roi_head.mask_head.conv_logits.weight.clone()
    teacher_before = [p.clone() for p in model.teacher.parameters()]
    losses = model.train_step(mask_batch, optim)
    for key in ['loss_kd_mask', 'loss_mask'] + [f'loss_kd_fpn_l{i}'
                                                for i in range(5)]:
        assert key in losses and torch.isfinite(losses[key]), key
    after = model.student.roi_head.mask_head.conv_logits.weight
    assert not torch.equal(before, after)
    assert all(torch.equal(a, b) for a, b in
               zip(teacher_before, model.teacher.parameters()))
    # the connector is the student's: in the state dict, not the teacher
    keys = model.state_dict().keys()
    assert any(k.startswith('distill_terms.fpn.') for k in keys)
    assert not any(k.startswith('teacher.') for k in keys)


def test_mask_mode_validation():
    with pytest.raises(ValueError, match="'mask'.*no mask head"):
        build_distiller('det', MASK_KD, student=tiny_faster_rcnn(32),
                        teacher=tiny_mask_rcnn(16))
    with pytest.raises(ValueError, match="teacher RoI head.*no mask head"):
        build_distiller('det', MASK_KD, student=tiny_mask_rcnn(16),
                        teacher=tiny_faster_rcnn(32))
    with pytest.raises(ValueError, match='3 and 5 classes.*same num_classes'):
        build_distiller('det', MASK_KD, student=tiny_mask_rcnn(16),
                        teacher=tiny_mask_rcnn(16, num_classes=5))
    with pytest.raises(KeyError, match="unknown key.*'loss'"):
        build_distiller('det', dict(mask=dict(
            MASK_KD['mask'], loss=dict(type='FeatureMSELoss'))))
    with pytest.raises(ValueError, match='T must be positive'):
        build_distiller('det', dict(mask=dict(MASK_KD['mask'], T=0)))
    agnostic = tiny_mask_rcnn(16)
    agnostic['roi_head']['mask_head']['class_agnostic'] = True
    with pytest.raises(ValueError, match='class-agnostic.*same class_agn'):
        build_distiller('det', MASK_KD, student=agnostic,
                        teacher=tiny_mask_rcnn(16))


def test_mask_sigmoid_kd_channels_and_no_positives():
    from visionkd.models.distillers.terms.mask_term import mask_sigmoid_kd
    torch.manual_seed(0)
    s = torch.randn(4, 3, 5, 5, requires_grad=True)
    t = torch.randn(4, 3, 5, 5)
    labels = torch.tensor([2, 0, 1, 2])
    value = mask_sigmoid_kd(s, t, labels, 1.0)
    idx = torch.arange(4)
    ref = F.binary_cross_entropy_with_logits(s[idx, labels],
                                             torch.sigmoid(t[idx, labels]))
    torch.testing.assert_close(value, ref)
    value.backward()
    # only the ground-truth class channel of each RoI gets a gradient
    hit = torch.zeros(4, 3, dtype=torch.bool)
    hit[idx, labels] = True
    assert (s.grad.abs().sum((2, 3)) > 0).eq(hit).all()
    # identical logits: the minimum, zero gradient
    s2 = t.clone().requires_grad_(True)
    mask_sigmoid_kd(s2, t, labels, 2.0).backward()
    assert s2.grad.abs().max() < 1e-6
    # no positive RoI: a zero that keeps the graph
    empty = torch.zeros(0, 3, 5, 5, requires_grad=True)
    zero = mask_sigmoid_kd(empty, empty.detach(), labels[:0], 1.0)
    assert zero.item() == 0 and zero.requires_grad
