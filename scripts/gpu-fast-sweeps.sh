#!/usr/bin/env bash
# Issue 23 ("fast sweeps") after device_answers (the zygote preloads the pipeline class on
# a GPU too), measured beside the code before it on the same machine, in one call per step:
#
#   OLD=old-code STEP=check bash scripts/gpu-fast-sweeps.sh   (carrying .whl)
#   OLD=old-code STEP=five  bash scripts/gpu-fast-sweeps.sh
#   OLD=old-code STEP=sweep CODE=new|old bash scripts/gpu-fast-sweeps.sh
#
# OLD is the code before (mkdir old-code; git archive a883973^ pytest_omni_perf tests
# benchmarks scripts pyproject.toml | tar -x -C old-code: untracked, it travels), run from
# its own folder so that pytest and the workers import it. Steps:
#   check  scripts/gpu-fork-check.py (may a forked child still use CUDA after the imports,
#          with and without the NVML answers), then benchmarks/startup_breakdown.py for
#          medium-flux and medium-wan, 2 starts per launch, with the new code and the old.
#   five   tests/perf/test_medium_gpu.py::test_medium_image over the five profiles,
#          5 rounds, zygote launch, old/new/new/old (the first run also fills the compile
#          cache that the later ones share, so its time is reported, not compared).
#   sweep  the 15-profile single-GPU image sweep of docs/gpu-runs.md, once, with CODE.
#   one-call  fork check and breakdown of the new code, five profiles new then old.
#   again  after one-call on the same warm machine: both breakdowns, five profiles old, new.
# Everything lands in $OUT/startup (default results/h100/startup).
set -u
out=${OUT:-results/h100}/startup
mkdir -p "$out"
here=$PWD
out=$(cd "$out" && pwd)  # absolute: the old code runs from its own folder
old=$here/${OLD:-old-code}
py=${PYTHON:-python3}
$py -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -n 2
export OMNI_PERF_CACHE_DIR=/tmp/omni-cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version,memory.used --format=csv >> "$out/gpu.txt" 2>&1
uptime >> "$out/gpu.txt"

limit=600
in_code() {  # in_code new|old COMMAND...: run COMMAND from that code's folder, within $limit s
  local code=$1; shift
  local dir=$here; [ "$code" = old ] && dir=$old
  (cd "$dir" && PYTHONPATH=/tmp/site:$dir timeout "$limit" "$@")
}

timed() {  # timed LABEL LIMIT FUNCTION ARGS...: one line in steps.txt, exit code and seconds
  local label=$1; limit=$2; shift 2
  local began=$SECONDS
  "$@"
  echo "$label: exit $? in $((SECONDS - began)) s (1-min load $(cut -d' ' -f1 /proc/loadavg))" \
    | tee -a "$out/steps.txt"
}

fork_check() { in_code new $py scripts/gpu-fork-check.py > "$out/fork-check.jsonl" \
  2> "$out/fork-check.err"; }
breakdown() {  # breakdown CODE
  in_code "$1" $py benchmarks/startup_breakdown.py --models medium-flux,medium-wan --repeats 2 \
    --launches exec,zygote --out "$out/breakdown-$1.txt" > "$out/breakdown-$1.log" 2>&1
}

five() {  # five CODE N: the five-profile test once
  in_code "$1" $py -m pytest tests/perf/test_medium_gpu.py::test_medium_image \
    -p pytest_omni_perf.plugin -p no:cacheprovider -p no:benchmark -rA \
    --omni-profile=eager,compile,cache_dit,fewer_steps,vae_tiling --omni-rounds=5 \
    --omni-max-rounds=5 --omni-engine-launch=zygote --omni-baseline-dir="/tmp/bl-five-$2" \
    --omni-update-baselines --omni-report-json="$out/five-$1-$2.json" \
    > "$out/five-$1-$2.log" 2>&1
}

sweep() {  # sweep CODE: the 15-profile image sweep (docs/gpu-runs.md)
  in_code "$1" $py -m pytest tests/perf/test_medium_gpu.py::test_medium_image \
    -p pytest_omni_perf.plugin -p no:cacheprovider -p no:benchmark --omni-rounds=5 \
    --omni-warmup=2 --omni-update-baselines --omni-baseline-dir="/tmp/bl-sweep-$1" \
    --omni-profile=eager,compile,cache_dit,cache_dit_taylorseer,cache_dit_scm,fewer_steps,fp8,fp8_cachedit,compile_cachedit,cpu_offload,layerwise_offload,vae_slicing,vae_tiling,recipe_c,recipe_e \
    --omni-report-json="$out/sweep-$1.json" > "$out/sweep-$1.log" 2>&1
}

case ${STEP:-check} in
  check)
    timed "fork check (new code)" 200 fork_check
    for code in new old; do
      timed "startup breakdown ($code code)" 200 breakdown $code
    done
    tail -n 12 "$out/breakdown-new.txt" "$out/breakdown-old.txt";;
  five)
    n=0
    for code in old new new old; do
      n=$((n + 1))
      timed "five profiles, run $n ($code code)" 170 five $code $n
    done
    grep -h "passed\|failed" "$out"/five-*.log | tail -n 4;;
  one-call)  # what fits the device time left: the checks on the new code, then five
    # profiles new, then old (the first run fills the compile cache, so the order favours
    # the old code: the comparison is conservative)
    # Most telling first: what is cut short by the device's time still comes back.
    timed "fork check (new code)" 120 fork_check
    n=0
    for code in new old; do
      n=$((n + 1))
      timed "five profiles, run $n ($code code)" 150 five $code $n
    done
    timed "startup breakdown (new code)" 150 breakdown new
    tail -n 12 "$out/breakdown-new.txt"
    grep -h " in [0-9.]*s " "$out"/five-*.log;;
  again)  # on the same warm machine after one-call (compile cache filled): both codes'
    # breakdowns, then five profiles old then new, each start judged with the caches warm
    for code in new old; do
      timed "startup breakdown ($code code)" 150 breakdown $code
    done
    n=2
    for code in old new; do
      n=$((n + 1))
      timed "five profiles, run $n ($code code)" 130 five $code $n
    done
    tail -n 12 "$out/breakdown-new.txt" "$out/breakdown-old.txt"
    grep -h " in [0-9.]*s " "$out"/five-*.log;;
  sweep)
    timed "15-profile sweep (${CODE:-new} code)" "${SWEEP_LIMIT:-560}" sweep "${CODE:-new}"
    tail -n 30 "$out/sweep-${CODE:-new}.log";;
esac
nvidia-smi --query-gpu=memory.used --format=csv >> "$out/gpu.txt" 2>&1
