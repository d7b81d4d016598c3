"""MethodRecorder: named arguments and return value of a method's calls."""
import pytest
import torch
import torch.nn as nn

from visionkd.models.recorders import MethodRecorder


class Head(nn.Module):

    def loss(self, scores, labels, weight=2.0):
        return (scores * weight).sum() + labels.sum()


def test_records_arguments_by_name_and_the_return_value():
    head, other = Head(), Head()
    calls = []
    rec = MethodRecorder(head, 'head', 'loss',
                         on_record=lambda: calls.append(1))
    s, y = torch.ones(2), torch.tensor([1, 2])
    out = head.loss(s, labels=y)
    assert out.item() == 7.0  # the original method still runs
    assert len(rec.data) == 1 and calls == [1]
    entry = rec.levels()[0]
    assert entry['scores'] is s and entry['labels'] is y
    assert entry['weight'] == 2.0 and entry['_return'] is out
    other.loss(s, y)  # another instance of the class is not recorded
    assert len(rec.data) == 1
    rec.clear()
    assert rec.data == []
    rec.remove()
    head.loss(s, y)
    assert rec.data == [] and 'loss' not in head.__dict__


def test_unknown_method_names_the_layer():
    with pytest.raises(ValueError, match="'head'.*no method 'los'"):
        MethodRecorder(Head(), 'head', 'los')
