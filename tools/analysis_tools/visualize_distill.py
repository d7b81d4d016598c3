"""Show what a distillation config distils, on one image, as PNGs.

For a visionkd distiller config and an image it writes to ``--out-dir``:

* ``<term>[_l<i>]_features.png``: the image, the teacher's and the
  student's recorded feature map (mean over channels) of every term and
  level;
* FGD terms (``FGDLoss``): ``<term>_l<i>_fgd_attention.png``, the
  teacher's spatial attention, and ``<term>_l<i>_fgd_masks.png``, the
  foreground / background masks, over the image with the GT boxes;
* FGFI terms (``FGFILoss``): ``<term>_l<i>_fgfi_mask.png``, the imitation
  mask over the image with the GT boxes;
* segmentation configs: ``seg_class_maps.png``, the image, the ground truth
  (when known) and the teacher's and student's predicted class maps.

Ground truth comes from the config's dataset when the image is one of its
images (matched by file name, val then test then train set), else from
``--ann`` (detection: a COCO json; segmentation: a label PNG).
``--teacher-ckpt`` overrides the config's teacher weights
(``--teacher-ckpt none``: random teacher); ``--checkpoint`` loads a
distiller checkpoint of ``tools/train.py``, ``--student-ckpt`` plain
student weights::

    python tools/analysis_tools/visualize_distill.py \\
        configs/kd/faster_rcnn_r101_to_r18.py data/coco/val2017/xxx.jpg \\
        --checkpoint work_dirs/kd/epoch_12.pth --out-dir vis/
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

import visionkd  # noqa: F401
from tools.common import load_config
from visionkd.models.distillers import SegmentationDistiller
from visionkd.registry import MODELS

__all__ = ['visualize', 'main']


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write PNGs of what a distillation config distils')
    parser.add_argument('config', help='visionkd distiller config')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-dir', required=True, help='where PNGs go')
    parser.add_argument('--teacher-ckpt',
                        help="teacher weights (overrides the config's; "
                        "'none' keeps a random teacher)")
    parser.add_argument('--checkpoint',
                        help='distiller checkpoint from tools/train.py')
    parser.add_argument('--student-ckpt', help='plain student weights')
    parser.add_argument('--ann', help='GT of an image outside the dataset: '
                        'COCO json (detection) or label PNG (segmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


# ----------------------------------------------------------------------
# data
def _dataset_cfgs(cfg: Config) -> List[dict]:
    out = []
    for name in ('val_dataloader', 'test_dataloader', 'train_dataloader'):
        loader = cfg.get(name)
        if loader and loader.get('dataset') is not None:
            ds = copy.deepcopy(loader.dataset)
            if ds not in out:  # test set = val set in most configs
                out.append(ds)
    return out


def _test_pipeline(cfg: Config) -> list:
    for name in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(name)
        if loader and loader.get('dataset') is not None:
            return copy.deepcopy(loader.dataset.pipeline)
    raise ValueError('the config has no test/val dataloader pipeline')


def _find_in_datasets(cfg: Config, image: str) -> Optional[Tuple]:
    """(data_info, metainfo) of ``image`` in the config's datasets."""
    from mmengine.registry import DATASETS
    name = osp.basename(image)
    for ds_cfg in _dataset_cfgs(cfg):
        ds_cfg.pop('indices', None)
        ds_cfg['pipeline'] = []
        try:
            dataset = DATASETS.build(ds_cfg)
        except Exception:  # data root missing on this machine, ...
            continue
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            if osp.basename(info.get('img_path', '')) == name:
                return info, dataset.metainfo
    return None


def _coco_instances(ann: str, image: str, classes) -> List[dict]:
    with open(ann) as f:
        coco = json.load(f)
    name = osp.basename(image)
    img = [i for i in coco['images'] if osp.basename(i['file_name']) == name]
    if not img:
        raise ValueError(f'{image!r} is not an image of {ann}')
    cats = {c['id']: c['name'] for c in coco.get('categories', [])}
    out = []
    for a in coco['annotations']:
        if a['image_id'] != img[0]['id']:
            continue
        x, y, w, h = a['bbox']
        label = cats.get(a['category_id'])
        out.append(dict(bbox=[x, y, x + w, y + h], ignore_flag=0,
                        bbox_label=list(classes).index(label)
                        if classes and label in classes else 0))
    return out


def load_sample(cfg: Config, image: str, ann: Optional[str],
                is_seg: bool) -> Tuple[dict, dict, bool]:
    """Run the test pipeline on ``image`` with its GT when known.

    Returns:
        ``(packed, metainfo, has_gt)``: the pipeline output (``inputs``,
        ``data_samples``), the dataset metainfo and whether GT was found.
    """
    from mmengine.dataset import Compose
    found = _find_in_datasets(cfg, image)
    metainfo = found[1] if found else {}
    if found:
        info = dict(found[0])
        has_gt = True
    else:
        info = dict(img_path=image, img_id=0)
        has_gt = ann is not None
        if is_seg:
            info.update(seg_map_path=ann, reduce_zero_label=False,
                        seg_fields=[])
        elif ann is not None:
            metainfo = dict(cfg.get('metainfo', {}))
            info['instances'] = _coco_instances(
                ann, image, metainfo.get('classes'))
    info['img_path'] = image
    pipeline = _test_pipeline(cfg)
    if not has_gt:
        pipeline = [t for t in pipeline if 'LoadAnnotations' not in t['type']]
    elif not any('LoadAnnotations' in t['type'] for t in pipeline):
        pipeline.insert(1, dict(type='LoadAnnotations') if is_seg else dict(
            type='LoadAnnotations', with_bbox=True))
    packed = Compose(pipeline)(info)
    return packed, metainfo, has_gt


# ----------------------------------------------------------------------
# drawing
def _display_image(packed: dict, batch_hw: Tuple[int, int]) -> np.ndarray:
    """RGB uint8 image padded like the batch input, (H_in, W_in, 3)."""
    img = packed['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR->RGB
    out = np.zeros((batch_hw[0], batch_hw[1], 3), dtype=np.uint8)
    h, w = min(img.shape[0], batch_hw[0]), min(img.shape[1], batch_hw[1])
    out[:h, :w] = img[:h, :w]
    return out


def _to_input(map2d: torch.Tensor, hw: Tuple[int, int]) -> np.ndarray:
    """Upsample an (h, w) map to the batch input size (nearest)."""
    m = map2d.detach().float()[None, None]
    return F.interpolate(m, size=hw, mode='nearest')[0, 0].cpu().numpy()


def _boxes(sample) -> np.ndarray:
    gt = getattr(sample, 'gt_instances', None)
    if gt is None or 'bboxes' not in gt:
        return np.zeros((0, 4))
    b = gt.bboxes
    return getattr(b, 'tensor', b).reshape(-1, 4).cpu().numpy()


def _draw_boxes(ax, boxes: np.ndarray) -> None:
    for x1, y1, x2, y2 in boxes:
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                   edgecolor='lime', linewidth=1))


def _save_panels(path: str, panels: List[Tuple[str, np.ndarray, dict]],
                 boxes: Optional[np.ndarray] = None,
                 overlay_on: Optional[np.ndarray] = None) -> str:
    """One figure, one panel per (title, array, imshow kwargs)."""
    fig, axes = plt.subplots(1, len(panels),
                             figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, (title, arr, kw) in zip(axes[0], panels):
        if overlay_on is not None and arr.ndim == 2:
            ax.imshow(overlay_on)
            im = ax.imshow(arr, alpha=0.55, **kw)
        else:
            im = ax.imshow(arr, **kw)
        if arr.ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if boxes is not None:
            _draw_boxes(ax, boxes)
        ax.set_title(title, fontsize=9)
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _class_map_rgb(labels: np.ndarray, palette) -> np.ndarray:
    pal = np.array(palette if palette else
                   [[(37 * i) % 256, (91 * i) % 256, (163 * i) % 256]
                    for i in range(256)], dtype=np.uint8)
    rgb = np.zeros(labels.shape + (3, ), dtype=np.uint8)
    valid = (labels >= 0) & (labels < len(pal))
    rgb[valid] = pal[labels[valid]]
    return rgb


# ----------------------------------------------------------------------
def build_distiller(cfg: Config, teacher_ckpt: Optional[str],
                    checkpoint: Optional[str],
                    student_ckpt: Optional[str]):
    if not cfg.model.get('type', '').startswith('visionkd.'):
        raise SystemExit(f'error: {cfg.filename} is not a visionkd '
                         f'distiller config (model.type={cfg.model.type})')
    if teacher_ckpt is not None:
        cfg.model.teacher_ckpt = (None if teacher_ckpt.lower() == 'none'
                                  else teacher_ckpt)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False,
                        logger='silent')
    if student_ckpt:
        load_checkpoint(model.student, student_ckpt, map_location='cpu',
                        strict=False, logger='silent')
    return model.eval()


@torch.no_grad()
def visualize(cfg: Config, image: str, out_dir: str,
              teacher_ckpt: Optional[str] = None,
              checkpoint: Optional[str] = None,
              student_ckpt: Optional[str] = None,
              ann: Optional[str] = None) -> List[str]:
    """Write the PNGs for ``image``; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    model = build_distiller(cfg, teacher_ckpt, checkpoint, student_ckpt)
    is_seg = isinstance(model, SegmentationDistiller)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        packed, metainfo, has_gt = load_sample(cfg, image, ann, is_seg)
    data = model.data_preprocessor(
        dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]),
        training=False)
    inputs, samples = data['inputs'], data['data_samples']
    batch_hw = tuple(inputs.shape[-2:])
    shown = _display_image(packed, batch_hw)
    boxes = _boxes(samples[0]) if not is_seg else None
    written = []

    # record every term's layers (teacher stops after them, as in training)
    model.records.clear()
    model.run_teacher(inputs, samples)
    model._forward_for_records(model.student, inputs, samples,
                               model.records.student.paths)
    for term in model.distill_terms.values():
        if term.mode != 'feature':
            continue  # head-level terms record calls, not feature maps
        s_lv = model.records.student.levels(term.student_key)
        t_lv = model.records.of(term.source.targets[0]).levels(
            term.teacher_key)
        multi = len(s_lv) > 1
        for lvl, src in enumerate(term.level_ids):
            s, t = s_lv[src], t_lv[term.teacher_level_ids[lvl]]
            tag = term.name + (f'_l{src}' if multi else '')
            panels = [('image', shown, {})]
            for who, feat in (('teacher', t), ('student', s)):
                if feat.dim() == 4:
                    panels.append((
                        f'{who} {term.teacher_path if who == "teacher" else term.student_path}'  # noqa: E501
                        f' {tuple(feat.shape[1:])}, channel mean',
                        feat[0].float().mean(0).cpu().numpy(),
                        dict(cmap='viridis')))
            if len(panels) > 1:
                written.append(_save_panels(
                    osp.join(out_dir, f'{tag}_features.png'), panels))
            loss = term.losses[lvl]
            kind = type(loss).__name__
            if kind == 'FGDLoss' and t.dim() == 4:
                written += _fgd_pngs(loss, t, samples, shown, boxes,
                                     batch_hw, out_dir, tag, has_gt)
            elif kind == 'FGFILoss' and t.dim() == 4 and has_gt:
                N, _, H, W = t.shape
                mask = loss.get_mask(samples, N, H, W, t.device)[0, 0]
                written.append(_save_panels(
                    osp.join(out_dir, f'{tag}_fgfi_mask.png'),
                    [(f'FGFI imitation mask {tag} ({int(mask.sum())} of '
                      f'{H * W} cells)', _to_input(mask, batch_hw),
                      dict(cmap='Reds', vmin=0, vmax=1))],
                    boxes=boxes, overlay_on=shown))
    model.records.clear()

    if is_seg:
        written.append(_seg_png(model, inputs, samples, shown, metainfo,
                                has_gt, out_dir))
    return written


def _fgd_pngs(loss, t, samples, shown, boxes, batch_hw, out_dir, tag,
              has_gt) -> List[str]:
    out = []
    s_att, _ = loss.get_attention(t.float())
    out.append(_save_panels(
        osp.join(out_dir, f'{tag}_fgd_attention.png'),
        [(f'teacher spatial attention {tag} (FGD, T={loss.temp})',
          _to_input(s_att[0], batch_hw), dict(cmap='jet'))],
        boxes=boxes, overlay_on=shown))
    if has_gt:
        N, _, H, W = t.shape
        fg, bg = loss.get_masks(samples, N, H, W, t.device)
        out.append(_save_panels(
            osp.join(out_dir, f'{tag}_fgd_masks.png'),
            [(f'FGD foreground mask {tag}', _to_input(fg[0], batch_hw),
              dict(cmap='Reds')),
             (f'FGD background mask {tag}', _to_input(bg[0], batch_hw),
              dict(cmap='Blues'))],
            boxes=boxes, overlay_on=shown))
    return out


def _seg_png(model, inputs, samples, shown, metainfo, has_gt,
             out_dir) -> str:
    palette = metainfo.get('palette')
    names = [('image', shown, {})]
    h, w = samples[0].metainfo['img_shape'][:2]
    if has_gt and 'gt_sem_seg' in samples[0]:
        gt = samples[0].gt_sem_seg.data[0].cpu().numpy()
        gt = np.where(gt == 255, -1, gt)
        names.append(('ground truth', _class_map_rgb(gt, palette), {}))
    for who, net in (('teacher', model.teacher), ('student', model.student)):
        pred = net(inputs, copy.deepcopy(samples), mode='predict')[0]
        label = pred.pred_sem_seg.data[0].cpu().numpy()
        names.append((f'{who} ({type(net.decode_head).__name__})',
                      _class_map_rgb(label, palette), {}))
    # predictions are at the original size; show everything at that size
    panels = []
    for title, arr, kw in names:
        if title == 'image':
            arr = arr[:h, :w]
        panels.append((title, arr, kw))
    path = osp.join(out_dir, 'seg_class_maps.png')
    return _save_panels(path, panels)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if not osp.isfile(args.image):
        raise SystemExit(f'error: image {args.image!r} does not exist')
    cfg = load_config(args.config, args.cfg_options)
    paths = visualize(cfg, args.image, args.out_dir, args.teacher_ckpt,
                      args.checkpoint, args.student_ckpt, args.ann)
    for p in paths:
        print(p)


if __name__ == '__main__':
    main()
