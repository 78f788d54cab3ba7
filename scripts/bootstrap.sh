#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with everything the tests and the
# perf suite need. Idempotent: a second run only checks.
#   usage: scripts/bootstrap.sh [VENV_DIR]     (default: .venv beside this repo)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv}"
python="${PYTHON:-python3}"
# shellcheck source=scripts/pip-quiet.sh
source "$root/scripts/pip-quiet.sh"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  pip_quiet "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=(pip_quiet "$venv/bin/python" -m pip install -q --disable-pip-version-check)
# torch first and pinned: unpinned, a dependency would pull a multi-GB CUDA build; 2.13.0 is
# the CPU build this machine family carries, and the version vllm-omni 0.30 pairs with.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "${pip[@]}" torch==2.13.0
fi
marker="$venv/.omni-perf-installed"
stamp="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ "$(cat "$marker" 2>/dev/null)" != "$stamp" ]; then
  "${pip[@]}" -e "$root[diffusers,quality,server,test]"
  # Change points (pytest_omni_perf/history/changes.py): Otava's analysis module needs only
  # numpy and scipy; its own pins (numpy==2.2.0, scipy<1.17, cloud clients) are skipped.
  "${pip[@]}" --no-deps "apache-otava==0.8.0"
  echo "$stamp" > "$marker"
fi
echo "$venv"
