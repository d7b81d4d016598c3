"""tools/export_student.py gives a plain mmdet checkpoint."""
import os.path as osp

import torch
from mmengine.config import Config

from tests.conftest import REPO, build_distiller, tiny_faster_rcnn
from tools.export_student import export_student


def test_export_loads_into_plain_mmdet_model(tmp_path, det_batch):
    from mmdet.apis import init_detector
    terms = dict(fpn=dict(student='neck', teacher='neck',
                          connector=dict(type='ConvConnector'),
                          loss=dict(type='PKDLoss')))
    model = build_distiller('det', terms)
    torch.manual_seed(3)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    src = tmp_path / 'distiller.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=7)), src)
    assert any(k.startswith('distill_terms.') for k in model.state_dict())

    cfg_path = tmp_path / 'kd.py'
    Config(dict(model=dict(type='visionkd.DetectionDistiller',
                           student=tiny_faster_rcnn(64),
                           teacher='unused'))).dump(str(cfg_path))
    dst, student_cfg = tmp_path / 'student.pth', tmp_path / 'student.py'
    n = export_student(str(src), str(dst), str(cfg_path), str(student_cfg))
    assert n == len(model.student.state_dict())

    ckpt = torch.load(dst, weights_only=False)
    assert set(ckpt['state_dict']) == set(model.student.state_dict())
    plain = init_detector(str(student_cfg), str(dst), device='cpu')
    assert type(plain) is type(model.student)
    missing = set(plain.state_dict()) ^ set(ckpt['state_dict'])
    assert not missing
    model.eval()
    data = model.data_preprocessor(det_batch, False)
    with torch.no_grad():
        ours = model(**data, mode='tensor')
        theirs = plain(**data, mode='tensor')
    torch.testing.assert_close(ours[0][0], theirs[0][0])
    assert osp.isfile(osp.join(REPO, 'tools', 'export_student.py'))
