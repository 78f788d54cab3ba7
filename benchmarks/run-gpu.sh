#!/usr/bin/env bash
# The H100 column of the README's "The plugin's own performance" table, unattended.
#
#   bash benchmarks/run-gpu.sh [STEP ...]     STEP: overhead ssim compile recipe_a detection
#                                             (default: all, in that order)
#
# Run from the repository root on the GPU machine after the set-up of docs/gpu-runs.md
# (PYTHONPATH=/tmp/site:$PWD, OMNI_PERF_CACHE_DIR, HF_HUB_OFFLINE=1). Writes one text file
# (and a .json beside some) per step into $OUT, else results/h100/own-perf/. Rough times on
# an H100: overhead 1 min, ssim 3 min, compile 5 min, recipe_a 7 min, detection 9 min;
# run steps in separate commands where one command may take at most 10 minutes.
set -u
out=${OUT:-results/h100/own-perf}
mkdir -p "$out"
py=${PYTHON:-python3}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(overhead ssim compile recipe_a detection)
status=0
for step in "${steps[@]}"; do
  echo "== $step" >&2
  case $step in
    overhead) $py benchmarks/overhead.py --blocks 10 --per-block 10 > "$out/overhead.txt" ;;
    ssim) $py benchmarks/ssim_speed.py --frames 81 --repeats 3 --out "$out/ssim-speed.txt" ;;
    compile) $py benchmarks/compile_cache.py --model medium-flux --width 1024 --height 1024 \
               --steps 20 --repeats 2 --out "$out/compile-cache-medium-flux.txt" ;;
    recipe_a) $py benchmarks/compile_cache.py --model medium-flux --profile recipe_a \
               --width 1024 --height 1024 --steps 20 --repeats 1 \
               --out "$out/compile-cache-medium-flux-recipe_a.txt" ;;
    detection) $py benchmarks/detection_power.py --trials 150 --rounds 3,5,8,10,15 \
               --width 128 --height 128 --steps 12 --max-minutes 8 \
               --out "$out/detection-power-tiny-flux.txt" ;;
    *) echo "unknown step $step" >&2; status=2; continue ;;
  esac || status=1
  cat "$out"/*"$step"*.txt 2>/dev/null | tail -n 30 >&2
done
exit $status
