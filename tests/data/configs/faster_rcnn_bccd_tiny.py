# Tiny plain-mmdet student on the BCCD subset embedded in the repo
# (tools/demo/data/bccd_mini, 320x240) for end-to-end tests: runs on a
# fresh clone.
_base_ = ['../../../configs/demo/faster_rcnn_r18_bccd_student.py']
bccd = '{{fileDirname}}/../../../tools/demo/data/bccd_mini/'
max_iters = 3
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
# Keep every box at test time: after 3 iterations the foreground scores
# can all fall below mmdet's 0.05, the COCO metric then reports nothing.
model = dict(test_cfg=dict(rcnn=dict(score_thr=0.0)))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=max_iters))
train_dataloader = dict(
    batch_size=2,
    dataset=dict(data_root=bccd, ann_file='annotations/train.json',
                 indices=8))
val_dataloader = dict(
    batch_size=2,
    dataset=dict(data_root=bccd, ann_file='annotations/val.json',
                 indices=4))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=bccd + 'annotations/val.json')
test_evaluator = val_evaluator
