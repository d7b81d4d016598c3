"""Connectors adapt student maps to the teacher's shape."""
import pytest
import torch

import visionkd  # noqa: F401
from visionkd.registry import MODELS


def test_conv_connector_maps_channels_and_learns():
    conn = MODELS.build(dict(type='ConvConnector', in_channels=4,
                             out_channels=6, norm_cfg=dict(type='BN'),
                             act_cfg=dict(type='ReLU')))
    x = torch.randn(2, 4, 5, 7, requires_grad=True)
    y = conn(x)
    assert y.shape == (2, 6, 5, 7)
    assert (y >= 0).all()
    y.sum().backward()
    assert x.grad is not None


def test_conv_connector_1x1_is_a_channel_mix():
    conn = MODELS.build(dict(type='ConvConnector', in_channels=2,
                             out_channels=1))
    w = conn.conv.conv.weight
    with torch.no_grad():
        w.copy_(torch.tensor([2., -1.]).view(1, 2, 1, 1))
        conn.conv.conv.bias.zero_()
    x = torch.tensor([[[[1.]], [[3.]]]])
    assert conn(x).item() == pytest.approx(-1.0)


def test_resize_connector_to_target_size_and_fixed():
    conn = MODELS.build(dict(type='ResizeConnector'))
    x = torch.arange(4.).view(1, 1, 2, 2)
    t = torch.zeros(1, 3, 4, 4)
    y = conn(x, target=t)
    assert y.shape == (1, 1, 4, 4)
    assert conn(x, target=torch.zeros(1, 1, 2, 2)) is x
    fixed = MODELS.build(dict(type='ResizeConnector', scale_factor=2,
                              mode='nearest'))
    torch.testing.assert_close(
        fixed(x), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    with pytest.raises(ValueError):
        MODELS.build(dict(type='ResizeConnector', size=(2, 2),
                          scale_factor=2))
    with pytest.raises(ValueError, match='target'):
        conn(x)


def test_resize_and_conv_chain_in_a_distiller(det_batch):
    """Student at 2x lower resolution and other width: a chain fixes both."""
    from tests.conftest import build_distiller
    model = build_distiller(
        'det',
        dict(c5=dict(student='backbone.layer3', teacher='backbone.layer4',
                     connector=[dict(type='ConvConnector'),
                                dict(type='ResizeConnector')],
                     loss=dict(type='FeatureMSELoss'))))
    model.train()
    losses = model(**model.data_preprocessor(det_batch, True), mode='loss')
    assert losses['loss_kd_c5'].item() > 0
