#!/usr/bin/env bash
# One-shot GPU check for an offline CUDA machine that already has PyTorch:
# installs the wheels fetched by tools/gpu/fetch_wheels.sh, compiles mmcv
# 2.1.0's CUDA ops for this GPU, then runs the distillation-overhead
# benchmark and a short BCCD distillation (the embedded demo) on the GPU.
# Every figure lands in OUT_DIR (JSON + logs).
#   bash tools/gpu/gpu_check.sh [WHEELS=.whl] [OUT_DIR=work_dirs/gpu]
# mmcv's 59 CUDA ops + 77 C++ files compile in about 6 min on 16 cores
# (H200 machine, CUDA 13, torch 2.11). SKIP_BENCH=1 / SKIP_DEMO=1 skip stages;
# EXTRA_CMD runs one more command (e.g. the experiment runner).
set -euo pipefail
WHL=$(realpath "${1:-.whl}")
OUT=$(realpath -m "${2:-work_dirs/gpu}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SITE=/tmp/visionkd_site
WORK=/tmp/visionkd_gpu_work
mkdir -p "$OUT" "$SITE" "$WORK"
log() { echo "[gpu_check $(date +%T)] $*"; }

log "installing wheels into $SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target "$SITE" "$WHL"/*.whl
export PYTHONPATH="$SITE:$REPO"

if [ ! -f /tmp/mmcv-2.1.0/mmcv/_ext.so ] && \
   ! ls /tmp/mmcv-2.1.0/mmcv/_ext*.so >/dev/null 2>&1; then
  tar xzf "$WHL"/mmcv-2.1.0.tar.gz -C /tmp
  cd /tmp/mmcv-2.1.0
  arch=$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
  log "compiling mmcv CUDA ops (arch $arch, $(nproc) jobs)"
  t0=$(date +%s)
  MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=$(nproc) \
    python3 setup.py build_ext --inplace > "$OUT/mmcv_build.log" 2>&1 \
    || { tail -40 "$OUT/mmcv_build.log"; exit 1; }
  tail -5 "$OUT/mmcv_build.log"
  log "mmcv built in $(( $(date +%s) - t0 )) s"
  cd "$REPO"
fi
export PYTHONPATH="$SITE:/tmp/mmcv-2.1.0:$REPO"
python3 - <<'PY' | tee "$OUT/env.json"
import json, torch, mmcv, mmdet, mmseg, mmengine
from mmcv.ops import nms, roi_align
b = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10.]], device='cuda')
keep = nms(b, torch.tensor([0.9, 0.8], device='cuda'), 0.5)[1]
f = torch.randn(1, 4, 16, 16, device='cuda')
r = roi_align(f, torch.tensor([[0, 0, 0, 8, 8.]], device='cuda'), (2, 2))
print(json.dumps(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
      mmcv=mmcv.__version__, mmdet=mmdet.__version__, mmseg=mmseg.__version__,
      mmengine=mmengine.__version__, nms_keep=keep.tolist(),
      roi_align_shape=list(r.shape))))
PY

cd "$REPO"
# Overhead rows: "config H W batch [cfg-options...]" (teacher_precision rows
# beside their fp32 rows; the bf16 target compares them).
[ "${SKIP_BENCH:-0}" = 1 ] || while read -r spec; do
  [ -n "$spec" ] || continue
  set -- $spec
  cfg=$1 h=$2 w=$3 bs=$4; shift 4
  opts=()
  [ $# -gt 0 ] && opts=(--cfg-options "$@")
  log "overhead benchmark $spec"
  python3 tools/analysis_tools/benchmark_overhead.py "$cfg" --input-size "$h" "$w" \
    --batch-size "$bs" --iters 10 --warmup 3 --device cuda "${opts[@]}" \
    > "$WORK/bench.json" 2>> "$OUT/bench.log" || tail -20 "$OUT/bench.log"
  # stdout holds mmengine log lines before the JSON object: keep the JSON.
  python3 -c "import json,sys; t=open(sys.argv[1]).read(); d=json.loads(t[t.index('{'):]); d['config']=sys.argv[2]; print(json.dumps(d))" \
    "$WORK/bench.json" "$spec" | tee -a "$OUT/bench.jsonl" || true
done <<'ROWS'
configs/kd/faster_rcnn_r101_to_r18.py 800 1344 2
configs/kd/faster_rcnn_r101_to_r18.py 800 1344 2 model.teacher_precision=bf16
configs/kd/faster_rcnn_r101_to_r18.py 320 320 2
configs/kd/pspnet_r101_to_r18_cityscapes.py 512 1024 2
configs/kd/pspnet_r101_to_r18_cityscapes.py 512 1024 2 model.teacher_precision=bf16
configs/rtmdet/rtmdet_s_to_tiny_300e_coco_cwd.py 640 640 2
ROWS

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  log "loss benchmark (on this machine's CPU: ATen calls are device-independent)"
  python3 tools/analysis_tools/benchmark_losses.py --markdown \
    > "$OUT/benchmark_losses.md" 2>> "$OUT/bench.log" || true
  log "scaling sweeps (FGD, Faster R-CNN R101 -> R18)"
  python3 tools/analysis_tools/benchmark_scaling.py \
    configs/kd/faster_rcnn_r101_to_r18.py --batch-sizes 1 2 4 8 \
    --input-sizes 320 640 800 --boxes 2 10 50 --iters 5 --warmup 2 \
    --device cuda --out "$OUT/scaling_gpu" >> "$OUT/bench.log" 2>&1 || true
fi

if [ -n "${EXTRA_CMD:-}" ]; then
  # e.g. EXTRA_CMD='python3 tools/run_experiments.py ...' (runs in the repo
  # root with the environment above; WORK and OUT are exported).
  export WORK OUT
  log "extra: $EXTRA_CMD"
  bash -c "$EXTRA_CMD" || log "extra command failed"
fi

if [ "${SKIP_DEMO:-0}" != 1 ]; then
  log "short BCCD distillation (embedded demo: teacher, baseline, distilled)"
  t0=$(date +%s)
  python3 tools/demo/run_demo.py --work-dir "$WORK/demo" --force \
    > "$OUT/demo.log" 2>&1 || tail -30 "$OUT/demo.log"
  cp "$WORK/demo/results.json" "$OUT/demo_results.json" || true
  log "demo took $(( $(date +%s) - t0 )) s"
  tail -15 "$OUT/demo.log"
fi
log done
