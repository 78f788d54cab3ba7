cd /work/main
for i in 1 2 3; do timeout 300 python3 -c "while True: pass" & done  # 3 busy processes: a busy 2-core machine
for i in 1 2 3; do
  HF_HUB_OFFLINE=1 OMNI_PERF_CACHE_DIR=/work/main/.omni-cache timeout 300 .venv/bin/python -m pytest tests/perf/test_text_to_image.py -p no:cacheprovider -q -o omni_profile_files=benchmarks/noop-drill.toml --omni-profile=compile_off --omni-update-baselines --omni-baseline-dir=/tmp/drill-bl --omni-history=none --omni-report-json=/tmp/drill-$i.json > /tmp/drill-$i.log 2>&1
done
pkill -f "while True: pass"
echo DONE > /tmp/drill.done
