#!/usr/bin/env bash
# vLLM-Omni's nightly case files, run as they are through `vllm serve --omni` on one GPU,
# with the built-in medium Flux served in place of the files' models (issue 20's evidence):
#
#   bash scripts/gpu-cases.sh [LIMIT_S] [CASE_FILE ...]
#
# Run from the repository root on the GPU machine after scripts/install-vllm-omni-gpu.sh
# (vLLM-Omni 0.26 in /tmp/osite) with .whl carried (diffusers 0.40 in /tmp/site, which
# builds the medium model bit-identically; docs/vllm-omni-gpu.md). Writes $OUT/cases.{json,
# html,md,log} and $OUT/steps.txt (default $OUT: results/h200/cases).
set -u
limit=${1:-540}
shift || true
files=${*:-tests/vllm_omni_cases_gpu/test_qwen_image_vllm_omni.json tests/vllm_omni_cases_gpu/test_boogu_image_vllm_omni.json}
out=${OUT:-results/h200/cases}
mkdir -p "$out"
py=${PYTHON:-python3}
$py -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -n 2
export OMNI_PERF_CACHE_DIR=/tmp/omni-cache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false
began=$SECONDS
# Built with the diffusers the plugin pins (0.40), not vLLM-Omni's 0.38: weights are digest-pinned.
PYTHONPATH=/tmp/site:$PWD $py -c 'from pytest_omni_perf.builtin_models import ensure_model; print(ensure_model("medium-flux"))' \
  >> "$out/steps.txt" 2>&1
echo "medium-flux ready after $((SECONDS - began)) s" | tee -a "$out/steps.txt"
server='{python} -m vllm.entrypoints.cli.main serve {model} --omni --host 127.0.0.1 --port {port}'
joined=$(echo $files | tr ' ' ',')
PYTHONPATH=/tmp/osite:/tmp/site:$PWD timeout -s INT "$limit" $py -m pytest -p pytest_omni_perf.plugin \
  -p no:cacheprovider -p no:benchmark -rA "--omni-cases=$joined" --omni-cases-model=medium-flux \
  "--omni-server-command=$server" --omni-history="$out/history.sqlite" \
  --omni-report-json="$out/cases.json" --omni-report-markdown="$out/cases.md" \
  --omni-report-html="$out/cases.html" > "$out/cases.log" 2>&1
echo "cases: exit $? in $((SECONDS - began)) s" | tee -a "$out/steps.txt"
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$out/steps.txt" 2>&1
tail -n 80 "$out/cases.log"
