#!/usr/bin/env bash
# The perf suite on the medium Flux through diffusers, vLLM-Omni offline (omni) and
# `vllm serve --omni` (omni-server), one backend after another on the same GPU, then a
# side-by-side table. Run on the GPU machine from the repository root, after
# scripts/install-vllm-omni-gpu.sh (omni backends) and with .whl/ carried (diffusers 0.40,
# cache-dit 1.5, torchao: docs/gpu-runs.md). Procedure: docs/vllm-omni-gpu.md.
#
# usage: scripts/gpu-omni-suite.sh [--backends LIST] [--profiles LIST] [--rounds N]
#            [--warmup N] [--budget-s S] [--out DIR] [--dry-run]
#   --backends  comma list of diffusers, omni, omni-server (default: all three)
#   --profiles  comma list (default: the single-GPU profiles vLLM-Omni supports)
#   --rounds/--warmup  measured / unmeasured requests per profile (default 3 / 1)
#   --budget-s  seconds per backend before its pytest is stopped like Ctrl-C, which still
#               writes its report (default 500: one backend fits one 10-minute call)
#   --out       where reports, logs and baselines go (default $OUT, else results/omni-gpu)
#   --dry-run   print the commands and environments, run nothing
# Writes per backend BACKEND.json (the report) and BACKEND.tar.gz (BACKEND/pytest.log,
# BACKEND/engine-logs/, BACKEND/baselines/<hardware key>/: fresh baselines, one folder per
# backend, since outputs of different engines are not comparable by SSIM), then
# summary.txt: 7 files at most, as $OUT gives back 8.
set -euo pipefail

backends=diffusers,omni,omni-server
# In the order of what users most want to know: a budget that runs out cuts the tail.
profiles=eager,compile,cache_dit,tea_cache,fp8,layerwise_offload,cpu_offload,vae_slicing,vae_tiling
rounds=3 warmup=1 budget=500 dry=0
out=${OUT:-results/omni-gpu}
usage() { sed -n '8,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
need() { [[ $# -ge 2 && -n $2 ]] || usage; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --backends) need "$@"; backends=$2; shift 2 ;;
        --profiles) need "$@"; profiles=$2; shift 2 ;;
        --rounds) need "$@"; rounds=$2; shift 2 ;;
        --warmup) need "$@"; warmup=$2; shift 2 ;;
        --budget-s) need "$@"; budget=$2; shift 2 ;;
        --out) need "$@"; out=$2; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
for n in "$rounds" "$warmup" "$budget"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "not a whole number: $n" >&2; exit 2; }
done
IFS=, read -r -a wanted <<<"$backends"
for b in "${wanted[@]}"; do
    [[ $b == diffusers || $b == omni || $b == omni-server ]] \
        || { echo "unknown backend: $b (diffusers, omni, omni-server)" >&2; exit 2; }
done

site=${SITE:-/tmp/site} osite=${OMNI_SITE:-/tmp/osite}
python=${PYTHON:-python3}
log() { echo "[gpu-omni-suite] $*"; }

# diffusers 0.40 & co. for the diffusers backend and for building the medium model.
if [[ $dry == 0 && ! -d $site/diffusers ]]; then
    compgen -G ".whl/*.whl" >/dev/null || { log ".whl/ not carried: see docs/gpu-runs.md"; exit 1; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" .whl/*.whl
fi
if [[ $dry == 0 && $backends == *omni* ]] && ! compgen -G "$osite/.omni-wheels-*" >/dev/null; then
    log "vLLM-Omni is not installed in $osite: run scripts/install-vllm-omni-gpu.sh first"
    exit 1
fi

mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export OMNI_PERF_CACHE_DIR=${OMNI_PERF_CACHE_DIR:-/tmp/omni-cache}
server='{python} -m vllm.entrypoints.cli.main serve {model} --omni --host 127.0.0.1 --port {port}'
logs=$("$python" -c 'import tempfile; print(tempfile.gettempdir())')/pytest-omni-perf-logs
reports=()
for backend in "${wanted[@]}"; do
    # vllm-omni 0.26 pins diffusers 0.38 / cache-dit 1.3 (in $osite); the diffusers backend
    # measures 0.40 / 1.5 (in $site). One PYTHONPATH per pytest run keeps them apart.
    if [[ $backend == diffusers ]]; then
        pythonpath="$site:$PWD"
    else
        pythonpath="$osite:$site:$PWD"
    fi
    work="$out/$backend"
    args=(tests/perf/test_medium_gpu.py::test_medium_image -p pytest_omni_perf.plugin
          -p no:cacheprovider -p no:benchmark -rs --omni-model=medium-flux
          "--omni-backend=$backend" "--omni-profile=$profiles" "--omni-rounds=$rounds"
          "--omni-warmup=$warmup" --omni-update-baselines
          "--omni-baseline-dir=$work/baselines" "--omni-report-json=$out/$backend.json")
    [[ $backend == omni-server ]] && args+=("--omni-server-command=$server")
    log "$backend: PYTHONPATH=$pythonpath, at most $budget s"
    if [[ $dry == 1 ]]; then
        printf '%q ' timeout --kill-after=60 "$budget" "$python" -m pytest "${args[@]}"; echo
        continue
    fi
    mkdir -p "$work"
    rm -rf "$logs"
    started=$SECONDS
    set +e
    # SIGTERM ends a pytest run like Ctrl-C: engines are stopped and the report is written.
    PYTHONPATH=$pythonpath timeout --kill-after=60 "$budget" "$python" -m pytest "${args[@]}" \
        2>&1 | tee "$work/pytest.log"
    code=${PIPESTATUS[0]}
    set -e
    log "$backend: exit $code after $((SECONDS - started)) s$([[ $code == 124 ]] && echo ' (budget spent)')"
    # Baselines (PNG), the pytest log and the engines' own logs travel as one file per
    # backend: $OUT gives back at most 8 files of 16 MB.
    [[ -d $logs ]] && mv "$logs" "$work/engine-logs"
    tar -czf "$out/$backend.tar.gz" -C "$out" "$backend" && rm -rf "$work"
    reports+=("$out/$backend.json")
done
[[ $dry == 1 ]] && exit 0
"$python" "$(dirname "$0")/compare_backends.py" "${reports[@]}" | tee "$out/summary.txt"
