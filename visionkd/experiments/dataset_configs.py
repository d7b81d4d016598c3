"""Dataloaders and evaluators of the runner for the user's dataset.

Detection: a COCO-json dataset (``CocoDataset``, bbox mAP). Segmentation:
the Cityscapes layout (``leftImg8bit/<split>/**/*_leftImg8bit.png`` and
``gtFine/<split>/**/*_gtFine_labelTrainIds.png``, ``CityscapesDataset``,
mIoU).
"""
import json
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .presets import Preset

__all__ = ['DataSpec', 'coco_class_names', 'dataset_cfg']


@dataclass(frozen=True)
class DataSpec:
    """Where the data is (from the command line).

    Attributes:
        root: Dataset root.
        train: Detection: train annotation json (relative to ``root``).
            Segmentation: train split name (``leftImg8bit/<train>``).
        val: The same for the val split.
        classes: Class names; None reads them from the train json
            (detection) or uses the 19 Cityscapes classes (segmentation).
        train_img_dir: Detection image folder of the train json.
        val_img_dir: Detection image folder of the val json.
        vertical_flip: Also flip vertically in training (detection; for
            images without an up direction, e.g. microscopy).
    """

    root: str
    train: str
    val: str
    classes: Optional[Tuple[str, ...]] = None
    train_img_dir: str = 'images/'
    val_img_dir: str = 'images/'
    vertical_flip: bool = False

    @staticmethod
    def add_args(parser, root_required: bool = True,
                 root_help: str = 'the dataset') -> None:
        """The command line's data options (``tools/run_experiments.py``,
        ``method_shares.py``); ``--task`` is the tool's own."""
        parser.add_argument('--data-root', required=root_required,
                            help=root_help)
        parser.add_argument('--train-ann', default='annotations/train.json',
                            help='det: train COCO json, relative to the '
                            'root')
        parser.add_argument('--val-ann', default='annotations/val.json',
                            help='det: val COCO json, relative to the root')
        parser.add_argument('--train-img-dir', default='images/',
                            help='det: image folder of the train json')
        parser.add_argument('--val-img-dir', default='images/',
                            help='det: image folder of the val json')
        parser.add_argument('--train-split', default='train',
                            help='seg: leftImg8bit/<split>, gtFine/<split>')
        parser.add_argument('--val-split', default='val')
        parser.add_argument('--classes', nargs='+',
                            help='class names (det default: the train json '
                            'categories; seg default: the 19 Cityscapes '
                            'classes)')
        parser.add_argument('--vertical-flip', action='store_true',
                            help='det: also flip vertically in training')

    @classmethod
    def from_args(cls, args) -> 'DataSpec':
        """From the options of :meth:`add_args` and ``args.task``."""
        seg = args.task == 'seg'
        return cls(
            root=args.data_root,
            train=args.train_split if seg else args.train_ann,
            val=args.val_split if seg else args.val_ann,
            classes=tuple(args.classes) if args.classes else None,
            train_img_dir=args.train_img_dir, val_img_dir=args.val_img_dir,
            vertical_flip=args.vertical_flip)

    def class_names(self, task: str) -> Tuple[str, ...]:
        if self.classes:
            return tuple(self.classes)
        if task == 'det':
            return coco_class_names(osp.join(self.root, self.train))
        from mmseg.datasets import CityscapesDataset
        return tuple(CityscapesDataset.METAINFO['classes'])


def coco_class_names(ann_file: str) -> Tuple[str, ...]:
    """Category names of a COCO json, in category-id order."""
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file {ann_file!r} not found')
    with open(ann_file) as f:
        cats = json.load(f)['categories']
    return tuple(c['name'] for c in sorted(cats, key=lambda c: c['id']))


def _subset(dataset: dict, n: Optional[int]) -> dict:
    if n is not None:
        dataset['indices'] = n
    return dataset


def _det(data: DataSpec, preset: Preset, classes: Sequence[str]) -> dict:
    root = osp.abspath(data.root) + '/'
    scale = tuple(preset.scale)
    flips = ['horizontal', 'vertical'] if data.vertical_flip else \
        ['horizontal']
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5, direction=flips),
        dict(type='PackDetInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs', meta_keys=(
            'img_id', 'img_path', 'ori_shape', 'img_shape',
            'scale_factor'))]
    metainfo = dict(classes=tuple(classes))
    sched = preset.schedule
    train = dict(
        batch_size=sched.batch_size, num_workers=0, persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        batch_sampler=dict(type='AspectRatioBatchSampler'),
        dataset=_subset(dict(
            type='CocoDataset', data_root=root, metainfo=metainfo,
            ann_file=data.train, data_prefix=dict(img=data.train_img_dir),
            filter_cfg=dict(filter_empty_gt=True, min_size=4),
            pipeline=train_pipeline), sched.train_subset))
    val = dict(
        batch_size=4, num_workers=0, persistent_workers=False,
        drop_last=False, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=_subset(dict(
            type='CocoDataset', data_root=root, metainfo=metainfo,
            ann_file=data.val, data_prefix=dict(img=data.val_img_dir),
            test_mode=True, pipeline=test_pipeline), sched.val_subset))
    evaluator = dict(type='CocoMetric', ann_file=osp.join(root, data.val),
                     metric='bbox', format_only=False)
    return dict(train_dataloader=train, val_dataloader=val,
                test_dataloader=val, val_evaluator=evaluator,
                test_evaluator=evaluator)


def _seg(data: DataSpec, preset: Preset, classes: Sequence[str]) -> dict:
    root = osp.abspath(data.root) + '/'
    scale = tuple(preset.scale)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=scale,
             ratio_range=tuple(preset.ratio_range), keep_ratio=True),
        dict(type='RandomCrop', crop_size=tuple(preset.crop),
             cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')]
    sched = preset.schedule

    def dataset(split: str, pipeline: List[dict], n: Optional[int]):
        ds = dict(type='CityscapesDataset', data_root=root,
                  data_prefix=dict(img_path=f'leftImg8bit/{split}',
                                   seg_map_path=f'gtFine/{split}'),
                  pipeline=pipeline)
        if data.classes:
            ds['metainfo'] = dict(classes=tuple(classes))
        return _subset(ds, n)

    train = dict(
        batch_size=sched.batch_size, num_workers=0, persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dataset(data.train, train_pipeline, sched.train_subset))
    val = dict(
        batch_size=1, num_workers=0, persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dataset(data.val, test_pipeline, sched.val_subset))
    evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    return dict(train_dataloader=train, val_dataloader=val,
                test_dataloader=val, val_evaluator=evaluator,
                test_evaluator=evaluator)


def dataset_cfg(data: DataSpec, preset: Preset,
                classes: Sequence[str]) -> dict:
    """Dataloader and evaluator entries of a run config."""
    if preset.task == 'det':
        return _det(data, preset, classes)
    return _seg(data, preset, classes)
