"""Af-DCD (AfDCDLoss): hand-computed parts, official values, gradients."""
import math

import pytest
import torch
import torch.nn as nn

from tools.analysis_tools.compare_official_afdcd import make_maps
from visionkd.models.losses import AfDCDLoss


def identity_projector_(loss: AfDCDLoss) -> None:
    """Make the plain projector the identity on non-negative inputs."""
    with torch.no_grad():
        for conv in (loss.projector[0], loss.projector[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(conv.weight.shape[0]):
                conv.weight[c, c, 1, 1] = 1.0


def test_feature_term_by_hand():
    # identity projector, centre mask, no contrastive term:
    # L_fd = sum((S * M - T)^2) / N
    loss = AfDCDLoss(2, 2, num_groups=1, pool_size=0, patch_size=(1, 1),
                     rand_mask=False, lambda_fd=1.0, lambda_ctr=0.0)
    identity_projector_(loss)
    s = torch.arange(1., 19.).reshape(1, 2, 3, 3)
    t = torch.full((1, 2, 3, 3), 2.0)
    masked = s.clone()
    masked[:, :, 1, 1] = 0  # the centre third of a 3x3 map
    expected = ((masked - t)**2).sum().item()
    assert loss(s, t).item() == pytest.approx(expected)


def test_contrastive_term_by_hand():
    # 2 channels in 2 groups, 1x1 patches, no pooling: per location the
    # student tokens s0, s1 and teacher tokens t0, t1 (one channel each);
    # token (l, g) has positive t_g and the other group's t as negative.
    loss = AfDCDLoss(2, 2, tau=0.5, num_groups=2, pool_size=0,
                     patch_size=(1, 1), rand_mask=False, lambda_fd=0.0,
                     lambda_ctr=1.0)
    identity_projector_(loss)
    s = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.5]]]])  # (1, 2, 1, 2)
    t = torch.tensor([[[[1.5, 0.0]], [[2.0, 1.0]]]])
    # the centre mask of a 1x2 map is empty (H // 3 == 0): nothing masked
    expected = 0.0
    for w in range(2):
        ss, tt = s[0, :, 0, w].tolist(), t[0, :, 0, w].tolist()
        for i in range(2):
            logits = [-abs(ss[i] - tt[j]) / 0.5 for j in range(2)]
            lse = math.log(sum(math.exp(v) for v in logits))
            expected += lse - logits[i]
    expected /= 1 * 2  # pooled area h * w, batch 1
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_one_group_has_no_negatives():
    # with one group every other token is of the same group: no negatives,
    # the cross-entropy of a lone positive is 0
    loss = AfDCDLoss(4, 4, num_groups=1, pool_size=0, patch_size=(2, 2),
                     lambda_fd=0.0, lambda_ctr=1.0)
    s, t = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    assert loss(s, t).item() == pytest.approx(0.0, abs=1e-6)


#: Official OmniContrastiveFeatureLoss (OSVAI/Af-DCD losses/ocmgd.py at
#: 5b086a7) on make_maps(0, size), weights of torch.manual_seed(0), mask of
#: torch.manual_seed(1), lambda_fd 2e-6, lambda_ctr 5e-3: printed by
#: tools/analysis_tools/compare_official_afdcd.py --official-repo <Af-DCD>.
OFFICIAL = {
    'citys_rand_plain': 3.5550694,
    'citys_centre_enhanced': 3.5551963,
    'camvid_rand_plain': 3.2465625,
}


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_equals_official_values(name):
    from tools.analysis_tools.compare_official_afdcd import SETTINGS
    _, our_kw = SETTINGS[name]
    size = 48 if 'camvid' in name else 32
    torch.manual_seed(0)
    official_like = _official_init(our_kw)
    loss = AfDCDLoss(32, 64, lambda_fd=2e-6, lambda_ctr=5e-3, **our_kw)
    loss.load_state_dict(official_like)
    feat_s, feat_t = make_maps(0, size)
    torch.manual_seed(1)
    value = loss(feat_s, feat_t).item()
    assert value == pytest.approx(OFFICIAL[name], rel=1e-5)


def _official_init(our_kw: dict) -> dict:
    """Weights drawn in the official module's construction order (align,
    then the projector's convs), under our names."""
    align = nn.Conv2d(32, 64, 1)
    if our_kw.get('enhance_projector'):
        names = ['block_1.0', 'block_2.0', 'adaptor_1', 'adaptor_2']
    else:
        names = ['0', '2']
    convs = [nn.Conv2d(64, 64, 3, padding=1) for _ in names]
    state = {f'align.{k}': v for k, v in align.state_dict().items()}
    for name, conv in zip(names, convs):
        state.update({f'projector.{name}.{k}': v
                      for k, v in conv.state_dict().items()})
    return state


def test_gradients_reach_student_and_loss_params_not_teacher():
    loss = AfDCDLoss(4, 8, num_groups=2, pool_size=2, patch_size=(2, 2))
    s = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.randn(2, 8, 8, 8, requires_grad=True)
    loss(s, t.detach()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in loss.parameters())


def test_map_not_a_multiple_of_the_patch_is_cut():
    # 6x7 pooled by 1: cut to 6x6 for 2x2 patches; the values of the kept
    # region decide the contrastive term
    loss = AfDCDLoss(4, 4, num_groups=2, pool_size=0, patch_size=(2, 2),
                     rand_mask=False, lambda_fd=0.0, lambda_ctr=1.0)
    s, t = torch.randn(1, 4, 6, 7), torch.randn(1, 4, 6, 7)
    cut = loss.contrastive(s, t)
    assert cut.item() == pytest.approx(
        loss.contrastive(s[..., :6], t[..., :6]).item())


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_groups=3), 'num_groups=3 must divide'),
    (dict(tau=0.0), 'tau must be > 0'),
    (dict(mask_ratio=1.5), 'mask_ratio'),
    (dict(pool_size=-1), 'pool_size'),
    (dict(patch_size=(0, 4)), 'patch_size'),
])
def test_bad_arguments_are_named(kwargs, match):
    kwargs = dict(dict(num_groups=2), **kwargs)
    with pytest.raises(ValueError, match=match):
        AfDCDLoss(4, 8, **kwargs)


def test_too_small_map_names_the_fix():
    loss = AfDCDLoss(4, 8, num_groups=2)  # pool 4, patches 4x4
    with pytest.raises(ValueError, match='lower pool_size or patch_size'):
        loss(torch.randn(1, 4, 8, 8), torch.randn(1, 8, 8, 8))


def test_dtype_is_kept():
    loss = AfDCDLoss(4, 4, num_groups=2, pool_size=0,
                     patch_size=(2, 2)).double()
    s, t = torch.randn(1, 4, 4, 4).double(), torch.randn(1, 4, 4, 4).double()
    assert loss(s, t).dtype == torch.float64


def test_maps_of_other_sizes_name_the_connector():
    loss = AfDCDLoss(4, 8, num_groups=2, pool_size=0, patch_size=(2, 2))
    with pytest.raises(ValueError, match='ResizeConnector'):
        loss(torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4))
