"""The documentation stays true: the custom-dataset recipe builds, the
model zoo lists every result row of configs/*/README.md, links resolve."""
import glob
import os.path as osp
import re

from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import BCCD_MINI, REPO

DOCS = osp.join(REPO, 'docs')


def _read(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


def _recipe_configs() -> dict:
    """``{relative path: text}`` of the config blocks in custom_dataset.md
    (python blocks whose first line is ``# configs/...py``)."""
    text = _read(osp.join(DOCS, 'custom_dataset.md'))
    out = {}
    for block in re.findall(r'```python\n(.*?)```', text, flags=re.S):
        first = block.splitlines()[0]
        m = re.fullmatch(r'# (configs/\S+\.py)', first.strip())
        if m:
            out[m.group(1)] = block
    return out


def test_custom_dataset_recipe_builds(tmp_path):
    configs = _recipe_configs()
    assert len(configs) == 3, sorted(configs)
    for rel, text in configs.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # step 2: the dataset config, copied from the example it names
    base = _read(osp.join(REPO, 'configs', '_base_', 'datasets',
                          'bccd_mini.py'))
    base = re.sub(r"data_root = .*", "data_root = '%s/'" % BCCD_MINI, base)
    ds = tmp_path / 'configs' / '_base_' / 'datasets' / 'my_det.py'
    ds.parent.mkdir(parents=True)
    ds.write_text(base)

    my = tmp_path / 'configs' / 'my'
    teacher = Config.fromfile(str(my / 'faster_rcnn_r50_my_det.py'))
    student = Config.fromfile(str(my / 'faster_rcnn_r18_my_det.py'))
    assert teacher.model.roi_head.bbox_head.num_classes == 2
    assert student.model.backbone.depth == 18
    kd = Config.fromfile(str(my / 'faster_rcnn_r50_to_r18_my_det_fgd.py'))
    assert kd.train_dataloader.dataset.data_root.startswith(BCCD_MINI)
    assert kd.model.teacher_ckpt == 'work_dirs/teacher/epoch_12.pth'
    kd.model.teacher_ckpt = None
    from visionkd.registry import MODELS
    with DefaultScope.overwrite_default_scope(kd.default_scope):
        model = MODELS.build(kd.model)
    assert model.student.backbone.depth == 18
    assert model.teacher.backbone.depth == 50
    assert model.student.roi_head.bbox_head.num_classes == 2
    assert model.distill_terms['fpn'].num_levels == 5


def test_model_zoo_lists_every_result_row():
    """docs/model_zoo.md holds every row of the configs/*/README.md results
    tables, numbers included (regenerate: tools/gather_model_zoo.py)."""
    from tools.gather_model_zoo import gather_rows
    det, seg = gather_rows(REPO)
    assert len(det) >= 8 and len(seg) >= 7
    zoo = _read(osp.join(DOCS, 'model_zoo.md'))
    missing = [row for row in det + seg if row not in zoo]
    assert not missing, ('docs/model_zoo.md is out of date; paste the rows '
                         f'of tools/gather_model_zoo.py: {missing}')


def test_readme_and_docs_links_resolve():
    files = [osp.join(REPO, 'README.md')] + glob.glob(
        osp.join(DOCS, '*.md')) + [osp.join(
            REPO, 'projects', 'plain_openmmlab_example', 'README.md')]
    broken = []
    for path in files:
        for link in re.findall(r'\]\(([^)#\s]+)', _read(path)):
            if re.match(r'[a-z]+://', link):
                continue
            if not osp.exists(osp.join(osp.dirname(path), link)):
                broken.append(f'{osp.relpath(path, REPO)}: {link}')
    assert not broken, broken
    readme = _read(osp.join(REPO, 'README.md'))
    for doc in ('getting_started', 'write_a_config', 'add_a_loss', 'faq',
                'model_zoo', 'plugin', 'visualization', 'custom_dataset'):
        assert f'docs/{doc}.md' in readme, doc


def test_supported_versions_match_requirements():
    from packaging.requirements import Requirement
    from packaging.version import Version
    text = open(osp.join(REPO, 'docs', 'supported_versions.md')).read()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 4 and cells[0] not in ('package', '---'):
            rows[cells[0]] = cells
    reqs = {}
    for line in open(osp.join(REPO, 'requirements',
                              'runtime.txt')).read().splitlines():
        line = line.split('#')[0].strip()
        if line:
            req = Requirement(line)
            reqs[req.name] = req.specifier
    assert set(rows) == set(reqs), (set(rows) ^ set(reqs))
    bootstrap = open(osp.join(REPO, 'scripts', 'bootstrap.sh')).read()
    for name, (_, required, cpu, _) in rows.items():
        spec = re.match(r'`([^`]*)`', required).group(1)
        assert spec == str(reqs[name]) or \
            set(spec.split(',')) == set(str(reqs[name]).split(',')), name
        tested = Version(cpu.split()[0].split('+')[0])
        assert reqs[name].contains(tested), (name, tested)
        pin = re.search(rf'{name}==([\w.]+)', bootstrap)
        if pin:
            assert f'`{name}=={pin.group(1)}`' in required, name
