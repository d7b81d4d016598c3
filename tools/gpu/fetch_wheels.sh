#!/usr/bin/env bash
# Download, on a machine with PyPI access, everything tools/gpu/gpu_check.sh
# needs on an offline CUDA machine whose image already has PyTorch (Python
# 3.12, manylinux x86-64): the pure-Python OpenMMLab wheels, their small
# dependencies and the mmcv 2.1.0 source (its CUDA ops are compiled there).
#   bash tools/gpu/fetch_wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
set -euo pipefail
DEST=${1:-.whl}
PYV=${2:-3.12}
mkdir -p "$DEST"
plat=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat="$plat --platform $p"
done
python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$PYV" --implementation cp $plat -d "$DEST" \
  mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 addict yapf \
  termcolor terminaltables pycocotools shapely ftfy wcwidth prettytable \
  platformdirs 'setuptools==69.5.1'
# The sdist's metadata step imports torch: use an interpreter that has it.
"${VISIONKD_VENV:-.venv}/bin/python" -m pip download -q --no-deps \
  --no-binary=:all: --no-build-isolation -d "$DEST" mmcv==2.1.0
ls "$DEST"
