"""NormConnector: bias-free conv + BatchNorm without affine (RTMDet KD)."""
import pytest
import torch

import visionkd  # noqa: F401
from visionkd.registry import MODELS


def test_norm_connector_hand_checked_standardisation():
    """One channel, N=2, 1x2 maps: mean 2.5, biased var 1.25 over N*H*W."""
    conn = MODELS.build(dict(type='NormConnector', in_channels=1))
    assert conn.conv is None
    assert not list(conn.parameters())
    x = torch.tensor([[[[1., 2.]]], [[[3., 4.]]]])
    expected = (x - 2.5) / (1.25 + 1e-5)**0.5
    torch.testing.assert_close(conn(x), expected)
    conn.eval()  # no running statistics: eval uses the batch's too
    torch.testing.assert_close(conn(x), expected)


def test_norm_connector_conv_then_norm_per_channel():
    conn = MODELS.build(dict(type='NormConnector', in_channels=2,
                             out_channels=2, with_conv=True))
    assert conn.conv.bias is None
    with torch.no_grad():
        conn.conv.weight.copy_(torch.tensor([[2., 0.], [1., 1.]]).view(
            2, 2, 1, 1))
    x = torch.tensor([[[[1., 3.]], [[0., 2.]]]])  # (1, 2, 1, 2)
    # conv: channel 0 = 2*x0 = [2, 6]; channel 1 = x0 + x1 = [1, 5]
    d = 2.0 / (4.0 + 1e-5)**0.5  # each channel: mean +-2, var 4
    expected = torch.tensor([[[[-d, d]], [[-d, d]]]])
    torch.testing.assert_close(conn(x), expected)


def test_norm_connector_maps_channels_and_passes_grads():
    conn = MODELS.build(dict(type='NormConnector', in_channels=4,
                             out_channels=6))
    x = torch.randn(2, 4, 5, 7, requires_grad=True)
    y = conn(x)
    assert y.shape == (2, 6, 5, 7)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(6),
                               atol=1e-5, rtol=0)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert conn.conv.weight.grad.abs().sum() > 0


def test_norm_connector_rejects_channel_mismatch_without_conv():
    with pytest.raises(ValueError, match='with_conv=True'):
        MODELS.build(dict(type='NormConnector', in_channels=4,
                          out_channels=6, with_conv=False))
