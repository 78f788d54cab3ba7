#!/usr/bin/env bash
# Evidence for "fast sweeps" (issue 23) on one GPU machine, in one call:
#
#   bash scripts/gpu-startup.sh            (after carrying .whl, see docs/gpu-runs.md)
#
# 1. benchmarks/startup_breakdown.py: each start-up phase of medium-flux and medium-wan,
#    workers launched both ways (exec: a fresh interpreter; zygote: forked, imports made).
# 2. tests/perf/test_medium_gpu.py::test_medium_image over the five profiles, once
#    with --omni-engine-launch=exec (the code before the zygote) and once with zygote, same
#    machine, one after the other, fixed 5 rounds each so that only the launch differs.
# Everything lands in $OUT (default results/h200/startup), with the wall time of each step.
set -u
began_all=$SECONDS
out=${OUT:-results/h200/startup}
mkdir -p "$out"
py=${PYTHON:-python3}
$py -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -n 2
export PYTHONPATH=/tmp/site:$PWD OMNI_PERF_CACHE_DIR=/tmp/omni-cache HF_HUB_OFFLINE=1 \
  PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv > "$out/gpu.txt" 2>&1
began=$SECONDS
timeout 210 $py benchmarks/startup_breakdown.py --models medium-flux,medium-wan --repeats 2 \
  --launches exec,zygote --out "$out/breakdown-h200.txt" > "$out/breakdown.log" 2>&1
echo "breakdown: exit $? in $((SECONDS - began)) s" | tee -a "$out/steps.txt"
for launch in exec zygote; do
  began=$SECONDS
  timeout 175 $py -m pytest tests/perf/test_medium_gpu.py::test_medium_image \
    -p pytest_omni_perf.plugin -p no:cacheprovider -p no:benchmark -rA \
    --omni-profile=eager,compile,cache_dit,fewer_steps,vae_tiling --omni-rounds=5 \
    --omni-max-rounds=5 --omni-engine-launch=$launch \
    --omni-report-json="$out/five-profiles-$launch.json" > "$out/five-profiles-$launch.log" 2>&1
  echo "five profiles, --omni-engine-launch=$launch: exit $? in $((SECONDS - began)) s" \
    | tee -a "$out/steps.txt"
done
echo "all: $((SECONDS - began_all)) s" | tee -a "$out/steps.txt"
tail -n 14 "$out/breakdown-h200.txt"
nvidia-smi --query-gpu=memory.used --format=csv >> "$out/gpu.txt" 2>&1
