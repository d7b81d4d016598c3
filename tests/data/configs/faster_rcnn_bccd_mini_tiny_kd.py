# faster_rcnn_bccd_tiny_kd.py (PKD + CWD on the FPN) on the BCCD subset
# embedded in the repo (tools/demo/data/bccd_mini): runs on a fresh clone.
_base_ = ['./faster_rcnn_bccd_tiny_kd.py']
bccd = '{{fileDirname}}/../../../tools/demo/data/bccd_mini/'
train_dataloader = dict(dataset=dict(data_root=bccd))
val_dataloader = dict(dataset=dict(data_root=bccd))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=bccd + 'annotations/val.json')
test_evaluator = val_evaluator
