#!/usr/bin/env bash
# No-op drill (benchmarks/noop-drill.toml: compile_off, eager's options plus a do-nothing
# vae_use_slicing = false so it keeps an engine of its own) three times on the busy 2-core
# machine, at the review commit of 2026-12-06 (busy-host notes, inconclusive listed once).
mkdir -p /tmp/drill7
for i in 1 2 3; do timeout 900 python3 -c "while True: pass" & done  # 3 busy processes: a busy 2-core machine
for i in 1 2 3; do
  HF_HUB_OFFLINE=1 OMNI_PERF_CACHE_DIR=/work/main/.omni-cache timeout 300 .venv/bin/python -m pytest tests/perf/test_text_to_image.py -p no:cacheprovider -q -rA -o omni_profile_files=benchmarks/noop-drill.toml --omni-profile=compile_off --omni-update-baselines --omni-baseline-dir=/tmp/drill7/bl --omni-history=none --omni-report-json=/tmp/drill7/run-$i.json > /tmp/drill7/run-$i.log 2>&1
  echo "run $i exit $?" >> /tmp/drill7/steps.txt
done
kill $(jobs -p) 2>/dev/null
echo DONE >> /tmp/drill7/steps.txt
