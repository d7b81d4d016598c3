"""TokensToMapConnector, its grid inference, AvgPoolConnector and the
antialiased ResizeConnector."""
import pytest
import torch
import torch.nn.functional as F

import visionkd  # noqa: F401
from visionkd.models.connectors import input_size_scope, token_grid
from visionkd.models.connectors.tokens_to_map_connector import (
    current_input_size,
)
from visionkd.registry import MODELS


@pytest.mark.parametrize('size, stride, grid', [
    ((128, 256), 4, (32, 64)),
    ((128, 256), 32, (4, 8)),
    ((100, 130), 8, (13, 17)),    # ceil(100 / 8), ceil(130 / 8)
    ((512, 1024), 16, (32, 64)),
    ((64, 64), 8, (8, 8)),
])
def test_token_grid_of_real_strides(size, stride, grid):
    assert token_grid(grid[0] * grid[1], size) == grid


@pytest.mark.parametrize('num_tokens, size', [
    (257, (128, 128)),    # 16 x 16 patches + a class token
    (1025, (128, 128)),   # 32 x 32 + 1 = 25 x 41: no single stride
    (7, (64, 128)),       # prime, far from the 1:2 aspect ratio
])
def test_token_grid_none_without_a_grid(num_tokens, size):
    assert token_grid(num_tokens, size) is None


def test_tokens_back_to_the_map_they_came_from():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 10)
    tokens = x.flatten(2).transpose(1, 2)  # (2, 60, 5), as MiT's blocks
    conn = MODELS.build(dict(type='TokensToMapConnector'))
    # the grid from the input size (6 x 10 at stride 8 of 48 x 80) ...
    with input_size_scope((48, 80)):
        torch.testing.assert_close(conn(tokens), x)
    # ... or from the map it is compared with (other channels, same grid)
    torch.testing.assert_close(conn(tokens, target=torch.zeros(2, 3, 6, 10)),
                               x)
    # ... or given; a map passes through
    fixed = MODELS.build(dict(type='TokensToMapConnector', hw_shape=(6, 10)))
    torch.testing.assert_close(fixed(tokens), x)
    assert conn(x) is x


def test_tokens_to_map_errors_name_the_fix():
    conn = MODELS.build(dict(type='TokensToMapConnector'))
    with pytest.raises(ValueError, match=r'hw_shape=\(h, w\)'):
        conn(torch.zeros(1, 60, 4))  # no input size, no target
    with input_size_scope((128, 128)), pytest.raises(
            ValueError, match='257 tokens form no h x w grid'):
        conn(torch.zeros(1, 257, 4))
    fixed = MODELS.build(dict(type='TokensToMapConnector', hw_shape=(5, 5)))
    with pytest.raises(ValueError, match='has 25 cells but the layer gives '
                                         '60 tokens'):
        fixed(torch.zeros(1, 60, 4))
    with pytest.raises(ValueError, match='hw_shape'):
        MODELS.build(dict(type='TokensToMapConnector', hw_shape=(0, 4)))


def test_input_size_scope_nests_and_resets():
    assert current_input_size() is None
    with input_size_scope((64, 128)):
        with input_size_scope(torch.Size([2, 3, 32, 48])):
            assert current_input_size() == (32, 48)
        assert current_input_size() == (64, 128)
    assert current_input_size() is None


def test_avg_pool_connector_is_cirkds_pooling_and_parameter_free():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, 9)
    conn = MODELS.build(dict(type='AvgPoolConnector'))
    ref = torch.nn.AvgPool2d(kernel_size=(2, 2), stride=(2, 2), padding=0,
                             ceil_mode=True)(x)
    torch.testing.assert_close(conn(x), ref)
    assert conn(x).shape == (2, 3, 4, 5)
    assert not list(conn.parameters()) and not list(conn.buffers())
    assert MODELS.build(dict(type='AvgPoolConnector', kernel_size=3,
                             ceil_mode=False))(x).shape == (2, 3, 2, 3)


def test_resize_connector_antialias_low_passes_when_shrinking():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 32, 32)
    t = torch.zeros(1, 2, 8, 8)
    plain = MODELS.build(dict(type='ResizeConnector'))(x, target=t)
    aa = MODELS.build(dict(type='ResizeConnector', antialias=True))(
        x, target=t)
    torch.testing.assert_close(
        aa, F.interpolate(x, (8, 8), mode='bilinear', antialias=True))
    # a 4x shrink of noise: the low-passed map varies much less
    assert aa.std() < 0.6 * plain.std()
    with pytest.raises(ValueError, match="antialias=True needs mode"):
        MODELS.build(dict(type='ResizeConnector', mode='nearest',
                          antialias=True))
