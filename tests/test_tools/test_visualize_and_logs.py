"""Distillation logs (one key per term, progress) and the analysis tools:
visualize_distill.py and plot_curves.py on the embedded BCCD subset and
../shared/data/camvid."""
import json
import os.path as osp
import re
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from tests.conftest import (
    BCCD_MINI_IMAGE,
    REPO,
    SHARED_DATA,
    needs_shared_data,
)
from tools.analysis_tools.plot_curves import find_scalar_logs, read_scalars
from tools.analysis_tools.plot_curves import main as plot_main
from tools.analysis_tools.visualize_distill import main as vis_main

CFG = osp.join(REPO, 'tests', 'data', 'configs')
BCCD_IMAGE = BCCD_MINI_IMAGE
FGD_FGFI = osp.join(CFG, 'faster_rcnn_bccd_tiny_fgd_fgfi.py')
CAMVID_IMAGE = osp.join(SHARED_DATA, 'camvid', 'leftImg8bit', 'val',
                        'camvid', '0016E5_07959_leftImg8bit.png')
KD_KEYS = ['loss_kd_fgd_l0', 'loss_kd_fgd_l1', 'loss_kd_fgfi_l0',
           'loss_kd_fgfi_l1']

def _assert_picture(path: str) -> np.ndarray:
    """The PNG exists, is an image and is not a constant picture."""
    assert osp.isfile(path), path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.02, f'{path} is (nearly) constant'
    return img


@pytest.fixture(scope='module')
def fgd_fgfi_run(tmp_path_factory):
    """tools/train.py, 3 iterations + validation, FGD and FGFI terms."""
    work = tmp_path_factory.mktemp('fgd_fgfi')
    proc = subprocess.run(
        [sys.executable, 'tools/train.py',
         FGD_FGFI, '--work-dir',
         str(work), '--cfg-options', 'randomness.seed=0'], cwd=REPO,
        capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return work, out


def test_every_distill_term_is_logged_by_name(fgd_fgfi_run):
    work, out = fgd_fgfi_run
    train_lines = [ln for ln in out.splitlines() if 'Iter(train)' in ln]
    assert len(train_lines) == 3  # logger interval 1
    for line in train_lines:
        for key in KD_KEYS + ['loss_cls', 'loss_rpn_cls']:
            assert re.search(rf'\b{key}: -?\d', line), (key, line)
    # progress: counters with ETA while training and while evaluating
    assert re.search(r'Iter\(train\) \[3/3\].*eta: ', out)
    assert re.search(r'Iter\(val\) \[2/2\].*eta: ', out)
    # the same names in mmengine's scalar log (vis_data/scalars.json)
    log, = find_scalar_logs(str(work))
    train, val = read_scalars([log])
    for key in KD_KEYS:
        assert train[key][0] == [1, 2, 3]
    # (a random tiny detector may predict no box, and then CocoMetric
    # logs no metric: metric curves are tested on a written log below)
    assert all(key.startswith('coco/') for key in val)


def test_plot_curves_draws_losses_and_metrics(fgd_fgfi_run, tmp_path):
    work, _ = fgd_fgfi_run
    out = tmp_path / 'curves.png'
    plot_main([str(work), '--out', str(out)])
    img = _assert_picture(str(out))
    assert img.shape[1] > 2 * img.shape[0]  # loss panels side by side
    only = tmp_path / 'only.png'
    plot_main([str(work), '--out', str(only), '--keys', 'loss_kd_fgd_l0'])
    _assert_picture(str(only))


def test_plot_curves_reads_train_and_val_lines(tmp_path):
    lines = []
    for it in range(1, 5):
        lines.append(dict(lr=0.01, loss=3.0 / it, loss_cls=1.0 / it,
                          loss_kd_a=2.0 / it, loss_kd_b_l0=0.5, iter=it,
                          step=it, time=0.1))
        if it % 2 == 0:
            lines.append({'mIoU': 10.0 * it, 'step': it, 'time': 0.2})
    log = tmp_path / 'scalars.json'
    log.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    train, val = read_scalars([str(log)])
    assert train['loss_kd_a'] == ([1, 2, 3, 4], [2.0, 1.0, 2 / 3, 0.5])
    assert val == {'mIoU': ([2, 4], [20.0, 40.0])}
    assert 'time' not in train and 'lr' not in train
    out = tmp_path / 'c.png'
    plot_main([str(log), '--out', str(out)])
    img = _assert_picture(str(out))
    assert img.shape[1] > 3 * img.shape[0]  # distill, task, metric panels


def test_plot_curves_adds_a_gradient_share_panel(tmp_path):
    lines = [dict(lr=0.01, loss=1.0, loss_kd_a=0.5, grad_share_a=0.1 * it,
                  iter=it, step=it) for it in range(1, 4)]
    log = tmp_path / 'scalars.json'
    log.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    train, _ = read_scalars([str(log)])
    assert train['grad_share_a'][1] == pytest.approx([0.1, 0.2, 0.3])
    with_share, without = tmp_path / 's.png', tmp_path / 'n.png'
    plot_main([str(log), '--out', str(with_share)])
    plot_main([str(log), '--out', str(without), '--keys', 'loss',
               'loss_kd_a'])
    wide = _assert_picture(str(with_share)).shape[1]
    assert wide > 1.4 * _assert_picture(str(without)).shape[1]


def test_plot_curves_rejects_a_log_without_curves(tmp_path):
    log = tmp_path / 'scalars.json'
    log.write_text(json.dumps({'lr': 0.1, 'iter': 1, 'step': 1}) + '\n')
    with pytest.raises(ValueError, match='no loss or metric'):
        plot_main([str(log), '--out', str(tmp_path / 'x.png')])
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        plot_main([str(tmp_path / 'empty_dir_'), '--out', 'x.png'])


def test_visualize_detection_terms(fgd_fgfi_run, tmp_path, capsys):
    work, _ = fgd_fgfi_run
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    vis_main([FGD_FGFI, BCCD_IMAGE,
              '--checkpoint', ckpt, '--out-dir', str(tmp_path)])
    printed = capsys.readouterr().out.split()
    names = ['fgd_l0_features', 'fgd_l0_fgd_attention', 'fgd_l0_fgd_masks',
             'fgd_l1_fgd_masks', 'fgfi_l0_features', 'fgfi_l0_fgfi_mask',
             'fgfi_l1_fgfi_mask']
    for name in names:
        path = str(tmp_path / f'{name}.png')
        assert path in printed
        _assert_picture(path)


def test_visualize_ann_option_for_an_image_outside_the_dataset(tmp_path):
    """An image the config's datasets do not hold takes GT from --ann."""
    import shutil
    image = tmp_path / 'my_cells.jpg'
    shutil.copy(BCCD_IMAGE, image)
    ann = tmp_path / 'ann.json'
    ann.write_text(json.dumps(dict(
        images=[dict(id=7, file_name='my_cells.jpg', width=320,
                     height=240)],
        annotations=[dict(id=1, image_id=7, category_id=1,
                          bbox=[50, 50, 100, 75], area=7500,
                          iscrowd=0)],
        categories=[dict(id=1, name='WBC')])))
    out = tmp_path / 'vis'
    vis_main([FGD_FGFI, str(image),
              '--ann', str(ann), '--out-dir', str(out)])
    masks = _assert_picture(str(out / 'fgd_l0_fgd_masks.png'))
    assert masks is not None
    no_ann = tmp_path / 'vis_no_ann'
    vis_main([FGD_FGFI, str(image),
              '--out-dir', str(no_ann)])
    # without GT: features and attention, but no GT masks
    assert (no_ann / 'fgd_l0_fgd_attention.png').is_file()
    assert not (no_ann / 'fgd_l0_fgd_masks.png').exists()
    assert not (no_ann / 'fgfi_l0_fgfi_mask.png').exists()


@needs_shared_data
def test_visualize_segmentation_class_maps(tmp_path):
    vis_main([osp.join(CFG, 'pspnet_camvid_tiny_cwd.py'), CAMVID_IMAGE,
              '--out-dir', str(tmp_path)])
    _assert_picture(str(tmp_path / 'logits_features.png'))
    img = _assert_picture(str(tmp_path / 'seg_class_maps.png'))
    # image, ground truth, teacher, student side by side
    assert img.shape[1] > 3.5 * img.shape[0]


def test_visualize_rejects_a_plain_config(tmp_path):
    with pytest.raises(SystemExit, match='not a visionkd distiller'):
        vis_main([osp.join(CFG, 'faster_rcnn_bccd_tiny.py'), BCCD_IMAGE,
                  '--out-dir', str(tmp_path)])
