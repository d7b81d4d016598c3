"""Runs as cluster jobs (issue #19, item 5): ``--executor slurm`` through
submitit, tested with submitit's local executor (same pickled job, job
folder and result path as Slurm, on this machine)."""
import json
import os
import os.path as osp

import pytest

from tests.conftest import SHARED_DATA
from visionkd.experiments.cluster import (
    ClusterOptions,
    make_executor,
    run_as_job,
)
from visionkd.experiments.run_executor import RunFailed
from visionkd.experiments.run_plan import Run

submitit = pytest.importorskip('submitit')
CAMVID = osp.join(SHARED_DATA, 'camvid')


def test_slurm_parameters_are_the_options():
    opts = ClusterOptions(executor='slurm', partition='gpu', gpus=1, cpus=8,
                          timeout_min=90, mem_gb=32,
                          extra={'account': 'kd', 'qos': 'high'})
    assert opts.slurm_parameters() == dict(
        nodes=1, ntasks_per_node=1, cpus_per_task=8, time=90,
        gpus_per_node=1, partition='gpu', mem='32GB', account='kd',
        qos='high')
    # no GPU, partition or memory asked: Slurm's defaults
    assert ClusterOptions(executor='slurm').slurm_parameters() == dict(
        nodes=1, ntasks_per_node=1, cpus_per_task=4, time=240)


def test_slurm_executor_gets_the_parameters(tmp_path, monkeypatch):
    """The SlurmExecutor (a stand-in ``srun`` on PATH: nothing is
    submitted) holds the options, writes them into its sbatch script, and
    its job folder is under the work dir."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text('#!/bin/sh\nexit 1\n')
    (bin_dir / 'srun').chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    ex = make_executor(ClusterOptions(executor='slurm', partition='p1',
                                      gpus=2, cpus=6, timeout_min=30),
                       str(tmp_path))
    assert isinstance(ex, submitit.SlurmExecutor)
    params = ex.parameters
    assert (params['partition'], params['gpus_per_node'],
            params['cpus_per_task'], params['time']) == ('p1', 2, 6, 30)
    assert str(ex.folder).startswith(str(tmp_path / 'submitit'))
    script = ex._make_submission_file_text('python -m run', 'uid')
    for line in ('#SBATCH --partition=p1', '#SBATCH --gpus-per-node=2',
                 '#SBATCH --cpus-per-task=6', '#SBATCH --time=30'):
        assert line in script, script
    assert make_executor(ClusterOptions(), str(tmp_path)) is None


@pytest.mark.parametrize('kwargs', [dict(executor='pbs'), dict(gpus=-1),
                                    dict(cpus=0), dict(timeout_min=0)])
def test_bad_cluster_options(kwargs):
    with pytest.raises(ValueError, match='executor|resources'):
        ClusterOptions(**kwargs)


def test_time_budget_refuses_slurm(tmp_path):
    from visionkd.experiments.dataset_configs import DataSpec
    from visionkd.experiments.experiment import (
        ExperimentOptions,
        run_experiments,
    )
    opts = ExperimentOptions(
        task='seg', data=DataSpec(CAMVID, 'train', 'val'),
        work_dir=str(tmp_path), preset='tiny', methods=['cwd'],
        budget='time', cluster=ClusterOptions(executor='slurm'))
    with pytest.raises(ValueError, match='--executor local'):
        run_experiments(opts)


def test_failed_job_is_a_run_failed(tmp_path):
    """A run that fails inside its job (no config) fails as a local run
    does: RunFailed naming the run, the job and its log folder."""
    ex = make_executor(ClusterOptions(executor='submitit-local', cpus=1),
                       str(tmp_path))
    run = Run('baseline_seed0', 'baseline', 'pspnet', 0, None, 'missing', 2)
    lines = []
    with pytest.raises(RunFailed, match='baseline_seed0: job .* failed'):
        run_as_job(ex, lines.append, run, str(tmp_path), 'seg', None, 1)
    assert 'submitted' in lines[0]
    assert osp.isdir(tmp_path / 'submitit')


@pytest.mark.skipif(not osp.isdir(CAMVID), reason='../shared/data is absent')
def test_submitit_local_experiment_end_to_end(tmp_path, capsys):
    """tools/run_experiments.py --executor submitit-local (tiny preset, 2
    iterations): teacher, baseline and a CWD student finish as jobs, the
    student's job is submitted only after the teacher's has finished, and
    running the command again reads every run back (no new job)."""
    from tools.run_experiments import main
    work = tmp_path / 'cluster'
    argv = ['--task', 'seg', '--data-root', CAMVID, '--methods', 'cwd',
            '--seeds', '0', '--preset', 'tiny', '--work-dir', str(work),
            '--executor', 'submitit-local', '--slurm-cpus', '1', '--jobs',
            '2']
    assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads((work / 'results.json').read_text())
    assert 0.0 <= doc['methods']['cwd']['metric'][0] <= 100.0
    assert 0.0 <= doc['teacher']['metric'] <= 100.0
    lines = out.splitlines()
    submitted = [i for i, line in enumerate(lines) if 'submitted' in line]
    assert len(submitted) == 3, out
    teacher_done = next(i for i, line in enumerate(lines)
                        if line.lstrip().startswith('[') and
                        'teacher' in line and 'done' in line)
    student = next(i for i in submitted if 'cwd_seed0' in lines[i])
    assert student > teacher_done, out
    result = json.loads((work / 'runs' / 'cwd_seed0' /
                         'result.json').read_text())
    assert result['iters'] > 0 and osp.isfile(result['checkpoint'])
    assert main(argv) == 0  # resumes: every run read back
    assert 'submitted' not in capsys.readouterr().out
