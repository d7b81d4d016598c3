"""tools/export_student.py gives a plain mmdet checkpoint and config."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import REPO
from tools.export_student import export_student
from visionkd.registry import MODELS

KD_CONFIG = osp.join(REPO, 'configs', 'demo',
                     'faster_rcnn_r18x2_to_r18_bccd_pkd.py')


def test_export_loads_into_plain_mmdet_model(tmp_path, det_batch):
    from mmdet.apis import init_detector
    cfg = Config.fromfile(KD_CONFIG)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    torch.manual_seed(3)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    src = tmp_path / 'distiller.pth'
    meta = dict(iter=7, dataset_meta=dict(classes=('RBC', 'WBC',
                                                   'Platelets')))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), src)
    # connector weights are in the distiller checkpoint, not in the export
    assert any(k.startswith('distill_terms.') for k in model.state_dict())

    dst, student_cfg = tmp_path / 'student.pth', tmp_path / 'student.py'
    n = export_student(str(src), str(dst), KD_CONFIG, str(student_cfg))
    assert n == len(model.student.state_dict())
    ckpt = torch.load(dst, weights_only=False)
    assert set(ckpt['state_dict']) == set(model.student.state_dict())

    plain = init_detector(str(student_cfg), str(dst), device='cpu')
    assert type(plain) is type(model.student)
    assert set(plain.state_dict()) == set(ckpt['state_dict'])
    assert 'visionkd' not in Config.fromfile(str(student_cfg)).model.type
    model.eval()
    data = model.data_preprocessor(det_batch, False)
    with torch.no_grad():
        ours = model(**data, mode='predict')
        theirs = plain(**data, mode='predict')
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.pred_instances.bboxes,
                                   b.pred_instances.bboxes)
        torch.testing.assert_close(a.pred_instances.scores,
                                   b.pred_instances.scores)
