"""Teacher checkpoints load strictly: a wrong file fails with what differs."""
import copy
import logging

import pytest
import torch

from tests.conftest import build_distiller, tiny_faster_rcnn
from visionkd.registry import MODELS
from visionkd.utils import resolve_model_cfg

PKD_FPN = dict(fpn=dict(student='neck', teacher='neck',
                           loss=dict(type='PKDLoss')))


def _teacher_ckpt(tmp_path, spec, seed=1):
    torch.manual_seed(seed)
    model = MODELS.build(resolve_model_cfg(copy.deepcopy(spec), 'mmdet',
                                           'teacher'))
    for p in model.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=3)), path)
    return str(path), model.state_dict()


def _deeper(spec):
    spec = copy.deepcopy(spec)
    spec['backbone']['depth'] = 34
    return spec


def test_right_checkpoint_loads_every_tensor(tmp_path):
    path, state = _teacher_ckpt(tmp_path, tiny_faster_rcnn(64))
    model = build_distiller('det', PKD_FPN, teacher_ckpt=path)
    for k, v in state.items():
        torch.testing.assert_close(model.teacher.state_dict()[k], v)


def test_shallower_checkpoint_for_a_deeper_teacher_fails(tmp_path):
    # The tracker case: an R50 checkpoint for an R101 teacher (here R18
    # for R34) would leave the extra blocks random.
    path, _ = _teacher_ckpt(tmp_path, tiny_faster_rcnn(64))
    with pytest.raises(ValueError) as info:
        build_distiller('det', PKD_FPN, teacher=_deeper(tiny_faster_rcnn(64)),
                        teacher_ckpt=path)
    msg = str(info.value)
    assert 'does not match the teacher (FasterRCNN)' in msg
    assert 'missing keys (backbone.layer1.2.' in msg
    assert '0 unexpected keys' in msg and '0 shape mismatches' in msg
    assert 'teacher_ckpt_strict=False' in msg and 'teacher.pth' in msg


def test_deeper_checkpoint_reports_unexpected_keys(tmp_path):
    path, _ = _teacher_ckpt(tmp_path, _deeper(tiny_faster_rcnn(64)))
    with pytest.raises(ValueError, match=r'0 missing keys; \d+ unexpected '
                       r'keys \(backbone\.layer1\.2\.'):
        build_distiller('det', PKD_FPN, teacher_ckpt=path)


def test_wrong_class_count_reports_shape_mismatch(tmp_path):
    path, _ = _teacher_ckpt(tmp_path, tiny_faster_rcnn(64, num_classes=5))
    with pytest.raises(ValueError) as info:
        build_distiller('det', PKD_FPN, teacher_ckpt=path)
    msg = str(info.value)
    assert '4 shape mismatches' in msg
    assert ('roi_head.bbox_head.fc_cls.weight: checkpoint (6, 64) vs '
            'teacher (4, 64)') in msg


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_not_strict_loads_matching_tensors_and_warns(tmp_path):
    from mmengine.logging import MMLogger
    path, state = _teacher_ckpt(tmp_path, tiny_faster_rcnn(64, 5))
    records = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(records)
    try:
        model = build_distiller('det', PKD_FPN, teacher_ckpt=path,
                                teacher_ckpt_strict=False)
    finally:
        logger.removeHandler(records)
    own = model.teacher.state_dict()
    torch.testing.assert_close(own['backbone.conv1.weight'],
                               state['backbone.conv1.weight'])
    assert own['roi_head.bbox_head.fc_cls.weight'].shape == (4, 64)
    warned = [m for m in records.messages if 'teacher_ckpt_strict' in m]
    assert len(warned) == 1 and '4 shape mismatches' in warned[0]
    assert f'loaded {len(state) - 4} tensors' in warned[0]


def test_teacher_ckpt_strict_must_be_a_bool():
    with pytest.raises(TypeError, match='teacher_ckpt_strict'):
        build_distiller('det', PKD_FPN, teacher_ckpt_strict='yes')


class _Lazy(torch.nn.Module):
    """A model like Deformable DETR: a parameter only init_weights fills,
    and a pretrained init_cfg on a child that must not be read."""

    def __init__(self):
        super().__init__()
        from mmengine.model import BaseModule
        self.child = BaseModule(init_cfg=dict(
            type='Pretrained', checkpoint='/nonexistent/teacher.pth'))
        self.child.fc = torch.nn.Linear(2, 2)
        self.level_embed = torch.nn.Parameter(torch.empty(3, 2))

    def init_weights(self):
        self.child.init_weights()
        torch.nn.init.constant_(self.level_embed, 0.5)


def test_init_from_scratch_fills_weights_and_reads_nothing():
    from visionkd.models.distillers.distill_teacher import init_from_scratch
    model = _Lazy()
    init_from_scratch(model)  # the Pretrained path would fail if read
    assert (model.level_embed == 0.5).all()
    assert model.child.init_cfg['type'] == 'Pretrained'  # restored


def test_a_teacher_without_checkpoint_is_initialised_at_build():
    """A frozen teacher is no child the runner initialises: without a
    checkpoint the distiller runs its init_weights (pretrained off)."""
    torch.manual_seed(0)
    model = build_distiller('det', PKD_FPN)
    # mmdet's RPN conv init is N(0, 0.01); PyTorch's default is wider
    assert model.teacher.rpn_head.rpn_conv.weight.std() < 0.012
    assert model.student.rpn_head.rpn_conv.weight.std() > 0.015


def test_initialising_a_teacher_leaves_the_global_random_state():
    from visionkd.models.distillers.distill_teacher import init_from_scratch
    torch.manual_seed(3)
    model = _Lazy()
    state = torch.get_rng_state()
    init_from_scratch(model)
    assert torch.equal(torch.get_rng_state(), state)
