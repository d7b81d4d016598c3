"""ModuleRecorder keeps references to outputs/inputs, one per call."""
import pytest
import torch
import torch.nn as nn

from visionkd.models.recorders import ModuleRecorder


class Pair(nn.Module):

    def forward(self, x):
        return x + 1, x * 2


def test_records_output_tuple_as_levels_without_copy():
    mod = Pair()
    rec = ModuleRecorder(mod, 'pair')
    x = torch.ones(2)
    out = mod(x)
    assert len(rec.data) == 1
    levels = rec.levels()
    assert len(levels) == 2 and levels[0] is out[0]
    rec.clear()
    assert rec.data == []


def test_records_input_and_each_call_of_a_shared_module():
    conv = nn.Conv2d(1, 1, 1)
    rec = ModuleRecorder(conv, 'conv', record='input')
    xs = [torch.randn(1, 1, 2, 2), torch.randn(1, 1, 4, 4)]
    for x in xs:
        conv(x)
    assert [t is x for t, x in zip(rec.levels(), xs)] == [True, True]
    rec.remove()
    conv(xs[0])
    assert len(rec.data) == 2


def test_callback_and_bad_record():
    calls = []
    conv = nn.Conv2d(1, 1, 1)
    ModuleRecorder(conv, 'conv', on_record=lambda: calls.append(1))
    conv(torch.zeros(1, 1, 1, 1))
    assert calls == [1]
    with pytest.raises(ValueError, match="'conv'"):
        ModuleRecorder(conv, 'conv', record='weights')
