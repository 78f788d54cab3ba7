#!/usr/bin/env bash
# Evidence for "one command for a model contributor" on one H200, one GPU machine per call:
#
#   bash scripts/gpu-support.sh TAG MODEL PROFILES [LIMIT_S]
#
# runs the zero-code suite (`pytest --pyargs pytest_omni_perf.suite`) for MODEL over the
# comma-separated PROFILES, writing $OUT/TAG.{json,md,html,log}. A device call lasts at most
# 10 minutes, so the 30-odd profiles of a model go in two or three calls; their JSON reports
# are merged into one table by `python -m pytest_omni_perf.support_table` (see
# docs/gpu-runs.md). Run from the repository root after carrying .whl (docs/gpu-runs.md).
# BACKEND=omni or omni-server measures through vLLM-Omni, installed in /tmp/osite first
# (scripts/install-vllm-omni-gpu.sh, docs/vllm-omni-gpu.md); default diffusers.
set -u
tag=$1 model=$2 profiles=$3 limit=${4:-500}
out=${OUT:-results/h200/support}
mkdir -p "$out"
py=${PYTHON:-python3}
plugin=${PLUGIN--p pytest_omni_perf.plugin}  # PLUGIN= where the package is installed
$py -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -n 2
backend=${BACKEND:-diffusers}
site=/tmp/site
# vLLM-Omni 0.26 pins diffusers 0.38 (in /tmp/osite), which must come first for its engines.
[[ $backend == diffusers ]] || site=/tmp/osite:/tmp/site
server='{python} -m vllm.entrypoints.cli.main serve {model} --omni --host 127.0.0.1 --port {port}'
export PYTHONPATH=$site:$PWD OMNI_PERF_CACHE_DIR=/tmp/omni-cache HF_HUB_OFFLINE=1 \
  PYTHONUNBUFFERED=1
began=$SECONDS
# A built-in model is built by the diffusers the plugin pins (0.40, digest-pinned weights),
# not by vLLM-Omni's 0.38, before its engines start.
[[ $backend == diffusers ]] || PYTHONPATH=/tmp/site:$PWD $py -c \
  'import sys; from pytest_omni_perf.builtin_models import ensure_model, is_builtin
m = sys.argv[1]; print(ensure_model(m) if is_builtin(m) else m)' "$model" >> "$out/$tag-steps.txt" 2>&1
timeout -s INT "$limit" $py -m pytest --pyargs pytest_omni_perf.suite $plugin \
  -p no:cacheprovider -p no:benchmark -rA --omni-model="$model" --omni-profile="$profiles" \
  --omni-backend="$backend" "--omni-server-command=$server" \
  --omni-max-rounds=10 --omni-history="$out/$tag-history.sqlite" \
  --omni-report-json="$out/$tag.json" --omni-report-markdown="$out/$tag.md" \
  --omni-report-html="$out/$tag.html" > "$out/$tag.log" 2>&1
echo "$tag: exit $? in $((SECONDS - began)) s" | tee -a "$out/$tag-steps.txt"
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$out/$tag-steps.txt" 2>&1
tail -n 60 "$out/$tag.log"
