"""grad_share_interval logs each term's gradient share on its layer."""
import pytest
import torch
from mmengine.logging import MessageHub

from tests.conftest import build_distiller

TERMS = dict(fpn=dict(student='neck', teacher='neck',
                      loss=dict(type='PKDLoss', loss_weight=2.0)))


def _norm(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=True,
                                allow_unused=True)
    return torch.stack([g.square().sum() for g in grads
                        if g is not None]).sum().sqrt()


def test_share_equals_the_gradient_norm_ratio_and_leaves_grads(det_batch):
    hub = MessageHub.get_instance('grad_share_test')
    torch.manual_seed(0)
    model = build_distiller('det', TERMS, grad_share_interval=2)
    data = model.data_preprocessor(det_batch, True)
    hub.update_info('iter', 4)
    torch.manual_seed(1)
    losses = model.loss(**data)
    share = hub.get_scalar('train/grad_share_fpn').current()
    params = [p for p in model.student.neck.parameters()]
    kd = sum(v.sum() for k, v in losses.items() if k.startswith('loss_kd'))
    task = sum((torch.stack(v).sum() if isinstance(v, list) else v.sum())
               for k, v in losses.items()
               if 'loss' in k and not k.startswith('loss_kd')
               and (v[0] if isinstance(v, list) else v).requires_grad)
    expected = _norm(kd, params) / _norm(task, params)
    assert share == pytest.approx(float(expected), rel=1e-5)
    assert 0 < share
    # iteration 5 is not due: nothing new is logged
    hub.update_info('iter', 5)
    torch.manual_seed(1)
    model.loss(**data)
    assert len(hub.get_scalar('train/grad_share_fpn').data[0]) == 1


def test_grad_share_does_not_change_the_gradients(det_batch):
    grads = []
    for interval in (0, 1):
        torch.manual_seed(0)
        model = build_distiller('det', TERMS,
                                grad_share_interval=interval)
        data = model.data_preprocessor(det_batch, True)
        torch.manual_seed(1)
        total, _ = model.parse_losses(model.loss(**data))
        total.backward()
        grads.append([p.grad.clone() for p in model.student.neck.parameters()
                      if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_bad_interval_is_rejected():
    with pytest.raises(TypeError, match='grad_share_interval'):
        build_distiller('det', TERMS, grad_share_interval=-1)


def test_a_layer_without_parameters_is_measured_where_the_gradient_is():
    """A term on a parameter-less layer (DDRNet's Af-DCD term on an
    activation) is measured on the nearest enclosing module its gradient
    reaches, not left without a share."""
    import torch.nn as nn

    from visionkd.models.distillers.grad_share import layer_norm
    torch.manual_seed(0)
    net = nn.ModuleDict(dict(
        a=nn.Linear(3, 4),
        b=nn.Sequential(nn.ReLU(), nn.Linear(4, 2)),
        c=nn.Sequential(nn.Linear(3, 3), nn.ReLU())))
    modules = dict(net.named_modules())
    x = torch.randn(5, 3)
    # c.1 (ReLU) -> c: its Linear feeds it
    loss = net['c'](x).square().sum()
    path, params, norm = layer_norm(modules, 'c.1', loss)
    assert path == 'c' and params == list(net['c'].parameters())
    assert norm == pytest.approx(float(_norm(loss, params)))
    # b.0 (ReLU on a's output) -> b does not feed it (b.1 comes after) ->
    # the whole model, where a's parameters get the gradient
    loss = net['b'][0](net['a'](x)).sum()
    path, params, norm = layer_norm(modules, 'b.0', loss)
    assert path == '' and len(params) == 6
    assert norm == pytest.approx(float(_norm(loss, list(
        net['a'].parameters()))))
    # a layer with parameters is measured on them
    loss = net['a'](x).sum()
    assert layer_norm(modules, 'a', loss)[0] == 'a'
    # nothing trainable: no share
    for p in net.parameters():
        p.requires_grad_(False)
    assert layer_norm(modules, 'c.1', x.requires_grad_().sum()) is None
