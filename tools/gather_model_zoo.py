"""Print the model-zoo rows of every ``configs/*/README.md`` results table.

The rows of ``docs/model_zoo.md`` come from here: a results table is one
whose header starts with ``| teacher |``; detection tables have a
``schedule`` column, segmentation tables not. Paste the output over the
two tables of ``docs/model_zoo.md`` after adding or changing a method
folder (``tests/test_docs.py`` checks that no row is missing)::

    python tools/gather_model_zoo.py
"""
import glob
import os.path as osp
import re
import sys
from typing import List, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

__all__ = ['gather_rows', 'main']


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip('|').split('|')]


def gather_rows(repo: str = REPO) -> Tuple[List[str], List[str]]:
    """Markdown rows ``(detection, segmentation)`` for docs/model_zoo.md."""
    det, seg = [], []
    for readme in sorted(glob.glob(osp.join(repo, 'configs', '*',
                                            'README.md'))):
        folder = osp.basename(osp.dirname(readme))
        method = f'[{folder.upper()}](../configs/{folder}/README.md)'
        header = None
        with open(readme, encoding='utf-8') as f:
            lines = f.read().splitlines()
        for line in lines:
            if line.startswith('| teacher |'):
                header = _cells(line)
                continue
            if header is None or line.startswith('|---'):
                continue
            if not line.startswith('|'):
                header = None
                continue
            row = dict(zip(header, _cells(line)))
            link = re.search(r'\(([^)]+\.py)\)', row.get('config', ''))
            if link is None:
                continue
            path = osp.relpath(
                osp.normpath(osp.join(osp.dirname(readme), link.group(1))),
                repo)
            cfg = f'[{osp.basename(path)}](../{path})'
            paper, ours = header[-3], header[-2]
            if 'schedule' in row:
                det.append(f"| {method} | {row['teacher']} | "
                           f"{row['student']} | {row['schedule']} | "
                           f'{row[paper]} | {row[ours]} | {cfg} |')
            else:
                seg.append(f"| {method} | {row['teacher']} | "
                           f"{row['student']} | {row[paper]} | "
                           f'{row[ours]} | {cfg} |')
    return det, seg


def main() -> int:
    det, seg = gather_rows()
    print('## Detection rows\n')
    print('\n'.join(det))
    print('\n## Segmentation rows\n')
    print('\n'.join(seg))
    return 0


if __name__ == '__main__':
    sys.exit(main())
