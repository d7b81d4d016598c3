"""Instance segmentation end to end: a Mask R-CNN distiller (PKD on the neck
and mode='mask') trains with tools/train.py, tools/test.py reports bbox and
segm mAP, and tools/export_student.py keeps the mask head.

The embedded BCCD subset has boxes only; each box becomes a rectangle
polygon mask here (tmp dir), which is enough to run every code path."""
import json
import os.path as osp

import torch

from tests.conftest import BCCD_MINI, REPO, run_repo_script

CONFIG = """
_base_ = [{base!r}]
data = {data!r}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(160, 120), keep_ratio=True),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 120), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=(
        'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
train_dataloader = dict(dataset=dict(
    data_root=data, ann_file='train.json', pipeline=train_pipeline,
    data_prefix=dict(img={images!r})))
val_dataloader = dict(dataset=dict(
    data_root=data, ann_file='val.json', pipeline=test_pipeline,
    data_prefix=dict(img={images!r})))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data + 'val.json', metric=['bbox', 'segm'])
test_evaluator = val_evaluator


def mask_rcnn(c):
    return dict(
        _scope_='mmdet',
        config='mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
        backbone=dict(depth=18, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=c),
        rpn_head=dict(in_channels=c, feat_channels=c),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=c),
            bbox_head=dict(in_channels=c, fc_out_channels=64, num_classes=3),
            mask_roi_extractor=dict(out_channels=c),
            mask_head=dict(num_convs=1, in_channels=c, conv_out_channels=16,
                           num_classes=3)),
        train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                       rcnn=dict(sampler=dict(num=64))),
        test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100)))


model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student=mask_rcnn(32),
    teacher=mask_rcnn(16),
    teacher_ckpt=None,
    distill_terms=dict(
        fpn=dict(student='neck', teacher='neck',
                 connector=dict(type='ConvConnector'),
                 loss=dict(type='PKDLoss', loss_weight=6.0)),
        mask=dict(mode='mask', student='roi_head', teacher='roi_head',
                  T=1.0)))
"""


def _with_box_masks(src: str, dst: str, num_images: int) -> None:
    """Copy a COCO json (first images only) with rectangle polygons."""
    coco = json.load(open(src))
    coco['images'] = coco['images'][:num_images]
    keep = {img['id'] for img in coco['images']}
    anns = [a for a in coco['annotations'] if a['image_id'] in keep]
    for a in anns:
        x, y, w, h = a['bbox']
        a['segmentation'] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        a['area'] = w * h
    coco['annotations'] = anns
    json.dump(coco, open(dst, 'w'))


def test_mask_rcnn_distiller_trains_tests_segm_and_exports(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    for split, n in (('train', 8), ('val', 4)):
        _with_box_masks(osp.join(BCCD_MINI, 'annotations', f'{split}.json'),
                        str(data / f'{split}.json'), n)
    cfg = tmp_path / 'mask_kd.py'
    cfg.write_text(CONFIG.format(
        base=osp.join(REPO, 'tests', 'data', 'configs',
                      'faster_rcnn_bccd_tiny.py'),
        data=str(data) + '/', images=osp.join(BCCD_MINI, 'images') + '/'))
    work = tmp_path / 'work'
    out = run_repo_script('tools/train.py', str(cfg), '--work-dir', str(work))
    assert 'loss_kd_mask' in out and 'loss_kd_fpn_l0' in out
    ckpt = open(work / 'last_checkpoint').read().strip()
    out = run_repo_script('tools/test.py', str(cfg), ckpt, '--work-dir',
               str(tmp_path / 'test'))
    line = [x for x in out.splitlines() if x.startswith('test metrics: ')]
    metrics = json.loads(line[-1][len('test metrics: '):])
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics), metrics
    exported = tmp_path / 'student.pth'
    student_cfg = tmp_path / 'student.py'
    run_repo_script('tools/export_student.py', ckpt, str(exported), '--config',
         str(cfg), '--out-config', str(student_cfg))
    assert 'FCNMaskHead' in student_cfg.read_text()
    state = torch.load(exported, map_location='cpu',
                       weights_only=True)['state_dict']
    assert any(k.startswith('roi_head.mask_head.') for k in state)
    assert not any(k.startswith(('teacher.', 'distill_terms.'))
                   for k in state)
