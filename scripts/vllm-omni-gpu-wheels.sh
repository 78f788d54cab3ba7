#!/usr/bin/env bash
# Assemble vLLM-Omni 0.26 (+ vllm 0.26.0) for the H100 image and pack it into pieces that
# each fit one device call (the call's 64 MiB also carries the working tree, 39 MiB now).
#
# usage: scripts/vllm-omni-gpu-wheels.sh [--piece-mib N] [--dest DIR] [--list FILE]
#   --piece-mib  largest piece, MiB (default: what 62 MiB leaves beside the tree, at most 30)
#   --dest       output folder, git-ignored (default .omni-wheels)
#   --list       the exact wheel files (default scripts/vllm026-gpu-wheels.txt)
# Env: PYTHON (default python3) runs pip and the packing helper.
#
# Output: DEST/part-NN/ (one piece of omni-wheels.tar.xz plus MANIFEST each); carry one
# part-NN folder per call and run scripts/install-vllm-omni-gpu.sh there (docs/vllm-omni-gpu.md).
#
# Why xz of "stored" wheels rather than split wheels: the wheels are deflate zips, and
# vllm's CUDA fat binaries compress 3-4x better with xz than with deflate; re-zipping each
# wheel without compression (same members, same bytes, so its RECORD still holds) and then
# xz-ing the tar makes ~470 MB of wheels travel as far fewer pieces, while the GPU side only
# unpacks a tar and gets installable wheels back. Idempotent: each stage is skipped when
# its output is newer than its inputs.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
piece_mib=""
dest="$root/.omni-wheels"
list="$root/scripts/vllm026-gpu-wheels.txt"
PYTHON=${PYTHON:-python3}
usage() { sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --piece-mib) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || usage; piece_mib=$2; shift 2 ;;
        --dest) [[ $# -ge 2 ]] || usage; dest=$2; shift 2 ;;
        --list) [[ $# -ge 2 && -f $2 ]] || usage; list=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
log() { echo "[vllm-omni-gpu-wheels] $*"; }

# The wheels must not travel with the tree as untracked files: only a carried part should.
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1 && [[ $dest == "$root"/* ]] \
        && ! git -C "$root" check-ignore -q "$dest/part-01/x"; then
    echo "$dest is not git-ignored: it would travel with every device call" >&2
    exit 1
fi

mapfile -t wheels < <(grep -v '^[[:space:]]*\(#\|$\)' "$list")
download="$dest/download" stored="$dest/stored"
mkdir -p "$download" "$stored"

# 1. The exact files, --no-deps: the resolver would otherwise replace the image's torch and
#    triton. Every platform tag in the list is offered; the check below proves the match.
missing=()
for w in "${wheels[@]}"; do
    [[ -f $download/$w || $w == openai_whisper-* ]] || missing+=("$w")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    reqs=()
    for w in "${missing[@]}"; do
        IFS=- read -r name version _ <<<"$w"
        reqs+=("$name==$version")
    done
    platforms=()
    for n in 5 17 24 26 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    log "downloading ${#reqs[@]} wheels"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --abi cp312 --abi abi3 --abi none "${platforms[@]}" \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
        -d "$download" "${reqs[@]}"
fi
for w in "${wheels[@]}"; do
    if [[ $w == openai_whisper-* && ! -f $download/$w ]]; then
        IFS=- read -r _ version _ <<<"$w"
        log "building $w from its sdist (PyPI has no wheel)"
        "$PYTHON" -m pip wheel --quiet --no-deps -w "$download" "openai-whisper==$version"
    fi
    [[ -f $download/$w ]] || { echo "not downloaded as listed: $w (pip chose another file?)" >&2; exit 1; }
done
log "${#wheels[@]} wheels, $(du -cb "${wheels[@]/#/$download/}" | tail -1 | cut -f1) bytes as downloaded"

# 2. Re-zip each wheel without compression (members, bytes and order unchanged).
"$PYTHON" - "$download" "$stored" "${wheels[@]}" <<'PYEOF'
import os, sys, zipfile
src_dir, dst_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in names:
    src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
    if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        continue
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst + ".tmp", "w", zipfile.ZIP_STORED,
                                                      allowZip64=True) as zout:
        for info in zin.infolist():
            out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            out.external_attr = info.external_attr
            with zin.open(info) as data, zout.open(out, "w", force_zip64=True) as sink:
                while chunk := data.read(1 << 20):
                    sink.write(chunk)
    os.replace(dst + ".tmp", dst)
PYEOF
for f in "$stored"/*.whl; do  # a wheel dropped from the list must not travel
    [[ " ${wheels[*]} " == *" $(basename "$f") "* ]] || rm -f "$f"
done

# What travels with every call anyway: the tracked and untracked-but-not-ignored files.
tree_bytes=0
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    tree_bytes=$(cd "$root" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
fi
if [[ -z $piece_mib ]]; then
    # 2 MiB short of the limit for what a call adds (the MANIFEST, file metadata): a fixed
    # 30 MiB made 69.5 MiB calls once the tree had grown from 25 to 39 MiB (2026-12-06).
    piece_mib=$(( (62 * 1048576 - tree_bytes) / 1048576 ))
    (( piece_mib > 30 )) && piece_mib=30
    (( piece_mib >= 4 )) || { log "the working tree ($tree_bytes bytes) leaves no room in a call"; exit 1; }
fi

# 3. One reproducible tar.xz (sorted names, fixed owner and times), then the pieces.
archive="$dest/omni-wheels.tar.xz"
if [[ ! -f $archive || -n $(find "$stored" -newer "$archive" -name '*.whl' | head -1) ]]; then
    log "compressing (xz -6, a few minutes on two cores)"
    tar -C "$stored" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - \
        "${wheels[@]}" | xz -T0 -6 > "$archive.tmp"
    mv "$archive.tmp" "$archive"
fi
rm -rf "$dest"/part-*
split -b "${piece_mib}M" -a 2 --numeric-suffixes=1 "$archive" "$dest/omni-wheels.tar.xz."
pieces=("$dest"/omni-wheels.tar.xz.*)
manifest="$dest/MANIFEST"
{
    echo "# vLLM-Omni 0.26 GPU wheel set: pieces of omni-wheels.tar.xz, then its wheels"
    echo "pieces ${#pieces[@]}"
    echo "archive $(sha256sum "$archive" | cut -d' ' -f1) $(stat -c %s "$archive")"
    for p in "${pieces[@]}"; do
        echo "piece $(sha256sum "$p" | cut -d' ' -f1) $(stat -c %s "$p") $(basename "$p")"
    done
    (cd "$stored" && sha256sum "${wheels[@]}") | sed 's/^/wheel /'
} > "$manifest"
for p in "${pieces[@]}"; do
    part="$dest/part-${p##*.}"
    mkdir -p "$part"
    mv "$p" "$part/"
    cp "$manifest" "$part/MANIFEST"
done

# 4. What one device call would carry: the tree that travels anyway plus the largest part.
part_bytes=$(du -sb "$dest"/part-* | sort -n | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b/1048576}'; }
log "archive $(mib "$(stat -c %s "$archive")") in ${#pieces[@]} parts of at most ${piece_mib} MiB"
log "largest call: working tree $(mib "$tree_bytes") + part $(mib "$part_bytes")" \
    "= $(mib $((tree_bytes + part_bytes))) of the 64 MiB a device call may carry"
if (( tree_bytes + part_bytes > 62 * 1048576 )); then
    log "WARNING: too close to 64 MiB: rerun with a smaller --piece-mib"
fi
ls -d "$dest"/part-*
