#!/usr/bin/env bash
# The plugin's own tests (the README's test command): unit tests, pytester runs with and
# without xdist, end-to-end runs through the real diffusers engine on the tiny models, and
# the vLLM-Omni 0.30 contract tests in their own environment.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$("$root/scripts/bootstrap.sh" | tail -n 1)"
cd "$root"
export HF_HUB_OFFLINE=1 OMNI_PERF_CACHE_DIR="${OMNI_PERF_CACHE_DIR:-$root/.omni-cache}"
# tests/contract runs below, in the environment that has vLLM-Omni.
"$venv/bin/python" -m pytest tests --ignore=tests/contract -p no:cacheprovider -n 2 -q -rs "$@"
# The benchmarks too: startup_breakdown.py broke unseen when the engine pool's factory
# changed type, and the README's start-up numbers come from it.
"$venv/bin/python" -m mypy pytest_omni_perf benchmarks
# Contract tests against the real vLLM-Omni 0.30 (CPU build, ~3 min and 4.4 GB on first run).
omni_venv="${OMNI_VENV:-$root/.venv-omni}"
bash "$root/scripts/install-vllm-omni-cpu.sh" "$omni_venv"
"$omni_venv/bin/python" -m pytest tests/contract -p no:cacheprovider -q -rs -W ignore::DeprecationWarning
