"""Shared fixtures: tiny real mmdet/mmseg models from upstream configs."""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import visionkd  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The larger real datasets (CamVid, BCCD at full size, coco128) beside the
#: repo; a fresh clone has none. ``VISIONKD_SHARED_DATA`` points elsewhere,
#: e.g. ``VISIONKD_SHARED_DATA=/nonexistent`` runs the tests as a new user.
SHARED_DATA = os.environ.get('VISIONKD_SHARED_DATA') or osp.normpath(
    osp.join(REPO, '..', 'shared', 'data'))
#: The licence-clean BCCD subset embedded in the repo (320x240, COCO json):
#: every detection test that trains or evaluates runs on it.
BCCD_MINI = osp.join(REPO, 'tools', 'demo', 'data', 'bccd_mini')
BCCD_MINI_IMAGE = osp.join(BCCD_MINI, 'images', 'BloodImage_00000.jpg')
#: Every skip for missing shared data says this (the terminal summary below
#: counts the skips whose reason contains it).
SHARED_DATA_PHRASE = '../shared/data'
SHARED_DATA_REASON = (f'{SHARED_DATA_PHRASE} (CamVid, COCO layout) not '
                      'found beside the repo')
#: Marks a test (or module, via ``pytestmark``) that needs ../shared/data.
needs_shared_data = pytest.mark.skipif(not osp.isdir(SHARED_DATA),
                                       reason=SHARED_DATA_REASON)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line saying how many tests skipped for missing shared data."""
    skipped = [r for r in terminalreporter.stats.get('skipped', [])
               if SHARED_DATA_PHRASE in _skip_reason(r)]
    if skipped:
        n = len(skipped)
        terminalreporter.write_line(
            f"{n} test{'s' if n != 1 else ''} skipped: {SHARED_DATA_REASON}"
            f' ({SHARED_DATA}); set VISIONKD_SHARED_DATA to its path (README, '
            '"Test data")', yellow=True)

FASTER_RCNN = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
PSPNET = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'


def run_repo_script(*args: str, timeout: int = 600) -> str:
    """Run ``python *args`` in the repository root; assert it succeeds and
    return its stdout + stderr (the tail of both on failure)."""
    proc = subprocess.run([sys.executable, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def tiny_faster_rcnn(fpn_channels: int = 64, num_classes: int = 3) -> dict:
    """Faster R-CNN R18-FPN spec with narrow FPN/heads and no pretraining."""
    c = fpn_channels
    return dict(
        config=FASTER_RCNN,
        backbone=dict(depth=18, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=c),
        rpn_head=dict(in_channels=c, feat_channels=c),
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=c),
            bbox_head=dict(
                in_channels=c, fc_out_channels=64, num_classes=num_classes)))


def tiny_retinanet(fpn_channels: int = 32, num_classes: int = 3) -> dict:
    """RetinaNet R18-FPN spec with narrow FPN/head and no pretraining."""
    c = fpn_channels
    return dict(
        config=RETINANET,
        backbone=dict(depth=18, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=c),
        bbox_head=dict(
            in_channels=c, feat_channels=c, stacked_convs=1,
            num_classes=num_classes))


DINO = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
DEFORMABLE_DETR = ('mmdet::deformable_detr/'
                   'deformable-detr_r50_16xb2-50e_coco.py')


def _tiny_detr(config: str, dims: int, decoder_layers: int, queries: int,
               num_classes: int) -> dict:
    """A DETR-family spec: ResNet-18 at 1/8 width, ``dims``-wide
    one-layer encoder, ``decoder_layers`` decoder layers, no pretraining."""
    attn = dict(embed_dims=dims, num_heads=4)
    ffn = dict(embed_dims=dims, feedforward_channels=2 * dims)
    return dict(
        config=config, num_queries=queries,
        backbone=dict(depth=18, base_channels=8, init_cfg=None),
        neck=dict(in_channels=[16, 32, 64], out_channels=dims,
                  norm_cfg=dict(type='GN', num_groups=8)),
        encoder=dict(num_layers=1, layer_cfg=dict(
            self_attn_cfg=dict(attn, num_points=2), ffn_cfg=ffn)),
        decoder=dict(num_layers=decoder_layers, layer_cfg=dict(
            self_attn_cfg=attn, cross_attn_cfg=dict(attn, num_points=2),
            ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=dims // 2),
        bbox_head=dict(num_classes=num_classes, embed_dims=dims))


def tiny_dino(dims: int = 256, decoder_layers: int = 2, queries: int = 20,
              num_classes: int = 3) -> dict:
    """DINO-4scale spec (two-stage, box refinement, denoising with 10
    queries) at test size; 256 wide (mmdet's DINO decoder embeds its
    reference boxes with 128 sine features per coordinate, fixed)."""
    spec = _tiny_detr(DINO, dims, decoder_layers, queries, num_classes)
    spec['dn_cfg'] = dict(group_cfg=dict(num_dn_queries=10))
    return spec


def tiny_deformable_detr(dims: int = 32, decoder_layers: int = 2,
                         queries: int = 20, num_classes: int = 3) -> dict:
    """Deformable DETR spec (single stage: learned queries and 2-d
    reference points) at test size."""
    return _tiny_detr(DEFORMABLE_DETR, dims, decoder_layers, queries,
                      num_classes)


def tiny_pspnet(channels: int = 32, num_classes: int = 19) -> dict:
    """PSPNet R18-D8 spec with BN (not SyncBN) and no pretraining."""
    bn = dict(type='BN', requires_grad=True)
    return dict(
        config=PSPNET,
        pretrained=None,
        data_preprocessor=dict(size=(64, 64)),
        backbone=dict(norm_cfg=bn),
        decode_head=dict(
            channels=channels, norm_cfg=bn, num_classes=num_classes),
        auxiliary_head=dict(
            channels=16, norm_cfg=bn, num_classes=num_classes))


@pytest.fixture
def det_batch():
    """Two 96x128 images with boxes, preprocessed later by the model."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    return demo_mm_inputs(
        batch_size=2, image_shapes=(3, 96, 128), num_items=[3, 2],
        num_classes=3)


@pytest.fixture
def seg_batch():
    """Two 64x64 images with random 19-class label maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8))
        s = SegDataSample(metainfo=dict(img_shape=(64, 64),
                                        ori_shape=(64, 64),
                                        pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, 64, 64)))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def build_distiller(kind: str, terms: dict, student=None, teacher=None,
                    **kwargs):
    """Build a Detection/SegmentationDistiller from the visionkd registry."""
    from visionkd.registry import MODELS
    if kind == 'det':
        student = student or tiny_faster_rcnn(64)
        teacher = teacher or tiny_faster_rcnn(64)
        typ = 'DetectionDistiller'
    else:
        student = student or tiny_pspnet(32)
        teacher = teacher or tiny_pspnet(32)
        typ = 'SegmentationDistiller'
    return MODELS.build(
        dict(type=f'visionkd.{typ}', student=copy.deepcopy(student),
             teacher=copy.deepcopy(teacher),
             distill_terms=copy.deepcopy(terms), **kwargs))
