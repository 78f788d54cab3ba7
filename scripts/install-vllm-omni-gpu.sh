#!/usr/bin/env bash
# Install vLLM-Omni 0.26 (+ vllm 0.26.0) on the H100 image from carried pieces, one device
# call per piece (pieces from scripts/vllm-omni-gpu-wheels.sh; procedure: docs/vllm-omni-gpu.md).
#
# usage: scripts/install-vllm-omni-gpu.sh [--check-only] PART_DIR...
#   Run from the repository root on the GPU machine. Each call stages the pieces it carries
#   under $OMNI_STAGE (default /tmp/omni-stage); the call that completes the set unpacks
#   it, checks every sha256, installs into $OMNI_SITE (default /tmp/osite) with
#   `pip install --no-index --no-deps --target` and checks that vllm, vllm_omni and
#   `vllm serve --omni` work. Calls after that only repeat the checks (--check-only: no
#   staging). Exit status 0: pieces staged (a "missing:" line names those still due) or
#   the install checks out; 1: a broken piece or a failed check; 2: bad arguments.
#
# Only the image's own torch 2.11.0+cu130, torchvision, torchaudio and triton 3.6.0 are
# used: the wheel set holds none of them and --no-deps keeps pip from fetching any.
# Coexistence with the diffusers backend's wheels in /tmp/site (diffusers 0.40, cache-dit
# 1.5): vllm-omni 0.26 pins diffusers 0.38 and cache-dit 1.3, which this installs into
# $OMNI_SITE. Put $OMNI_SITE first for omni runs and leave it out for diffusers runs:
#   omni:      PYTHONPATH=/tmp/osite:/tmp/site:$PWD
#   diffusers: PYTHONPATH=/tmp/site:$PWD
set -euo pipefail

stage=${OMNI_STAGE:-/tmp/omni-stage}
site=${OMNI_SITE:-/tmp/osite}
PYTHON=${PYTHON:-python3}
check_only=0
log() { echo "[install-vllm-omni-gpu] $*"; }
usage() { sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
parts=()
for arg in "$@"; do
    case $arg in
        --check-only) check_only=1 ;;
        -h|--help) usage ;;
        -*) echo "unknown option: $arg" >&2; usage ;;
        *) [[ -f $arg/MANIFEST ]] || { echo "$arg: no MANIFEST (not a carried part folder?)" >&2; exit 2; }
           parts+=("$arg") ;;
    esac
done
[[ ${#parts[@]} -gt 0 || $check_only == 1 || -f $stage/MANIFEST ]] || usage
mkdir -p "$stage"

manifest_field() { awk -v k="$1" '$1 == k {print $2; exit}' "$2"; }

# -- 1. stage the carried pieces ------------------------------------------------------------
for part in "${parts[@]}"; do
    if [[ -f $stage/MANIFEST ]] && ! cmp -s "$part/MANIFEST" "$stage/MANIFEST"; then
        log "the stage holds pieces of another wheel set: starting over"
        rm -rf "${stage:?}"/*
    fi
    cp "$part/MANIFEST" "$stage/MANIFEST"
    for piece in "$part"/omni-wheels.tar.xz.*; do
        [[ -e $piece ]] || continue
        name=$(basename "$piece")
        want=$(awk -v n="$name" '$1 == "piece" && $4 == n {print $2}' "$stage/MANIFEST")
        [[ -n $want ]] || { log "$name is not in the MANIFEST"; exit 1; }
        have=$(sha256sum "$piece" | cut -d' ' -f1)
        [[ $have == "$want" ]] || { log "$name: sha256 $have, expected $want (broken transfer)"; exit 1; }
        cp "$piece" "$stage/$name.tmp" && mv "$stage/$name.tmp" "$stage/$name"
        log "staged $name"
    done
done

archive_sha=$(manifest_field archive "$stage/MANIFEST")
marker="$site/.omni-wheels-$archive_sha"

# -- 2. once every piece is there: unpack, verify, install ----------------------------------
if [[ ! -f $marker && $check_only == 0 ]]; then
    missing=()
    while read -r _ sha _ name; do
        [[ -f $stage/$name ]] && [[ $(sha256sum "$stage/$name" | cut -d' ' -f1) == "$sha" ]] \
            || missing+=("part-${name##*.}")
    done < <(grep '^piece ' "$stage/MANIFEST")
    total=$(manifest_field pieces "$stage/MANIFEST")
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "have $((total - ${#missing[@]})) of $total pieces; missing: ${missing[*]}"
        exit 0
    fi
    log "all $total pieces staged: unpacking"
    rm -rf "$stage/wheels" && mkdir -p "$stage/wheels"
    # Python's lzma, not an xz binary: the image is not known to have one.
    cat "$stage"/omni-wheels.tar.xz.* | "$PYTHON" -c '
import hashlib, sys, tarfile
class Hashing:
    def __init__(self, raw): self.raw, self.sha = raw, hashlib.sha256()
    def read(self, n=-1):
        data = self.raw.read(n); self.sha.update(data); return data
src = Hashing(sys.stdin.buffer)
with tarfile.open(fileobj=src, mode="r|xz") as tar:
    tar.extractall(sys.argv[1], filter="data")
while src.read(1 << 20):
    pass
if src.sha.hexdigest() != sys.argv[2]:
    sys.exit(f"archive sha256 {src.sha.hexdigest()} != {sys.argv[2]}")
' "$stage/wheels" "$archive_sha"
    (cd "$stage/wheels" && grep '^wheel ' "$stage/MANIFEST" | cut -d' ' -f2- | sha256sum --quiet -c -)
    log "$(ls "$stage/wheels" | wc -l) wheels verified; installing into $site"
    rm -rf "$site"
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" "$stage"/wheels/*.whl
    rm -rf "$stage/wheels" "$stage"/omni-wheels.tar.xz.*  # the disk is shared with models
    touch "$marker"
fi
[[ -f $marker ]] || { log "not installed yet (run with the part folders first)"; exit 1; }

# -- 3. checks (what docs/vllm-omni-gpu.md and results/h100/vllm-omni/install.log show by hand) ---------
export PYTHONPATH="$site:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - <<'PYEOF'
from importlib import metadata
import vllm  # noqa: F401 - vllm's compiled ops must load against the image's torch
from vllm_omni import Omni  # noqa: F401
import diffusers, torch
want = {"vllm": "0.26.0", "vllm-omni": "0.26.0", "diffusers": "0.38.0", "cache-dit": "1.3.0"}
have = {d: metadata.version(d) for d in (*want, "torch", "triton", "transformers")}
print("[install-vllm-omni-gpu] versions:", " ".join(f"{k}={v}" for k, v in have.items()))
wrong = {d: have[d] for d, v in want.items() if have[d] != v}
if wrong or not torch.cuda.is_available():
    raise SystemExit(f"unexpected: {wrong or 'no CUDA device visible'}")
PYEOF
help=$("$PYTHON" -m vllm.entrypoints.cli.main serve --omni --help=all 2>&1) \
    || { echo "$help" | tail -20; log "vllm serve --omni --help failed"; exit 1; }
for flag in --omni --enforce-eager --quantization --cache-backend --cache-config \
        --enable-cpu-offload --enable-layerwise-offload --vae-use-slicing --vae-use-tiling --usp; do
    grep -q -- "$flag" <<<"$help" || { log "vllm serve --omni lacks $flag"; exit 1; }
done
log "ok: vllm, vllm_omni.Omni and vllm serve --omni work (PYTHONPATH=$PYTHONPATH)"
