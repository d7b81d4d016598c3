#!/usr/bin/env bash
# Set up (or re-check) the virtual environment that the README commands use.
# Idempotent: a second run only checks imports (seconds).
#
#   VISIONKD_VENV   where the venv lives            (default: ./.venv)
#   VISIONKD_WHEELS where the built mmcv wheel goes (default: ~/.cache/visionkd/wheels)
#
# mmcv 2.1 (needed by mmdet 3.3) has no wheel for this torch: it is compiled
# once from source (~30 min on 2 cores) and the wheel is kept in
# $VISIONKD_WHEELS, so later venvs on the same machine install it instantly.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VISIONKD_VENV:-.venv}
WHEELS=${VISIONKD_WHEELS:-$HOME/.cache/visionkd/wheels}
PY=${PYTHON:-python3}
TORCH_SPEC='torch==2.13.0'
MMCV_SPEC='mmcv==2.1.0'
STAMP="$VENV/.visionkd-stamp"
want_stamp=$(cat setup.py requirements/*.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
   && "$VENV/bin/python" -c 'import visionkd, mmcv.ops, mmdet, mmseg' 2>/dev/null; then
  exit 0
fi

echo "[bootstrap] setting up $VENV"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q "$TORCH_SPEC" numpy
if ! "$VENV/bin/python" -c 'import mmcv.ops' 2>/dev/null; then
  mkdir -p "$WHEELS"
  wheel=$(ls "$WHEELS"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "[bootstrap] compiling $MMCV_SPEC with its C++ ops (one-off, ~30 min on 2 cores)"
    $PIP install -q 'setuptools<70' wheel ninja
    MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) $PIP wheel --no-build-isolation --no-deps \
      "$MMCV_SPEC" -w "$WHEELS"
    wheel=$(ls "$WHEELS"/mmcv-2.1.0-*.whl | head -n1)
  fi
  $PIP install -q --no-deps "$wheel"
  $PIP install -q addict packaging pyyaml yapf opencv-python-headless
fi
$PIP install -q -e ".[tests]"
"$VENV/bin/python" -c 'import visionkd, mmcv.ops, mmdet, mmseg'
echo "$want_stamp" > "$STAMP"
echo "[bootstrap] ready: $VENV"
