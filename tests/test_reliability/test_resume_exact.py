"""A SIGKILLed distillation run resumed with --resume equals an
uninterrupted run bit for bit (student, connector and loss parameters,
optimizer, LR schedulers, weight schedule/stop hooks, RNG)."""
import os
import os.path as osp
import signal
import subprocess
import time

import pytest

from tests.conftest import REPO, build_distiller, needs_shared_data
from tests.test_reliability.helpers import (
    DET_MICRO_KD,
    MICRO_KD,
    assert_same,
    last_checkpoint,
    load,
    run_tool,
    save_teacher_ckpt,
    tool_cmd,
    tool_env,
)


# detection on the embedded BCCD subset; segmentation on CamVid
@pytest.mark.parametrize('config', [
    DET_MICRO_KD, pytest.param(MICRO_KD, marks=needs_shared_data)],
    ids=['det', 'seg'])
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, config):
    teacher = str(tmp_path / 'teacher.pth')
    save_teacher_ckpt(config, teacher)
    ref_dir, run_dir = str(tmp_path / 'ref'), str(tmp_path / 'run')
    opts = ['--cfg-options', f'model.teacher_ckpt={teacher}']
    # the reference and the run to be killed start together
    ref = subprocess.Popen(
        tool_cmd('train.py', config, '--work-dir', ref_dir, *opts),
        cwd=REPO, env=tool_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(
        tool_cmd('train.py', config, '--work-dir', run_dir, *opts),
        cwd=REPO, env=tool_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while last_checkpoint(run_dir) is None:
        assert victim.poll() is None, 'the run ended before a checkpoint'
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_at = load(last_checkpoint(run_dir))['meta']['iter']
    assert 0 < killed_at < 6
    assert not osp.exists(osp.join(run_dir, 'iter_6.pth'))
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]

    out = run_tool('train.py', config, '--work-dir', run_dir, '--resume',
                   *opts)
    log = out.stdout + out.stderr
    assert f'resumed epoch: 0, iter: {killed_at}' in log
    assert 'loss_kd_mgd' in log

    for it in range(killed_at + 2, 7, 2):
        name = f'iter_{it}.pth'
        a = load(osp.join(ref_dir, name))
        b = load(osp.join(run_dir, name))
        # student + connector + loss parameters (MGD generator), no teacher
        assert any(k.startswith('distill_terms.feat.connectors')
                   for k in a['state_dict'])
        assert any(k.startswith('distill_terms.mgd.losses')
                   for k in a['state_dict'])
        assert not any(k.startswith('teacher') for k in a['state_dict'])
        assert_same(a['state_dict'], b['state_dict'], f'{name} weights')
        assert_same(a['optimizer'], b['optimizer'], f'{name} optimizer')
        assert_same(a['param_schedulers'], b['param_schedulers'],
                    f'{name} schedulers')
        assert_same(a['visionkd_rng_state'], b['visionkd_rng_state'],
                    f'{name} rng')
        assert a['meta']['iter'] == b['meta']['iter'] == it
    # the logged losses of the resumed iterations match too
    hub_a = load(osp.join(ref_dir, 'iter_6.pth'))['message_hub']
    hub_b = load(osp.join(run_dir, 'iter_6.pth'))['message_hub']
    for hub in (hub_a, hub_b):
        kd = list(hub['log_scalars']['train/loss_kd_feat']._log_history)
        # warm-up factor 0 at iteration 0; DistillStopHook(stop_iter=5)
        # leaves iterations 0-4 with distillation terms, in both runs
        assert len(kd) == 5 and kd[0] == 0.0 and kd[1] > 0.0
    for key in ('train/loss', 'train/loss_kd_mgd', 'train/loss_kd_feat'):
        a_hist = hub_a['log_scalars'][key]._log_history[killed_at:]
        b_hist = hub_b['log_scalars'][key]._log_history[-len(a_hist):]
        assert list(a_hist) == list(b_hist), key


def test_resume_keeps_the_teacher_from_teacher_ckpt(tmp_path):
    """Loading a distiller checkpoint (what --resume does) leaves the
    teacher as loaded from teacher_ckpt: it is not in checkpoints."""
    import torch
    from mmengine.runner import load_checkpoint

    from tests.conftest import tiny_faster_rcnn
    from visionkd.registry import MODELS
    from visionkd.utils import resolve_model_cfg
    pkd = dict(fpn=dict(student='neck', teacher='neck',
                        loss=dict(type='PKDLoss')))
    torch.manual_seed(5)
    teacher = MODELS.build(resolve_model_cfg(tiny_faster_rcnn(64), 'mmdet',
                                             'teacher'))
    for p in teacher.parameters():
        torch.nn.init.normal_(p, std=0.1)
    t_path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=teacher.state_dict()), t_path)
    trained = build_distiller('det', pkd, teacher_ckpt=str(t_path))
    ckpt = tmp_path / 'iter_2.pth'
    torch.save(dict(state_dict=trained.state_dict(), meta={}), ckpt)
    assert not any(k.startswith('teacher') for k in trained.state_dict())

    torch.manual_seed(99)  # a fresh process: other initial weights
    resumed = build_distiller('det', pkd, teacher_ckpt=str(t_path))
    load_checkpoint(resumed, str(ckpt), map_location='cpu', strict=True)
    assert_same(resumed.teacher.state_dict(), teacher.state_dict(),
                'teacher')
    assert_same(resumed.state_dict(), trained.state_dict(), 'student')
