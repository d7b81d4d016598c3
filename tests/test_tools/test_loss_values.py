"""tools/analysis_tools/loss_values.py prints every loss, reproducibly."""
import json
import math
import subprocess
import sys

from tests.conftest import REPO
from tools.analysis_tools.loss_values import loss_values
from visionkd.registry import MODELS


def test_prints_every_registered_loss_reproducibly():
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/loss_values.py', '--json'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    registered = {n for n in MODELS.module_dict
                  if n.endswith(('Loss', 'Divergence'))}
    assert set(printed) == registered
    assert all(math.isfinite(v) and v > 0 for v in printed.values())
    # same numbers in another process, different ones for another seed
    assert loss_values(0) == printed
    other = loss_values(1)
    assert all(other[n] != printed[n] for n in printed)
