"""Code-shape rules that ruff does not check: short functions in visionkd/."""
import ast
import glob
import os.path as osp

from tests.conftest import REPO

MAX_FUNCTION_LINES = 60


def _functions(path: str):
    tree = ast.parse(open(path, encoding='utf-8').read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno


def test_no_function_in_the_package_is_longer_than_60_lines():
    too_long = []
    for path in sorted(glob.glob(osp.join(REPO, 'visionkd', '**', '*.py'),
                                 recursive=True)):
        for name, first, last in _functions(path):
            length = last - first + 1
            if length > MAX_FUNCTION_LINES:
                too_long.append(
                    f'{osp.relpath(path, REPO)}:{first} {name} ({length})')
    assert not too_long, (f'functions longer than {MAX_FUNCTION_LINES} '
                          f'lines (def to last line): {too_long}')


def test_the_rule_sees_a_long_function(tmp_path):
    body = '\n'.join(f'    x{i} = {i}' for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / 'm.py'
    path.write_text(f'def f():\n{body}\n')
    (name, first, last), = _functions(str(path))
    assert (name, last - first + 1) == ('f', MAX_FUNCTION_LINES + 1)
