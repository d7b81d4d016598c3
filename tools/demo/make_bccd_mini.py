"""Build ``bccd_mini``: a small, downscaled, MIT-licensed detection subset.

The source is the BCCD blood-cell dataset in COCO json form
(``../shared/data/bccd`` from the repository root). The first ``--num-train`` /
``--num-val`` images of each split (sorted by image id) are resized by
``--scale`` and re-encoded as JPEG (quality 90); boxes and areas are scaled to
match. Image, annotation and category ids are kept as in the source. The
output is deterministic for a given Pillow version.

Example:
    Run from the repository root::

        .venv/bin/python tools/demo/make_bccd_mini.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SRC = REPO_ROOT.parent / 'shared' / 'data' / 'bccd'
DEFAULT_DST = REPO_ROOT / 'tools' / 'demo' / 'data' / 'bccd_mini'
JPEG_QUALITY = 90
MIN_BOX_SIDE = 1.0
SPLITS = ('train', 'val')


def parse_args() -> argparse.Namespace:
    """Parse command-line arguments.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--src',
        type=Path,
        default=DEFAULT_SRC,
        help='BCCD root with annotations/{train,val}.json, images/ and '
        'LICENSE (default: ../shared/data/bccd relative to the repo root)')
    parser.add_argument(
        '--dst',
        type=Path,
        default=DEFAULT_DST,
        help='output root (default: tools/demo/data/bccd_mini relative to '
        'the repo root)')
    parser.add_argument(
        '--num-train',
        type=int,
        default=120,
        help='number of train images to keep (lowest image ids first)')
    parser.add_argument(
        '--num-val',
        type=int,
        default=40,
        help='number of val images to keep (lowest image ids first)')
    parser.add_argument('--scale',
                        type=float,
                        default=0.5,
                        help='image resize factor')
    return parser.parse_args()


def _scale_value(value: float, factor: float) -> float:
    """Scale a coordinate and round away float noise.

    Args:
        value (float): The value to scale.
        factor (float): The multiplicative factor.

    Returns:
        float: ``value * factor`` rounded to 4 decimals.
    """
    return round(float(value) * factor, 4)


def subset_split(coco: dict[str, Any], num_images: int, scale: float,
                 size: tuple[int, int]) -> tuple[dict[str, Any], int]:
    """Take the first images of a COCO dict and scale their annotations.

    Args:
        coco (dict[str, Any]): Source COCO annotations (``images``,
            ``annotations``, ``categories``).
        num_images (int): How many images to keep, lowest image ids first.
        scale (float): Factor applied to boxes; areas get ``scale ** 2``.
        size (tuple[int, int]): Output ``(width, height)`` of every image.

    Returns:
        tuple[dict[str, Any], int]: The new COCO dict and the number of
        boxes dropped because a scaled side was below ``MIN_BOX_SIDE``.
    """
    images = sorted(coco['images'], key=lambda img: img['id'])[:num_images]
    if len(images) < num_images:
        raise ValueError(f'asked for {num_images} images, source has '
                         f'only {len(images)}')
    new_images = []
    for img in images:
        new_img = dict(img)
        new_img['width'], new_img['height'] = size
        new_images.append(new_img)

    keep_ids = {img['id'] for img in images}
    new_anns = []
    dropped = 0
    for ann in sorted(coco['annotations'], key=lambda a: a['id']):
        if ann['image_id'] not in keep_ids:
            continue
        bbox = [_scale_value(v, scale) for v in ann['bbox']]
        if bbox[2] < MIN_BOX_SIDE or bbox[3] < MIN_BOX_SIDE:
            dropped += 1
            continue
        new_ann = dict(ann)
        new_ann['bbox'] = bbox
        new_ann['area'] = _scale_value(ann['area'], scale * scale)
        new_anns.append(new_ann)

    new_coco = dict(coco)
    new_coco['images'] = new_images
    new_coco['annotations'] = new_anns
    new_coco['categories'] = coco['categories']
    return new_coco, dropped


def resize_image(src: Path, dst: Path, scale: float,
                 expected: tuple[int, int]) -> tuple[int, int]:
    """Resize one image by ``scale`` and save it as JPEG.

    Args:
        src (Path): Source image file.
        dst (Path): Output JPEG file.
        scale (float): Resize factor.
        expected (tuple[int, int]): Source ``(width, height)`` from the json.

    Returns:
        tuple[int, int]: The output ``(width, height)``.
    """
    with Image.open(src) as img:
        if img.size != expected:
            raise ValueError(f'{src}: size {img.size} != json {expected}')
        new_size = (round(img.width * scale), round(img.height * scale))
        out = img.convert('RGB').resize(new_size, Image.Resampling.LANCZOS)
    out.save(dst, format='JPEG', quality=JPEG_QUALITY)
    return new_size


def write_license(src: Path, dst: Path, scale: float) -> None:
    """Copy the BCCD licence with a note that this is a derived subset.

    Args:
        src (Path): The source ``LICENSE`` file.
        dst (Path): The output ``LICENSE`` file.
        scale (float): Resize factor, quoted in the note.
    """
    note = (f'This is a derived subset (images downscaled by {scale:g}) of '
            'the BCCD dataset (https://github.com/Shenggan/BCCD_Dataset), '
            'redistributed under its original licence below.\n\n')
    dst.write_text(note + src.read_text(encoding='utf-8'), encoding='utf-8')


def write_readme(dst: Path, scale: float, size: tuple[int, int],
                 counts: dict[str, tuple[int, int]]) -> None:
    """Write a short README describing the subset.

    Args:
        dst (Path): The output ``README.md`` file.
        scale (float): Resize factor.
        size (tuple[int, int]): Output ``(width, height)`` of the images.
        counts (dict[str, tuple[int, int]]): ``split -> (images, boxes)``.
    """
    split_lines = [
        f'- `annotations/{split}.json`: {n_img} images, {n_box} boxes '
        f'(first {n_img} BCCD {split} images by id).'
        for split, (n_img, n_box) in counts.items()
    ]
    lines = [
        '# bccd_mini: small blood-cell detection demo set',
        '- Source: BCCD dataset (https://github.com/Shenggan/BCCD_Dataset), '
        'COCO json; classes RBC, WBC, Platelets (ids 1-3).',
        '- Licence: MIT, see `LICENSE` (copied from BCCD).',
        f'- Changes: images resized by {scale:g} to {size[0]}x{size[1]} '
        f'(JPEG q{JPEG_QUALITY}); bbox scaled by {scale:g}, area by '
        f'{scale * scale:g}; original ids kept.',
        *split_lines,
        '- Made by `tools/demo/make_bccd_mini.py` (deterministic).',
    ]
    dst.write_text('\n'.join(lines) + '\n', encoding='utf-8')


def main() -> None:
    """Build the subset from the command-line arguments."""
    args = parse_args()
    src: Path = args.src
    dst: Path = args.dst
    img_dst = dst / 'images'
    ann_dst = dst / 'annotations'
    img_dst.mkdir(parents=True, exist_ok=True)
    ann_dst.mkdir(parents=True, exist_ok=True)

    num_images = {'train': args.num_train, 'val': args.num_val}
    counts: dict[str, tuple[int, int]] = {}
    written: set[str] = set()
    out_size: tuple[int, int] | None = None
    for split in SPLITS:
        with open(src / 'annotations' / f'{split}.json',
                  encoding='utf-8') as f:
            coco = json.load(f)
        kept = sorted(coco['images'], key=lambda img: img['id'])
        for img in kept[:num_images[split]]:
            size = resize_image(src / 'images' / img['file_name'],
                                img_dst / img['file_name'], args.scale,
                                (img['width'], img['height']))
            if out_size is not None and size != out_size:
                raise ValueError('source images differ in size')
            out_size = size
            written.add(img['file_name'])
        assert out_size is not None
        new_coco, dropped = subset_split(coco, num_images[split], args.scale,
                                         out_size)
        with open(ann_dst / f'{split}.json', 'w', encoding='utf-8') as f:
            json.dump(new_coco, f)
            f.write('\n')
        counts[split] = (len(new_coco['images']), len(new_coco['annotations']))
        print(f'{split}: {counts[split][0]} images, {counts[split][1]} '
              f'boxes, {dropped} dropped (side < {MIN_BOX_SIDE:g})')

    # Drop images left over from an earlier run with other settings.
    for stale in sorted(img_dst.glob('*.jpg')):
        if stale.name not in written:
            stale.unlink()

    assert out_size is not None
    write_license(src / 'LICENSE', dst / 'LICENSE', args.scale)
    write_readme(dst / 'README.md', args.scale, out_size, counts)


if __name__ == '__main__':
    main()
