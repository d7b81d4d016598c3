"""Run-time guards: images without boxes, all-ignore label maps, and a
NaN distillation term stopping training with its name and iteration."""
import os.path as osp

import pytest
import torch

from tests.conftest import build_distiller, tiny_faster_rcnn
from tests.test_reliability.helpers import (
    DET_MICRO_KD,
    last_checkpoint,
    load,
    run_tool,
)

BOX_TERMS = dict(
    fgd=dict(student='neck', teacher='neck', levels=[0, 1],
             loss=dict(type='FGDLoss')),
    fgfi=dict(student='neck', teacher='neck', levels=[0, 1],
              loss=dict(type='FGFILoss')),
    defeat=dict(student='neck', teacher='neck', levels=[0, 1],
                loss=dict(type='DeFeatLoss', strides=[4, 8])))


def assert_finite_step(model, data):
    losses = model(**data, mode='loss')
    kd = {k: v for k, v in losses.items() if k.startswith('loss_kd_')}
    assert kd
    for key, value in kd.items():
        assert torch.isfinite(value).all(), key
    total, _ = model.parse_losses(kd)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return kd


@pytest.mark.parametrize('num_items', [[0, 2], [0, 0]])
def test_images_without_gt_boxes(num_items):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    model = build_distiller('det', BOX_TERMS, teacher=tiny_faster_rcnn(32))
    model.train()
    batch = demo_mm_inputs(batch_size=2, image_shapes=(3, 96, 128),
                           num_items=num_items, num_classes=3)
    assert len(batch['data_samples'][0].gt_instances) == 0
    kd = assert_finite_step(model, model.data_preprocessor(batch, True))
    assert set(kd) == {f'loss_kd_{n}_l{i}' for n in BOX_TERMS
                       for i in (0, 1)}


def test_all_ignore_label_maps(seg_batch):
    feat = dict(student='decode_head.bottleneck',
                teacher='decode_head.bottleneck')
    terms = dict(
        ifvd=dict(feat, loss=dict(type='IFVDLoss', num_classes=19)),
        cirkd_memory=dict(feat, loss=dict(
            type='CIRKDMemoryLoss', num_classes=19, pixel_memory_size=64,
            region_memory_size=8, pixel_contrast_size=32,
            region_contrast_size=8)),
        cwd=dict(student='decode_head.conv_seg',
                 teacher='decode_head.conv_seg',
                 loss=dict(type='ChannelWiseDivergence')))
    torch.manual_seed(0)
    model = build_distiller('seg', terms)
    model.train()
    for sample in seg_batch['data_samples']:
        sample.gt_sem_seg.data[...] = 255
    kd = assert_finite_step(model, model.data_preprocessor(seg_batch, True))
    assert set(kd) == {f'loss_kd_{n}' for n in terms}


def test_nan_term_raises_with_name_and_iteration(seg_batch):
    from mmengine.logging import MessageHub
    model = build_distiller('seg', dict(bad=dict(
        student='decode_head.conv_seg', teacher='decode_head.conv_seg',
        loss=dict(type='ChannelWiseDivergence'))))
    model.train()
    model.distill_terms['bad'].scale = float('inf')  # inf * 0 = NaN
    hub = MessageHub.get_instance('test_nan_term')
    hub.update_info('iter', 41)
    data = model.data_preprocessor(seg_batch, True)
    with pytest.raises(FloatingPointError) as info:
        model(**data, mode='loss')
    msg = str(info.value)
    assert "['bad']" in msg and 'training iteration 42' in msg
    assert 'loss_kd_bad' in msg and 'last good' in msg
    model.check_finite = False
    assert not torch.isfinite(model(**data, mode='loss')['loss_kd_bad'])


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tmp_path / 'nan_at_4.py'
    cfg.write_text(
        f'_base_ = [{DET_MICRO_KD!r}]\n'
        "custom_imports = dict(imports=['tests.test_reliability."
        "nan_injection'])\n"
        "model = dict(distill_terms=dict(feat=dict(loss=dict("
        "type='NaNInjectionLoss', nan_from=4))))\n")
    proc = run_tool('train.py', str(cfg), '--work-dir', str(tmp_path),
                    check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith('FloatingPointError: distillation term(s) '
                          "['feat'] not finite at training iteration 4: "
                          'loss_kd_feat = nan'), err
    assert not osp.exists(tmp_path / 'iter_4.pth')
    good = last_checkpoint(str(tmp_path))
    assert osp.basename(good) == 'iter_2.pth'
    state = load(good)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())
