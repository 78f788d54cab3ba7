#!/usr/bin/env bash
# The main job: the perf suite on the built-in tiny models through the real diffusers engine.
# Every profile runs or skips with its reason; gates fail tests; a JSON report is written.
#   usage: bash scripts/perf-suite.sh [extra pytest args, e.g. --omni-profile=eager,cache_dit]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$("$root/scripts/bootstrap.sh" | tail -n 1)"
cd "$root"
export HF_HUB_OFFLINE=1 OMNI_PERF_CACHE_DIR="${OMNI_PERF_CACHE_DIR:-$root/.omni-cache}"
exec "$venv/bin/python" -m pytest tests/perf -p no:cacheprovider -rs \
  --omni-profile="${OMNI_PROFILE:-all}" --omni-report-json=perf-report.json "$@"
