#!/usr/bin/env bash
# NVML in a PID namespace of its own, for real: what peak VRAM the plugin reports when the
# engine's PIDs are not the PIDs NVML lists (issue 17, "a measurement that saw nothing says
# so"). One command on one GPU, about 2 minutes; run from the repository root:
#
#   bash scripts/gpu-pidns-check.sh            (writes into $OUT, else results/gpu-pidns/)
#
# Needs torch with CUDA, numpy, Pillow, nvidia-ml-py and psutil (the GPU image has them; any
# that is missing is installed from .whl/ as in docs/gpu-runs.md). No model and no diffusers:
# the engine is a worker process (the plugin's IsolatedEngine, through the public hook
# pytest_omni_perf_make_engine) that holds a 1.5 GiB CUDA tensor and makes a 64x64 image.
# One test, bounded by max_vram_gib=1, runs four times (profile eager, 3 rounds):
#
#   host       no namespace: NVML matches the worker's PID            -> kind nvml, ~2 GiB
#   alone      unshare --pid --fork --mount-proc: NVML lists the host
#              PID, the only process on the GPU                        -> kind nvml, counted
#                                                                         as that process
#   shared     the same, beside a second CUDA process in the namespace -> kind engine
#              (nothing attributable: the worker's torch_peak_bytes)
#   refused    shared, and the engine reports no allocator peak         -> kind none, the VRAM
#                                                                         bound refuses
# Each must FAIL on max_vram_gib=1 (before the fix, alone/shared read 0 GiB and passed).
# Writes <scenario>.json (the plugin's JSON report), <scenario>.log and summary.txt.
set -u
out=${OUT:-results/gpu-pidns}
mkdir -p "$out"
out=$(cd "$out" && pwd)
repo=$(pwd)
py=${PYTHON:-python3}

if [[ ${1:-} != --inner ]]; then
    missing=$($py - <<'PY'
import importlib.util as u
print(" ".join(m for m in ("torch", "numpy", "PIL", "pynvml", "psutil") if u.find_spec(m) is None))
PY
)
    if [[ -n $missing ]]; then
        echo "missing: $missing; installing .whl/*.whl into /tmp/site" >&2
        $py -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 2
    fi
    work=$(mktemp -d /tmp/pidns-check.XXXXXX)
    export PYTHONPATH=/tmp/site:$repo:$work${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1
    cat > "$work/pidns_engine.py" <<'PY'
"""A worker-process engine holding PIDNS_HOLD_GIB of CUDA memory; reports its allocator peak
as torch_peak_bytes unless PIDNS_NO_PEAK is set."""
import os, time
from pytest_omni_perf.engines.base import GenerationOutput


class Runner:
    def __init__(self, profile, options):
        self.block = None

    def load(self):
        import torch
        gib = float(os.environ.get("PIDNS_HOLD_GIB", "1.5"))
        self.block = torch.ones(int(gib * 2**30), dtype=torch.uint8, device="cuda")
        return {"held_gib": gib, "device": torch.cuda.get_device_name()}

    def generate(self, request):
        import torch
        began = time.perf_counter()
        torch.cuda.reset_peak_memory_stats()
        x = torch.rand(request.height, request.width, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(request.seed))
        frame = (x * 255).to(torch.uint8).cpu().numpy()
        torch.cuda.synchronize()
        metrics = {} if os.environ.get("PIDNS_NO_PEAK") else {
            "torch_peak_bytes": int(torch.cuda.max_memory_allocated())}
        return GenerationOutput(frames=[frame], engine_latency_s=time.perf_counter() - began,
                                engine_metrics=metrics)

    def close(self):
        self.block = None

    def versions(self):
        import torch
        return {"torch": torch.__version__}


def make(profile, options):
    return Runner(profile, options)
PY
    cat > "$work/conftest.py" <<PY
from pytest_omni_perf.engines.hosting import IsolatedEngine


def pytest_omni_perf_make_engine(config, spec, hardware):
    return IsolatedEngine(spec, "pidns_engine:make", {"profile": spec.profile_name,
                          "options": dict(spec.options)}, env={"PYTHONPATH": "$work"})
PY
    cat > "$work/test_pidns.py" <<'PY'
import pytest


@pytest.mark.omni_bounds(max_vram_gib=1.0)
def test_holds_vram(omni_perf):
    omni_perf.measure(width=64, height=64, num_inference_steps=1)
PY
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > "$out/gpu-before.txt" 2>&1
    bash "$0" --inner host "$work" "$out"
    userns=()
    if ! unshare --pid --fork --mount-proc true 2>/dev/null; then
        userns=(--user --map-root-user)  # no CAP_SYS_ADMIN: a user namespace grants it
        echo "unshare needs a user namespace here: ${userns[*]}" >&2
    fi
    for scenario in alone shared refused; do
        unshare "${userns[@]}" --pid --fork --mount-proc bash "$0" --inner "$scenario" "$work" "$out"
    done
    $py - "$out" > "$out/summary.txt" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for scenario in ("host", "alone", "shared", "refused"):
    try:
        (result,) = json.loads((out / f"{scenario}.json").read_text())["results"]
    except (OSError, ValueError) as exc:
        print(f"{scenario:8} no report: {exc}")
        continue
    memory = result["measurement"]["memory"]
    print(f"{scenario:8} kind={memory['kind']} peak={memory['peak_bytes'] / 2**30:.3f} GiB "
          f"samples={memory['samples']} verdict={result['verdict']}")
    print(f"         label: {memory.get('label')}")
    for v in result["violations"]:
        print(f"         {v['metric']}: {v['message']}")
PY
    cat "$out/summary.txt"
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > "$out/gpu-after.txt" 2>&1
    rm -rf "$work"
    exit 0
fi

# --inner SCENARIO WORK OUT: one pytest run (inside the namespace for all but host).
scenario=$2 work=$3 out=$4
echo "== $scenario: pid $$ in namespace $(readlink /proc/self/ns/pid)" >&2
occupier=
if [[ $scenario == shared || $scenario == refused ]]; then
    $py -c "import torch, time; x = torch.ones(2**30, dtype=torch.uint8, device='cuda'); \
print('ready', flush=True); time.sleep(300)" > "$work/occupier.out" 2>&1 &
    occupier=$!
    for _ in $(seq 120); do grep -q ready "$work/occupier.out" && break; sleep 0.5; done
fi
[[ $scenario == refused ]] && export PIDNS_NO_PEAK=1
cd "$work" && $py -m pytest test_pidns.py -p pytest_omni_perf.plugin -p no:cacheprovider \
    -p no:benchmark -p no:randomly -rA --omni-profile=eager --omni-rounds=3 --omni-warmup=1 \
    --omni-update-baselines --omni-baseline-dir="$work/bl-$scenario" \
    --omni-report-json="$out/$scenario.json" > "$out/$scenario.log" 2>&1
echo "pytest exit $? (1 expected: the bound fails)" >> "$out/$scenario.log"
[[ -n $occupier ]] && kill "$occupier" && wait "$occupier" 2>/dev/null
tail -n 25 "$out/$scenario.log" >&2
exit 0
