"""Checkpoints from outside load with weights_only=True; a run's own fully."""
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

import visionkd.utils.checkpoint as ckpt_mod
from tests.conftest import build_distiller
from visionkd.utils import UnsafeCheckpointError

PKD_FPN = dict(fpn=dict(student='neck', teacher='neck',
                           loss=dict(type='PKDLoss')))


class _Payload:
    """Unpickling this runs code: it creates directory ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path, )


@pytest.fixture(autouse=True)
def _no_trust(monkeypatch):
    monkeypatch.setattr(ckpt_mod, '_TRUSTED', set())
    monkeypatch.delenv(ckpt_mod.UNSAFE_ENV, raising=False)


def _evil(path, marker):
    torch.save(dict(state_dict={}, meta=_Payload(str(marker))), path)
    return str(path)


def test_code_in_a_teacher_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = _evil(tmp_path / 'teacher.pth', marker)
    with pytest.raises(UnsafeCheckpointError) as info:
        build_distiller('det', PKD_FPN, teacher_ckpt=path)
    assert not marker.exists()
    msg = str(info.value)
    assert msg.startswith('teacher_ckpt: ') and 'posix.mkdir' in msg
    assert 'tools/export_weights.py' in msg and ckpt_mod.UNSAFE_ENV in msg


def test_code_in_load_from_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = _evil(tmp_path / 'model.pth', marker)
    with pytest.raises(UnsafeCheckpointError):
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert not marker.exists()


def _training_ckpt(path):
    buf = HistoryBuffer()
    buf.update(1.5)
    torch.save(dict(state_dict=dict(w=torch.ones(2)),
                    message_hub=dict(log_scalars=dict(loss=buf)),
                    rng=np.random.get_state()), path)
    return str(path)


def test_numpy_data_loads_with_weights_only(tmp_path):
    path = tmp_path / 'rng.pth'
    torch.save(dict(rng=np.random.get_state(), a=np.arange(3)), path)
    out = ckpt_mod.load_local_checkpoint(str(path))
    assert out['rng'][0] == 'MT19937' and out['a'].tolist() == [0, 1, 2]


def test_a_runs_own_checkpoint_loads_fully(tmp_path):
    loose = _training_ckpt(tmp_path / 'iter_4.pth')
    with pytest.raises(UnsafeCheckpointError, match='HistoryBuffer'):
        ckpt_mod.load_local_checkpoint(loose)
    work = tmp_path / 'work'
    work.mkdir()
    inside = _training_ckpt(work / 'iter_4.pth')
    (work / ckpt_mod.RUN_MARKER).write_text(inside)
    out = ckpt_mod.load_local_checkpoint(inside)
    assert out['message_hub']['log_scalars']['loss'].current() == 1.5
    ckpt_mod.trust_checkpoint(str(tmp_path))
    assert ckpt_mod.load_local_checkpoint(loose)['state_dict']['w'].sum() == 2


def test_opt_in_loads_anything(tmp_path, monkeypatch):
    path = _training_ckpt(tmp_path / 'x.pth')
    monkeypatch.setenv(ckpt_mod.UNSAFE_ENV, '1')
    assert 'message_hub' in ckpt_mod.load_local_checkpoint(path)


def test_corrupt_file_is_not_called_unsafe(tmp_path):
    path = tmp_path / 'junk.pth'
    path.write_text('not a checkpoint')
    with pytest.raises(pickle.UnpicklingError) as info:
        ckpt_mod.load_local_checkpoint(str(path))
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_urls_load_with_weights_only(monkeypatch):
    calls = []

    def fake(url, weights_only, **kwargs):
        calls.append(weights_only)
        if weights_only:
            raise pickle.UnpicklingError(
                'Weights only load failed. Unsupported global: GLOBAL '
                'posix.system')
        return dict(state_dict={})

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', fake)
    url = 'https://example.org/teacher.pth'
    with pytest.raises(UnsafeCheckpointError, match='example.org'):
        CheckpointLoader.load_checkpoint(url)
    assert calls == [True]
    monkeypatch.setenv(ckpt_mod.UNSAFE_ENV, '1')
    assert CheckpointLoader.load_checkpoint(url) == dict(state_dict={})
    assert calls == [True, True, False]


def test_export_weights_gives_a_file_that_loads_anywhere(tmp_path):
    from tools.export_weights import export_weights
    src = _training_ckpt(tmp_path / 'iter_4.pth')
    dst = str(tmp_path / 'weights.pth')
    assert export_weights(src, dst) == 1
    out = torch.load(dst, weights_only=True)
    assert out['state_dict']['w'].tolist() == [1.0, 1.0]
    assert out['meta']['visionkd_exported_from'].endswith('iter_4.pth')
