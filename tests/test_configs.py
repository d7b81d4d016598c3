"""Every distiller config in configs/ builds (no checkpoint, no download),
with the state-dict keys of the committed list (existing checkpoints load).

Regenerate the list after a deliberate change of a config's parameters:
``python -m tests.test_configs --write-state-dict-keys``.
"""
import glob
import hashlib
import json
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.conftest import REPO
from visionkd.registry import MODELS
from visionkd.utils import without_teacher_weights


def _kd_configs() -> list:
    """Configs of a visionkd distiller: naming one, or inheriting (with a
    relative ``_base_``) from one."""
    import re
    paths = sorted(
        p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                             recursive=True)
        if '_base_' not in osp.relpath(p, REPO).split(osp.sep))
    texts = {p: open(p).read() for p in paths}
    kd = {p for p, t in texts.items() if "'visionkd." in t}
    grown = True
    while grown:
        grown = False
        for p, t in texts.items():
            bases = {osp.normpath(osp.join(osp.dirname(p), b))
                     for b in re.findall(r"'(\.{1,2}/[^']+\.py)'", t)}
            if p not in kd and bases & kd:
                kd.add(p)
                grown = True
    return sorted(kd)


KD_CONFIGS = _kd_configs()


#: the distiller's own keys (connectors, loss parameters) per config, and
#: the student's keys as a count and a hash (they are mmdet's/mmseg's)
STATE_KEYS = osp.join(REPO, 'tests', 'data', 'distiller_state_dict_keys.json')


#: state-dict prefixes of whole models (summarised by count and hash)
_MODELS = ('student.', 'online_teachers.', 'ema_teachers.')


def state_dict_summary(model) -> dict:
    """The distiller's non-student keys in full, the student's as a hash."""
    keys = sorted(model.state_dict())
    student = [k for k in keys if k.startswith('student.')]
    out = dict(
        distiller_keys=[k for k in keys if not k.startswith(_MODELS)],
        student_keys=len(student),
        student_keys_sha256=hashlib.sha256(
            '\n'.join(student).encode()).hexdigest())
    # online and EMA teachers: whole mmdet/mmseg models, summarised so
    teachers = [k for k in keys if k.startswith(_MODELS[1:])]
    if teachers:
        out['teacher_keys'] = len(teachers)
        out['teacher_keys_sha256'] = hashlib.sha256(
            '\n'.join(teachers).encode()).hexdigest()
    return out


def build_config_model(path: str):
    cfg = Config.fromfile(path)
    without_teacher_weights(cfg.model)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return cfg, MODELS.build(cfg.model)


def test_kd_configs_exist():
    names = {osp.basename(p) for p in KD_CONFIGS}
    assert {'faster_rcnn_r101_to_r18.py',
            'pspnet_r101_to_r18_cityscapes.py'} <= names


@pytest.mark.parametrize('path', KD_CONFIGS,
                         ids=[osp.relpath(p, REPO) for p in KD_CONFIGS])
def test_kd_config_builds(path):
    cfg, model = build_config_model(path)
    assert cfg.model.type.startswith('visionkd.')
    assert len(model.distill_terms) >= 1
    committed = json.load(open(STATE_KEYS))
    rel = osp.relpath(path, REPO)
    assert rel in committed, (f'{rel} has no entry in {STATE_KEYS}; run '
                              f'python -m tests.test_configs '
                              f'--write-state-dict-keys')
    assert state_dict_summary(model) == committed[rel], (
        f'the state-dict keys of {rel} changed: its checkpoints would no '
        f'longer load')
    for term in model.distill_terms.values():
        assert term.num_levels >= 1
    # short configs: teacher/student by reference, data/schedule by _base_
    text = open(path).read()
    assert len(text.splitlines()) < 60
    for name, teacher in model.teachers.items():
        if model.teacher_kind(name) in ('frozen', 'ema'):
            assert not any(p.requires_grad for p in teacher.parameters())
    del model
    torch.set_grad_enabled(True)


def write_state_dict_keys() -> None:
    """Write the state-dict summary of every config to STATE_KEYS."""
    import visionkd  # noqa: F401
    out = {}
    for path in KD_CONFIGS:
        _, model = build_config_model(path)
        out[osp.relpath(path, REPO)] = state_dict_summary(model)
        del model
    with open(STATE_KEYS, 'w') as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write('\n')
    print(f'wrote {len(out)} configs to {STATE_KEYS}')


if __name__ == '__main__' and '--write-state-dict-keys' in sys.argv:
    write_state_dict_keys()
