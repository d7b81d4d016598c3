"""Read mmengine's ``vis_data/scalars.json`` logs of a work dir."""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional

__all__ = ['read_scalars', 'last_value', 'train_curves']


def read_scalars(work_dir: str) -> List[dict]:
    """All records of every ``<timestamp>/vis_data/scalars.json``.

    A resumed run has one timestamp folder per session; records are
    returned in session order, so later values of a step win.
    """
    records = []
    pattern = osp.join(work_dir, '*', 'vis_data', 'scalars.json')
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash
                    continue
    return records


def last_value(work_dir: str, key: str,
               step: Optional[int] = None) -> Optional[float]:
    """Last logged value of ``key`` (at ``step`` if given), or None."""
    value = None
    for rec in read_scalars(work_dir):
        if key in rec and (step is None or rec.get('step') == step):
            value = float(rec[key])
    return value


def train_curves(work_dir: str) -> Dict[str, Dict[int, float]]:
    """Training curves: ``{'task': {step: loss}, 'kd': {step: loss}}``.

    ``kd`` is the sum of the ``loss_kd_*`` terms, ``task`` the total loss
    minus it (what the student's own losses add up to).
    """
    task, kd = {}, {}
    for rec in read_scalars(work_dir):
        if 'loss' not in rec or 'step' not in rec:
            continue
        k = sum(float(v) for key, v in rec.items()
                if key.startswith('loss_kd'))
        step = int(rec['step'])
        task[step] = float(rec['loss']) - k
        if any(key.startswith('loss_kd') for key in rec):
            kd[step] = k
    return dict(task=task, kd=kd)
