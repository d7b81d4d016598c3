"""Head-level terms of DetectionDistiller: RoI KD (mode='roi'), LD (mode='ld'),
and FGD's inheriting strategy (init_student)."""
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_distiller, tiny_faster_rcnn

ROI_KD = dict(roi=dict(mode='roi', student='roi_head', teacher='roi_head',
                       loss=dict(type='RoIKDLoss', tau=2.0,
                                 loss_weight_fg=1.0, loss_weight_bg=0.5,
                                 loss_weight_bbox=1.0)))
LD_KD = dict(ld=dict(
    mode='ld', student='bbox_head', teacher='bbox_head',
    loss=dict(type='mmdet.KnowledgeDistillationKLDivLoss', loss_weight=0.25,
              T=10),
    loss_cls=dict(type='mmdet.KnowledgeDistillationKLDivLoss',
                  loss_weight=0.5, T=10)))


def tiny_gfl(fpn_channels: int = 64, num_classes: int = 3) -> dict:
    """GFL R18-FPN spec with a narrow one-conv head and no pretraining."""
    c = fpn_channels
    return dict(
        config='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        backbone=dict(depth=18, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=c),
        bbox_head=dict(in_channels=c, feat_channels=c, stacked_convs=1,
                       num_classes=num_classes))


def preprocess(model, batch):
    return model.data_preprocessor(batch, True)


def small_rcnn_sampling(spec: dict) -> dict:
    """Fewer proposals and RoIs per image: same code paths, faster on CPU."""
    return dict(spec, train_cfg=dict(
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))))


@pytest.fixture(scope='module')
def roi_distiller():
    torch.manual_seed(0)
    return build_distiller('det', ROI_KD,
                           student=small_rcnn_sampling(tiny_faster_rcnn(64)),
                           teacher=tiny_faster_rcnn(32))


@pytest.fixture
def roi_model(roi_distiller):
    """The module's RoI-KD distiller, in train mode, without hooks/grads."""
    handles = []
    roi_distiller.handles = handles
    roi_distiller.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    yield roi_distiller.train()
    for h in handles:
        h.remove()
    roi_distiller.zero_grad(set_to_none=True)


def hook(model, module, fn):
    """Register a forward hook removed after the test."""
    model.handles.append(module.register_forward_hook(fn))


def test_roi_teacher_and_student_score_the_same_proposals(det_batch,
                                                          roi_model):
    model = roi_model
    rois_s, rois_t, calls = [], [], {'rpn': 0}
    hook(model, model.student.roi_head.bbox_roi_extractor,
         lambda mod, args, out: rois_s.append(args[1].clone()))
    hook(model, model.teacher.roi_head.bbox_roi_extractor,
         lambda mod, args, out: rois_t.append(args[1].clone()))
    hook(model, model.teacher.rpn_head,
         lambda *a: calls.__setitem__('rpn', calls['rpn'] + 1))
    losses = model(**preprocess(model, det_batch), mode='loss')
    assert 'loss_kd_roi' in losses and torch.isfinite(losses['loss_kd_roi'])
    assert len(rois_s) == 1 and len(rois_t) == 1
    assert rois_s[0].shape[1] == 5 and rois_s[0].shape[0] > 0
    torch.testing.assert_close(rois_t[0], rois_s[0], rtol=0, atol=0)
    # the teacher stopped after its features: no RPN, no proposals of its own
    assert calls['rpn'] == 0


def test_roi_kd_value_matches_a_direct_computation(det_batch, roi_model):
    model = roi_model
    seen, rois, loss_args = {}, [], []
    hook(model, model.student.roi_head.bbox_head,
         lambda mod, args, out: seen.update(cls=out[0], bbox=out[1]))
    hook(model, model.student.roi_head.bbox_roi_extractor,
         lambda mod, args, out: rois.append(args[1].clone()))
    hook(model, model.distill_terms['roi'].losses[0],
         lambda mod, args, out: loss_args.append(args))
    data = preprocess(model, det_batch)
    value = model(**data, mode='loss')['loss_kd_roi']
    # the teacher run by hand on the student's RoIs
    with torch.no_grad():
        feats = model.teacher.extract_feat(data['inputs'])
        out_t = model.teacher.roi_head._bbox_forward(feats, rois[0])
    cls_s, cls_t, labels, bbox_s, bbox_t = loss_args[0]
    assert cls_s is seen['cls'] and bbox_s is seen['bbox']
    torch.testing.assert_close(cls_t, out_t['cls_score'])
    torch.testing.assert_close(bbox_t, out_t['bbox_pred'])
    # sampling labels: positives first in each image, then background (3)
    num_classes = 3
    fg, bg = labels < num_classes, labels == num_classes
    assert fg.any() and bg.any() and bool((fg | bg).all())
    tau = 2.0
    kl = F.kl_div(F.log_softmax(cls_s / tau, 1),
                  F.softmax(out_t['cls_score'] / tau, 1),
                  reduction='none').sum(1) * tau**2
    d_s = bbox_s.view(len(labels), -1, 4)
    d_t = out_t['bbox_pred'].view(len(labels), -1, 4)
    idx = labels[fg].view(-1, 1, 1).expand(-1, 1, 4)
    l1 = (d_s[fg].gather(1, idx) - d_t[fg].gather(1, idx)).abs().mean()
    expected = kl[fg].mean() + 0.5 * kl[bg].mean() + l1
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)


def test_roi_kd_grads_reach_student_head_and_upstream_never_teacher(
        det_batch, roi_model):
    model = roi_model
    losses = model(**preprocess(model, det_batch), mode='loss')
    losses['loss_kd_roi'].backward()
    head = model.student.roi_head.bbox_head
    assert head.fc_cls.weight.grad.abs().sum() > 0
    assert head.fc_reg.weight.grad.abs().sum() > 0
    assert head.shared_fcs[0].weight.grad.abs().sum() > 0
    # through the RoI features into the neck and backbone
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert model.student.backbone.layer4[0].conv1.weight.grad is not None
    # proposals are detached: the RPN gets nothing from this term
    assert model.student.rpn_head.rpn_cls.weight.grad is None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_roi_mode_validation():
    from tests.conftest import tiny_retinanet
    with pytest.raises(ValueError, match='not an mmdet RoI head'):
        build_distiller('det', ROI_KD, student=tiny_retinanet(32),
                        teacher=tiny_faster_rcnn(32))
    with pytest.raises(ValueError, match='3 and 5 classes'):
        build_distiller('det', ROI_KD,
                        teacher=tiny_faster_rcnn(32, num_classes=5))
    with pytest.raises(KeyError, match="unknown key.*'levels'"):
        build_distiller('det', dict(roi=dict(ROI_KD['roi'], levels=[0])))
    with pytest.raises(ValueError, match="unknown mode 'rio'"):
        build_distiller('det', dict(roi=dict(ROI_KD['roi'], mode='rio')))


@pytest.fixture(scope='module')
def ld_distiller():
    torch.manual_seed(0)
    return build_distiller('det', LD_KD, student=tiny_gfl(64),
                           teacher=tiny_gfl(64))


@pytest.fixture
def ld_model(ld_distiller):
    ld_distiller.zero_grad(set_to_none=True)
    yield ld_distiller.train()
    ld_distiller.zero_grad(set_to_none=True)


def test_ld_matches_mmdet_ld_head(det_batch, ld_model):
    """Our LD term gives mmdet LDHead's loss_ld on the same tensors."""
    from mmdet.models.dense_heads import LDHead
    from mmdet.registry import MODELS as MMDET_MODELS

    from visionkd.utils import resolve_model_cfg
    model = ld_model
    data = preprocess(model, det_batch)
    losses = model(**data, mode='loss')
    head = model.student.bbox_head
    cfg = resolve_model_cfg(tiny_gfl(64), 'mmdet', 'student')
    ld_cfg = dict(cfg['bbox_head'], type='LDHead',
                  train_cfg=cfg['train_cfg'],
                  loss_ld=dict(type='KnowledgeDistillationKLDivLoss',
                               loss_weight=0.25, T=10))
    ld_head = MMDET_MODELS.build(ld_cfg)
    assert isinstance(ld_head, LDHead)
    ld_head.load_state_dict(head.state_dict())
    ld_head.train()
    with torch.no_grad():
        x = model.student.extract_feat(data['inputs'])
        t_out = model.teacher.bbox_head(model.teacher.extract_feat(
            data['inputs']))
        ref = ld_head.loss(x, t_out, data['data_samples'])['loss_ld']
    ours = [losses[f'loss_kd_ld_l{i}'] for i in range(5)]
    assert sum(r.item() for r in ref) > 0
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-7)
    # class KD: positive locations only, finite
    assert all(torch.isfinite(losses[f'loss_kd_ld_cls_l{i}'])
               for i in range(5))


def test_ld_grads_reach_student_head_never_teacher(det_batch, ld_model):
    model = ld_model
    losses = model(**preprocess(model, det_batch), mode='loss')
    kd = sum(v for k, v in losses.items() if k.startswith('loss_kd_ld'))
    kd.backward()
    head = model.student.bbox_head
    assert head.gfl_reg.weight.grad.abs().sum() > 0
    assert head.gfl_cls.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_ld_mode_validation():
    with pytest.raises(ValueError, match='not a GFLHead'):
        build_distiller('det', LD_KD, teacher=tiny_faster_rcnn(64),
                        student=tiny_gfl(64))
    with pytest.raises(ValueError, match='num_classes'):
        build_distiller('det', LD_KD, student=tiny_gfl(64),
                        teacher=tiny_gfl(64, num_classes=4))


def test_init_student_inherits_matching_teacher_weights(tmp_path):
    from mmengine.runner import load_checkpoint

    from visionkd.registry import MODELS
    from visionkd.utils import resolve_model_cfg
    teacher_spec = tiny_faster_rcnn(64)
    teacher_spec['roi_head']['bbox_head']['fc_out_channels'] = 32
    torch.manual_seed(1)
    teacher = MODELS.build(resolve_model_cfg(teacher_spec, 'mmdet',
                                             'teacher'))
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=teacher.state_dict()), path)
    terms = dict(fpn=dict(student='neck', teacher='neck',
                          loss=dict(type='PKDLoss')))
    t_state = teacher.state_dict()

    def check(model, inherited: bool):
        s = model.student.state_dict()
        same = torch.equal(s['neck.fpn_convs.0.conv.weight'],
                           t_state['neck.fpn_convs.0.conv.weight'])
        assert same == inherited
        assert torch.equal(s['rpn_head.rpn_cls.weight'],
                           t_state['rpn_head.rpn_cls.weight']) == inherited
        # the backbone is never inherited, other shapes are kept
        assert not torch.equal(s['backbone.conv1.weight'],
                               t_state['backbone.conv1.weight'])
        assert s['roi_head.bbox_head.shared_fcs.0.weight'].shape != \
            t_state['roi_head.bbox_head.shared_fcs.0.weight'].shape

    model = build_distiller('det', terms, teacher=teacher_spec,
                            teacher_ckpt=str(path), init_student=True)
    check(model, inherited=True)
    # the runner's init_weights() would re-initialise the student: inherit
    # again afterwards
    model.init_weights()
    check(model, inherited=True)
    # resume / load_from load after init_weights: their weights win
    with torch.no_grad():
        for p in model.student.neck.parameters():
            p.add_(1.0)
    ckpt = tmp_path / 'iter_1.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    expected = model.student.neck.fpn_convs[0].conv.weight.clone()
    # the runner's order on --resume: init_weights() (inherits again), then
    # the checkpoint
    model.init_weights()
    check(model, inherited=True)
    load_checkpoint(model, str(ckpt), map_location='cpu', logger='silent')
    torch.testing.assert_close(model.student.neck.fpn_convs[0].conv.weight,
                               expected)
