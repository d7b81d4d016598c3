"""Tests of the shared GT helpers of the detection losses."""
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.structures import InstanceData

from visionkd.models.losses.det_gt_utils import padded_gt_bboxes


def _sample(boxes, hw=(64, 96)):
    sample = DetDataSample(metainfo=dict(batch_input_shape=hw))
    sample.gt_instances = InstanceData(bboxes=boxes)
    return sample


def test_padded_gt_bboxes_pads_and_marks_valid():
    a = torch.tensor([[1., 2., 3., 4.], [5., 6., 7., 8.]])
    c = torch.tensor([[9., 10., 11., 12.]])
    samples = [_sample(a), _sample(torch.zeros(0, 4), (32, 48)),
               _sample(HorizontalBoxes(c))]
    boxes, valid, input_hw = padded_gt_bboxes(samples, torch.device('cpu'))
    assert boxes.shape == (3, 2, 4) and boxes.dtype == torch.float32
    assert torch.equal(boxes[0], a)
    assert torch.equal(boxes[2, 0], c[0])
    assert not boxes[1].any() and not boxes[2, 1].any()
    assert valid.tolist() == [[True, True], [False, False], [True, False]]
    assert input_hw.tolist() == [[64., 96.], [32., 48.], [64., 96.]]


def test_padded_gt_bboxes_without_any_box_has_one_invalid_slot():
    boxes, valid, _ = padded_gt_bboxes([_sample(torch.zeros(0, 4))],
                                       torch.device('cpu'))
    assert boxes.shape == (1, 1, 4) and not valid.any()
