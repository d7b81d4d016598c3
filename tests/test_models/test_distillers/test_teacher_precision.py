"""teacher_precision / teacher_channels_last: a cheaper teacher forward."""
import pytest
import torch

from tests.conftest import build_distiller

PKD_FPN = dict(fpn=dict(student='neck', teacher='neck',
                        loss=dict(type='PKDLoss')))


def _records(model, det_batch):
    data = model.data_preprocessor(det_batch, True)
    model.records.clear()
    model.run_teacher(data['inputs'], data['data_samples'])
    out = model.records.teacher.levels(('neck', 'output'))
    model.records.clear()
    return out


def _conv_dtypes(model):
    dtypes = []
    conv = model.teacher.backbone.conv1
    handle = conv.register_forward_hook(
        lambda m, i, o: dtypes.append(o.dtype))
    return dtypes, handle


@pytest.mark.parametrize('precision, dtype', [('bf16', torch.bfloat16),
                                              ('fp16', torch.float16)])
def test_half_teacher_runs_in_half_and_records_float32(det_batch, precision,
                                                       dtype):
    torch.manual_seed(0)
    ref = build_distiller('det', PKD_FPN)
    torch.manual_seed(0)
    model = build_distiller('det', PKD_FPN, teacher_precision=precision)
    dtypes, handle = _conv_dtypes(model)
    half = _records(model, det_batch)
    handle.remove()
    full = _records(ref, det_batch)
    assert dtypes == [dtype]
    assert all(p.dtype == torch.float32 for p in model.teacher.parameters())
    for h, f in zip(half, full):
        assert h.dtype == torch.float32
        err = (h - f).abs().max() / f.abs().max()
        assert 0 < err < 0.05, err
    data = model.data_preprocessor(det_batch, True)
    losses = model.loss(**data)
    assert all(torch.isfinite(v).all() for v in losses.values()
               if isinstance(v, torch.Tensor))


def test_fp32_teacher_leaves_autocast(det_batch):
    model = build_distiller('det', PKD_FPN, teacher_precision='fp32')
    dtypes, handle = _conv_dtypes(model)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        recs = _records(model, det_batch)
    handle.remove()
    assert dtypes == [torch.float32] and recs[0].dtype == torch.float32
    inherit = build_distiller('det', PKD_FPN)
    dtypes, handle = _conv_dtypes(inherit)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _records(inherit, det_batch)
    handle.remove()
    assert dtypes == [torch.bfloat16]


def test_channels_last_teacher_gives_the_same_records(det_batch):
    torch.manual_seed(0)
    ref = build_distiller('det', PKD_FPN)
    torch.manual_seed(0)
    model = build_distiller('det', PKD_FPN, teacher_channels_last=True)
    w = model.teacher.backbone.conv1.weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    assert not w.is_contiguous()
    for a, b in zip(_records(model, det_batch), _records(ref, det_batch)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bad_teacher_precision_is_rejected():
    with pytest.raises(ValueError, match="teacher_precision must be one of"):
        build_distiller('det', PKD_FPN, teacher_precision='int8')
    with pytest.raises(TypeError, match='teacher_channels_last'):
        build_distiller('det', PKD_FPN, teacher_channels_last=1)
