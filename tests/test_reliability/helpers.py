"""Shared helpers of the reliability tests (tiny CPU runs of the tools)."""
import os
import os.path as osp
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch

from tests.conftest import REPO

CFG_DIR = osp.join(REPO, 'tests', 'data', 'configs')
#: CamVid (../shared/data) segmentation micro distillation
MICRO_KD = osp.join(CFG_DIR, 'pspnet_camvid_micro_kd.py')
#: The same on the embedded BCCD subset (runs on a fresh clone)
DET_MICRO_KD = osp.join(CFG_DIR, 'faster_rcnn_bccd_mini_micro_kd.py')


def tool_env() -> Dict[str, str]:
    """The caller's environment, one thread per process (deterministic)."""
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = '1'
    env['MKL_NUM_THREADS'] = '1'
    return env


def tool_cmd(tool: str, *args: str) -> List[str]:
    return [sys.executable, osp.join(REPO, 'tools', tool), *args]


def run_tool(tool: str, *args: str, check: bool = True,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``tools/<tool>`` in a subprocess and return the result."""
    proc = subprocess.run(tool_cmd(tool, *args), cwd=REPO, env=tool_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def save_teacher_ckpt(config: str, path: str, seed: int = 123) -> None:
    """Write a teacher checkpoint with seeded non-default weights."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    import visionkd  # noqa: F401
    from visionkd.utils import resolve_model_cfg
    cfg = Config.fromfile(config)
    scope = 'mmseg' if 'Segmentation' in cfg.model.type else 'mmdet'
    spec = cfg.model.teacher  # a config path or a model dict
    if not isinstance(spec, str):
        spec = spec.to_dict()
    teacher = MODELS.build(resolve_model_cfg(spec, scope, 'teacher'))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    torch.save(dict(state_dict=teacher.state_dict(), meta=dict()), path)


def load(path: str) -> Dict[str, Any]:
    return torch.load(path, map_location='cpu', weights_only=False)


def assert_same(a: Any, b: Any, where: str = '') -> None:
    """Bit-for-bit equality of nested dicts/lists/tensors/numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f'{where}: values differ'
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (
            f'{where}: keys differ {set(a) ^ set(b)}')
        for k in a:
            assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def last_checkpoint(work_dir: str) -> Optional[str]:
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


@contextmanager
def isolated_mmengine() -> Iterator[None]:
    """Drop the default scope, loggers, message hubs and visualizers that
    a Runner or ``init_detector``/``init_model`` registers globally."""
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer
    classes = (DefaultScope, MessageHub, MMLogger, Visualizer)
    saved = {cls: dict(cls._instance_dict) for cls in classes}
    try:
        yield
    finally:
        for cls, instances in saved.items():
            cls._instance_dict.clear()
            cls._instance_dict.update(instances)
