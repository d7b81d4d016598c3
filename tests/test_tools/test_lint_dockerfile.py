"""docker/Dockerfile passes the offline lint, and the lint catches rot."""
import os.path as osp
import shutil

import pytest

from tests.conftest import REPO
from tools.lint_dockerfile import check_dockerfile, main, run_hadolint

DOCKERFILE = osp.join(REPO, 'docker', 'Dockerfile')


def _text() -> str:
    with open(DOCKERFILE) as f:
        return f.read()


def _lint(tmp_path, text: str, context: str = REPO) -> list:
    path = tmp_path / 'Dockerfile'
    path.write_text(text)
    return check_dockerfile(str(path), context)


def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, f'{old!r} is no longer in docker/Dockerfile'
    return text.replace(old, new)


def test_repository_dockerfile_is_clean():
    assert check_dockerfile(DOCKERFILE) == []


def test_repository_dockerfile_passes_hadolint():
    assert run_hadolint(DOCKERFILE) == []


def test_lint_cli_exit_codes(tmp_path, capsys):
    assert main([DOCKERFILE]) == 0
    bad = tmp_path / 'Dockerfile'
    bad.write_text(_mutate(_text(), '-devel-', '-runtime-'))
    assert main([str(bad), '--no-hadolint']) == 1
    assert 'not a CUDA devel image' in capsys.readouterr().out


@pytest.mark.parametrize('old, new, expected', [
    ('-devel-', '-runtime-', 'not a CUDA devel image'),
    ('FROM nvidia/cuda:${CUDA}', 'FROM ubuntu:22.04 AS x\n# ${CUDA}',
     'not a CUDA devel image'),
    ('ARG CUDA=12.1.1', 'ARG CUDA', 'uses an ARG without a default'),
    ('"mmcv==2.1.0"', '"mmcv"', 'mmcv is not pinned'),
    ('"mmcv==2.1.0"', '"mmcv>=2.0"', 'mmcv is not pinned'),
    ('"mmcv==2.1.0"', '"mmcv==2.2.0"', 'outside requirements/runtime.txt'),
    ('"torch==${TORCH}"', 'torch', 'torch is not pinned'),
    ('ARG TORCH=2.3.1', 'ARG TORCH=2.99.0', 'torch==2.99.0 is outside'),
    ('FORCE_CUDA=1', 'FORCE_CUDA=0', 'without FORCE_CUDA=1'),
    ('    MMCV_WITH_OPS=1 \\\n', '', 'without MMCV_WITH_OPS=1'),
    ('--no-build-isolation "mmcv', '"mmcv', '--no-build-isolation'),
    ('COPY . /workspace/visionkd',
     'COPY . /workspace/visionkd\nCOPY requirements/gone.txt /tmp/',
     "'requirements/gone.txt' does not exist"),
    ('pip install -e ".[tests]"', 'pip install mmdet',
     'visionkd is never installed'),
    ('import visionkd, mmcv.ops, mmdet, mmseg', 'import visionkd',
     "no build-time import check of ['mmcv.ops', 'mmdet', 'mmseg']"),
])
def test_lint_catches_rot(tmp_path, old, new, expected):
    problems = _lint(tmp_path, _mutate(_text(), old, new))
    assert any(expected in p for p in problems), problems


def test_mmcv_before_torch_is_caught(tmp_path):
    text = _text()
    mmcv = 'RUN python -m pip install --no-build-isolation "mmcv==2.1.0"\n'
    text = _mutate(text, mmcv, '')
    text = _mutate(text, 'ENV DEBIAN', mmcv + 'ENV DEBIAN')
    problems = _lint(tmp_path, text)
    assert any('built before torch' in p for p in problems), problems


def test_dockerignore_must_keep_venv_out(tmp_path):
    context = tmp_path / 'ctx'
    shutil.copytree(osp.join(REPO, 'requirements'), context / 'requirements')
    (context / '.dockerignore').write_text('work_dirs\n')
    problems = check_dockerfile(DOCKERFILE, str(context))
    assert any("copies ['.venv']" in p for p in problems), problems


def test_hadolint_reports_generic_problems(tmp_path):
    path = tmp_path / 'Dockerfile'
    path.write_text('FROM ubuntu\nRUN cd /tmp && echo hi\n')
    findings = run_hadolint(str(path))
    codes = ' '.join(findings)
    assert 'DL3006' in codes  # untagged base image
    assert 'DL3003' in codes  # cd instead of WORKDIR
