"""``visionkd::`` configs resolve from the imported package and build."""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import visionkd
from tests.conftest import REPO
from visionkd.utils import config_root, resolve_config

PACKAGE_PARENT = osp.dirname(osp.dirname(osp.abspath(visionkd.__file__)))

CHILD = """_base_ = ['visionkd::kd/faster_rcnn_r101_to_r18.py']
model = dict(
    teacher_ckpt=None,  # no download in tests
    student=dict(backbone=dict(init_cfg=None)),
    distill_terms=dict(fpn=dict(loss=dict(temp=0.8))))
"""


def test_root_follows_the_imported_package():
    # a checkout (editable install or PYTHONPATH): configs/ beside visionkd
    assert config_root() == osp.join(PACKAGE_PARENT, 'configs')
    path = resolve_config('visionkd::kd/faster_rcnn_r101_to_r18.py')
    assert path == osp.join(PACKAGE_PARENT, 'configs', 'kd',
                            'faster_rcnn_r101_to_r18.py')


def test_unknown_config_lists_the_folder():
    with pytest.raises(FileNotFoundError, match='faster_rcnn_r101_to_r18'):
        resolve_config('visionkd::kd/faster_rcnn_r101_to_r1.py')


def test_config_outside_repo_inherits_and_builds(tmp_path):
    child = tmp_path / 'my_project' / 'my_kd.py'
    child.parent.mkdir()
    child.write_text(CHILD)
    cfg = Config.fromfile(str(child))
    # the overridden value and the inherited ones
    loss = cfg.model.distill_terms.fpn.loss
    assert loss.type == 'FGDLoss' and loss.temp == 0.8
    assert loss.alpha_fgd == 0.00005
    assert cfg.model.teacher_ckpt is None
    assert cfg.optim_wrapper.clip_grad.max_norm == 35
    # bases of the visionkd config keep their mmdet scope
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'
    assert cfg.default_scope == 'mmdet'
    from visionkd.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'DetectionDistiller'
    assert len(model.distill_terms['fpn'].losses) == 5
    assert model.distill_terms['fpn'].losses[0].temp == 0.8


def test_teacher_from_visionkd_scope():
    from visionkd.utils import resolve_model_cfg
    cfg = resolve_model_cfg(
        'visionkd::demo/faster_rcnn_r18x2_bccd_teacher.py', 'mmdet',
        'teacher')
    assert cfg.type == 'FasterRCNN' and cfg._scope_ == 'mmdet'


def _copy_sources(dst: str) -> None:
    for name in ('setup.py', 'setup.cfg', 'MANIFEST.in', 'README.md',
                 'LICENSE', 'CHANGELOG.md'):
        if osp.exists(osp.join(REPO, name)):
            shutil.copy(osp.join(REPO, name), dst)
    skip = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for name in ('requirements', 'visionkd', 'configs'):
        shutil.copytree(osp.join(REPO, name), osp.join(dst, name),
                        ignore=skip)


def test_wheel_from_sdist_ships_configs(tmp_path):
    """A non-editable install (sdist -> wheel) resolves visionkd:: too."""
    src = tmp_path / 'src'
    src.mkdir()
    _copy_sources(str(src))
    run = dict(capture_output=True, text=True, timeout=300)
    proc = subprocess.run(
        [sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp_path)],
        cwd=src, **run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sdist, = glob.glob(str(tmp_path / 'visionkd-*.tar.gz'))
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
         '--no-build-isolation', '-q', '-w', str(tmp_path), sdist],
        cwd=tmp_path, **run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel, = glob.glob(str(tmp_path / 'visionkd-*.whl'))
    site = tmp_path / 'site'
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    assert 'visionkd/.mim/configs/kd/faster_rcnn_r101_to_r18.py' in names
    assert not any(n.startswith(('tools/', 'tests/')) for n in names)
    (tmp_path / 'child.py').write_text(CHILD)
    code = (
        'import visionkd, os.path as osp\n'
        'from mmengine.config import Config\n'
        'from visionkd.utils import resolve_config\n'
        'print(osp.dirname(visionkd.__file__))\n'
        "print(resolve_config('visionkd::kd/faster_rcnn_r101_to_r18.py'))\n"
        "cfg = Config.fromfile('child.py')\n"
        'print(cfg.model.distill_terms.fpn.loss.temp)\n')
    env = dict(os.environ, PYTHONPATH=str(site))  # the wheel, not the repo
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                          env=env, **run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pkg, path, temp = proc.stdout.split()[-3:]
    assert pkg == str(site / 'visionkd')
    assert path == str(site / 'visionkd' / '.mim' / 'configs' / 'kd' /
                       'faster_rcnn_r101_to_r18.py')
    assert temp == '0.8'


PLAIN_TOOL = """import sys
from mmengine.config import Config
cfg = Config.fromfile(sys.argv[1])
print('temp', cfg.model.distill_terms.fpn.loss.temp)
"""


def test_plain_tool_needs_visionkd_imported_first(tmp_path):
    """docs/plugin.md: mmdet's own tools/train.py parses `_base_` before
    `custom_imports`; the documented runpy line imports visionkd first."""
    (tmp_path / 'train.py').write_text(PLAIN_TOOL)  # stands for mmdet's
    (tmp_path / 'child.py').write_text(CHILD)
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=300)
    proc = subprocess.run([sys.executable, 'train.py', 'child.py'], **run)
    assert proc.returncode != 0
    assert 'does not support to load visionkd config' in proc.stderr
    with open(osp.join(REPO, 'docs', 'plugin.md')) as f:
        doc = f.read()
    line = doc.split('python -c "', 1)[1].split('"', 1)[0]
    line = line.replace('\\\n', '')
    proc = subprocess.run(
        [sys.executable, '-c', line, 'train.py', 'child.py'], **run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'temp 0.8' in proc.stdout
