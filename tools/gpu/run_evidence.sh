#!/usr/bin/env bash
# The published evidence of docs/results on one GPU machine: BCCD detection
# and CamVid segmentation, every method, seeds 0 and 1, cpu-small preset.
# Seed 0 of each task starts at once; seed 1 starts as soon as the seed-0
# process has finished the task's teacher(s) (the two seeds then train side
# by side on the one GPU). Re-running it resumes (tools/run_experiments.py
# skips finished runs and resumes interrupted ones); while its processes are
# still alive it only waits. Stops waiting at DEADLINE (epoch seconds, 0 =
# none) and packs results, configs and logs (no checkpoints) into OUT_DIR.
#   bash tools/gpu/run_evidence.sh DATA_DIR WORK_DIR OUT_DIR [DEADLINE]
# DATA_DIR holds bccd/ and camvid/ (the layout of ../shared/data).
set -uo pipefail
DATA=$(realpath "$1"); WORK=$(realpath -m "$2"); OUT=$(realpath -m "$3")
DEADLINE=${4:-0}
mkdir -p "$WORK" "$OUT"
det=(--task det --data-root "$DATA/bccd" --train-ann annotations/train.json
     --val-ann annotations/val.json --vertical-flip --preset cpu-small
     --methods fitnet pkd cwd fgd mgd fgfi defeat roi_kd ld)
seg=(--task seg --data-root "$DATA/camvid" --preset cpu-small
     --methods cwd skd ifvd cirkd dist)
log() { echo "[evidence $(date +%T)] $*"; }

alive() { [ -f "$WORK/$1.pid" ] && kill -0 "$(cat "$WORK/$1.pid")" 2>/dev/null; }
launch() {  # launch NAME SEED ARGS...: one runner process, unless alive
  local name=$1 seed=$2; shift 2
  alive "$name" && return 0
  setsid nohup python3 tools/run_experiments.py "$@" --seeds "$seed" \
    >> "$WORK/$name.log" 2>&1 < /dev/null &
  echo $! > "$WORK/$name.pid"
  log "started $name (pid $!)"
}
teachers_done() {  # teachers_done TASK TEACHER...
  local t=$1; shift
  for r in "$@"; do [ -f "$WORK/$t/runs/$r/result.json" ] || return 1; done
}
past_deadline() { [ "$DEADLINE" != 0 ] && [ "$(date +%s)" -ge "$DEADLINE" ]; }

launch det_s0 0 "${det[@]}" --work-dir "$WORK/det"
launch seg_s0 0 "${seg[@]}" --work-dir "$WORK/seg"
started_det1=0; started_seg1=0
while :; do
  if [ $started_det1 = 0 ] && teachers_done det teacher teacher_gfl; then
    launch det_s1 1 "${det[@]}" --work-dir "$WORK/det"; started_det1=1
  fi
  if [ $started_seg1 = 0 ] && teachers_done seg teacher; then
    launch seg_s1 1 "${seg[@]}" --work-dir "$WORK/seg"; started_seg1=1
  fi
  busy=0
  for n in det_s0 det_s1 seg_s0 seg_s1; do alive $n && busy=1; done
  if [ $busy = 0 ] && [ $started_det1 = 1 ] && [ $started_seg1 = 1 ]; then
    break
  fi
  if [ $busy = 0 ]; then log "seed-0 processes ended before the teachers"; break; fi
  past_deadline && { log "deadline: packing what is done"; break; }
  sleep 5
done

if [ $busy = 0 ]; then  # both seeds finished: one report over both seeds
  for t in det seg; do
    if [ $t = det ]; then a=("${det[@]}"); else a=("${seg[@]}"); fi
    python3 tools/run_experiments.py "${a[@]}" --seeds 0 1 \
      --work-dir "$WORK/$t" >> "$WORK/${t}_report.log" 2>&1 \
      || log "$t report: some runs failed (see ${t}_report.log)"
  done
fi
for t in det seg; do
  [ -d "$WORK/$t" ] || continue
  tar czf "$OUT/evidence_$t.tgz" -C "$WORK" --exclude='*.pth' \
    --exclude='last_checkpoint' "$t" "${t}_s0.log" "${t}_s1.log" \
    "${t}_report.log" 2>/dev/null
  grep -h '^\[' "$WORK/${t}_s0.log" "$WORK/${t}_s1.log" 2>/dev/null | tail -4
  [ -f "$WORK/$t/results.md" ] && sed -n '/^| model/,/^$/p' "$WORK/$t/results.md"
done
log "packed into $OUT"
