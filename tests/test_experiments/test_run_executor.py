"""A stopped runner stops its run subprocesses (no orphaned trainings)."""
import os
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from visionkd.experiments import run_executor
from visionkd.experiments.run_executor import (
    RunFailed,
    stop_live_runs,
    stream_command,
)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# a "training" that says its pid, then runs for two minutes
SLEEPER = [sys.executable, '-c',
           'import os, time; print("pid", os.getpid(), flush=True); '
           'time.sleep(120)']


@pytest.fixture(autouse=True)
def _not_stopping():
    yield
    run_executor._STOPPING.clear()


def _wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.05)


def _pid_in(log):
    for line in open(log).read().splitlines():
        if line.startswith('pid '):
            return int(line.split()[1])
    return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_live_runs_stops_a_running_command(tmp_path):
    log = str(tmp_path / 'run.log')
    raised = []

    def run():
        try:
            stream_command(SLEEPER, log, print, 'sleeper')
        except RunFailed as e:
            raised.append(str(e))

    t = threading.Thread(target=run)
    t.start()
    _wait_for(lambda: osp.exists(log) and _pid_in(log) is not None)
    pid = _pid_in(log)
    assert stop_live_runs(timeout=5) == 1
    t.join(10)
    assert not t.is_alive() and not _alive(pid)
    assert raised and f'exited with {-signal.SIGTERM}' in raised[0]
    assert not run_executor._LIVE
    # once stopping, nothing new starts
    with pytest.raises(RunFailed, match='runner is stopping'):
        stream_command(SLEEPER, log, print, 'late')


def test_a_finished_command_leaves_nothing_live(tmp_path):
    lines = stream_command([sys.executable, '-c', 'print("ok")'],
                           str(tmp_path / 'run.log'), print, 'quick')
    assert lines == ['ok\n'] and not run_executor._LIVE
    with pytest.raises(RunFailed, match='exited with 3'):
        stream_command([sys.executable, '-c', 'raise SystemExit(3)'],
                       str(tmp_path / 'run.log'), print, 'bad')
    assert not run_executor._LIVE


@pytest.mark.parametrize('sig, code', [(signal.SIGTERM, 128 + 15),
                                       (signal.SIGINT, -signal.SIGINT)])
def test_a_signal_to_the_runner_stops_its_runs(tmp_path, sig, code):
    """What ``run_experiments`` does (a pool thread streams a run inside
    ``stopping_runs_on_signal``), in a process we kill: the run must not
    survive its runner."""
    log = str(tmp_path / 'run.log')
    script = textwrap.dedent(f"""
        import sys
        from concurrent.futures import ThreadPoolExecutor
        from visionkd.experiments.run_executor import (
            stopping_runs_on_signal, stream_command)
        with stopping_runs_on_signal(), ThreadPoolExecutor(1) as pool:
            pool.submit(stream_command, {SLEEPER!r}, {log!r}, print,
                        'sleeper').result()
        """)
    runner = subprocess.Popen([sys.executable, '-c', script], cwd=REPO,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: osp.exists(log) and _pid_in(log) is not None,
                  timeout=120)
        pid = _pid_in(log)
        runner.send_signal(sig)
        out, _ = runner.communicate(timeout=30)
        assert runner.returncode == code, out.decode()[-2000:]
        assert not _alive(pid), 'the run outlived its runner'
    finally:
        if runner.poll() is None:
            runner.kill()
        pid = _pid_in(log) if osp.exists(log) else None
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
