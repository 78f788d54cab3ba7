#!/usr/bin/env bash
# No-op drill (benchmarks/noop-drill.toml: compile_off, eager's options plus a do-nothing
# vae_use_slicing = false so it keeps an engine of its own) three times on the busy 2-core
# machine, at 2feba61 (busy_host module, busy results kept from recommendations).
mkdir -p /tmp/drill8
for i in 1 2 3; do timeout 900 python3 -c "while True: pass" & done  # 3 busy processes: a busy 2-core machine
for i in 1 2 3; do
  HF_HUB_OFFLINE=1 OMNI_PERF_CACHE_DIR=/work/main/.omni-cache timeout 220 .venv/bin/python -m pytest tests/perf/test_text_to_image.py -p no:cacheprovider -q -rA -o omni_profile_files=benchmarks/noop-drill.toml --omni-profile=compile_off --omni-update-baselines --omni-baseline-dir=/tmp/drill8/bl --omni-history=none --omni-report-json=/tmp/drill8/run-$i.json > /tmp/drill8/run-$i.log 2>&1
  echo "run $i exit $?" >> /tmp/drill8/steps.txt
done
kill $(jobs -p) 2>/dev/null
echo DONE >> /tmp/drill8/steps.txt
