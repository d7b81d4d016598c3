"""Read an official implementation's files at run time (for the
``compare_official_*`` tools): from a checkout, or from a git dir (as the
``fetch`` tool leaves them) with ``git show``. Nothing of the official
code is shipped with visionkd."""
import subprocess
from pathlib import Path

__all__ = ['read_official', 'official_commit']


def _git_dir(repo: Path) -> Path:
    return repo / '.git' if (repo / '.git').exists() else repo


def read_official(repo: Path, path: str, rev: str) -> str:
    """The text of ``path`` in the official ``repo`` (a checkout or a git
    dir; ``rev`` for the latter)."""
    if (repo / path).is_file():
        return (repo / path).read_text()
    return subprocess.run(
        ['git', f'--git-dir={_git_dir(repo)}', 'show', f'{rev}:{path}'],
        check=True, capture_output=True, text=True).stdout


def official_commit(repo: Path, rev: str) -> str:
    """The commit of ``rev`` (``'?'`` for a checkout without git)."""
    out = subprocess.run(
        ['git', f'--git-dir={_git_dir(repo)}', 'rev-parse', rev],
        capture_output=True, text=True)
    return out.stdout.strip() or '?'
