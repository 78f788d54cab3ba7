#!/usr/bin/env bash
# Evidence for "verdicts that hold on a shared GPU host", one GPU machine per call:
#
#   bash scripts/gpu-verdicts.sh TAG STEP [STEP ...]
#
# STEP: record   re-record baselines/nvidia-*/ for test_medium_image with the new method
#       compare  the unchanged comparison against the committed baselines (adaptive rounds)
#       fixed15  the same comparison with today's old fixed count (15 rounds, no looks):
#                GPU seconds per test before (fixed 15) and after (adaptive), one machine
#       detect   the detection benchmark on the medium Flux (10% slowdown vs unchanged)
#       pidns    scripts/gpu-pidns-check.sh (NVML inside a PID namespace of its own)
# Every comparison runs the five profiles of the issue (eager, compile, cache_dit,
# fewer_steps, vae_tiling) and the no-op drill `compile_off` (benchmarks/noop-drill.toml: a
# profile identical to eager that asks min_speedup=1.05). Run from the repository root
# after carrying .whl (docs/gpu-runs.md); everything lands in $OUT/TAG-*.{json,log} and one
# tarball $OUT/TAG.tar.gz (the device returns at most 8 files). The history of every run
# is appended to results/h200/trust/history.sqlite (committed and carried between machines).
set -u
tag=$1; shift
out=${OUT:-results/h200/trust}
mkdir -p "$out/$tag"
py=${PYTHON:-python3}
$py -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -n 2
export PYTHONPATH=/tmp/site:$PWD OMNI_PERF_CACHE_DIR=/tmp/omni-cache HF_HUB_OFFLINE=1 \
  PYTHONUNBUFFERED=1
profiles=eager,compile,cache_dit,fewer_steps,vae_tiling,compile_off
common=(tests/perf/test_medium_gpu.py::test_medium_image -p pytest_omni_perf.plugin
        -p no:cacheprovider -p no:benchmark -rA -o omni_profile_files=benchmarks/noop-drill.toml
        --omni-profile=$profiles --omni-history=results/h200/trust/history.sqlite)
nvidia-smi --query-gpu=name,uuid,driver_version,clocks.sm,clocks.max.sm --format=csv \
  > "$out/$tag/gpu.txt" 2>&1
run() {  # NAME LIMIT_S ARGS...: one pytest session, timed, its JSON report and log kept
  local name=$1 limit=$2; shift 2
  local began=$SECONDS
  timeout -s INT "$limit" $py -m pytest "${common[@]}" --omni-report-json="$out/$tag/$name.json" \
    "$@" > "$out/$tag/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - began)) s" | tee -a "$out/$tag/steps.txt"
  tail -n 30 "$out/$tag/$name.log"
}
for step in "$@"; do
  case $step in
    record) run record 300 --omni-update-baselines ;;
    compare) run compare 270 ;;
    fixed15) run fixed15 225 --omni-rounds=15 --omni-max-rounds=15 ;;
    detect) began=$SECONDS minutes=${DETECT_MINUTES:-3.8}  # trials stop starting after this
      timeout -s INT $(python3 -c "print(int(60 * $minutes + 100))") $py benchmarks/detection_power.py \
        --model medium-flux --width 1024 --height 1024 --steps 20 --same 10 --slow 20 \
        --restart-every 100 --max-minutes "$minutes" \
        --out "$out/$tag/detection-power-medium-flux.txt" > "$out/$tag/detect.log" 2>&1
      echo "detect: exit $? in $((SECONDS - began)) s" | tee -a "$out/$tag/steps.txt"
      tail -n 20 "$out/$tag/detect.log" ;;
    pidns) began=$SECONDS
      OUT="$out/$tag/pidns" timeout 200 bash scripts/gpu-pidns-check.sh > "$out/$tag/pidns.log" 2>&1
      echo "pidns: exit $? in $((SECONDS - began)) s" | tee -a "$out/$tag/steps.txt"
      cat "$out/$tag/pidns/summary.txt" 2>/dev/null ;;
    *) echo "unknown step $step" >&2 ;;
  esac
done
nvidia-smi --query-gpu=memory.used --format=csv >> "$out/$tag/gpu.txt" 2>&1
[ -d baselines ] && cp -r baselines/nvidia-h200* "$out/$tag/" 2>/dev/null
cp results/h200/trust/history.sqlite "$out/$tag/" 2>/dev/null
tar -czf "$out/$tag.tar.gz" -C "$out" "$tag"
cp results/h200/trust/history.sqlite "$out/history.sqlite" 2>/dev/null
cat "$out/$tag/steps.txt"
