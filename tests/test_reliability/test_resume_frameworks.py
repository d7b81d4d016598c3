"""--resume is exact for online and EMA teachers: a run resumed from its
iteration-2 checkpoint equals the uninterrupted run bit for bit at
iterations 4 and 6 (student, teacher, optimizer, schedulers)."""
import os
import os.path as osp
import shutil

import pytest

from tests.test_reliability.helpers import CFG_DIR, assert_same, load, run_tool

ONLINE = osp.join(CFG_DIR, 'faster_rcnn_bccd_mini_micro_online.py')
EMA = osp.join(CFG_DIR, 'faster_rcnn_bccd_mini_micro_ema.py')


@pytest.mark.parametrize('config,prefix', [
    (ONLINE, 'online_teachers.teacher.'), (EMA, 'ema_teachers.teacher.')],
    ids=['online', 'ema'])
def test_resume_is_exact_with_a_teacher_that_changes(tmp_path, config,
                                                     prefix):
    ref_dir, run_dir = str(tmp_path / 'ref'), str(tmp_path / 'run')
    run_tool('train.py', config, '--work-dir', ref_dir)
    # a run that stopped after iteration 2, resumed
    os.makedirs(run_dir)
    shutil.copy(osp.join(ref_dir, 'iter_2.pth'), run_dir)
    with open(osp.join(run_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(run_dir, 'iter_2.pth'))
    out = run_tool('train.py', config, '--work-dir', run_dir, '--resume')
    assert 'resumed epoch: 0, iter: 2' in out.stdout + out.stderr
    first = load(osp.join(ref_dir, 'iter_2.pth'))['state_dict']
    for it in (4, 6):
        a = load(osp.join(ref_dir, f'iter_{it}.pth'))
        b = load(osp.join(run_dir, f'iter_{it}.pth'))
        teacher = {k: v for k, v in a['state_dict'].items()
                   if k.startswith(prefix)}
        assert teacher, f'no {prefix}* in the checkpoint'
        # the teacher changed since iteration 2 (it trains / averages)
        assert any(v.is_floating_point() and not v.equal(first[k])
                   for k, v in teacher.items())
        assert_same(a['state_dict'], b['state_dict'], f'iter_{it} weights')
        assert_same(a['optimizer'], b['optimizer'], f'iter_{it} optimizer')
        assert_same(a['param_schedulers'], b['param_schedulers'],
                    f'iter_{it} schedulers')
