cd /work/main
for i in 1 2 3; do timeout 900 python3 -c "while True: pass" & done  # 3 busy processes: a busy 2-core machine
for i in 1 2 3; do
  HF_HUB_OFFLINE=1 OMNI_PERF_CACHE_DIR=/work/main/.omni-cache timeout 300 .venv/bin/python -m pytest tests/perf/test_text_to_image.py -p no:cacheprovider -q -rA -o omni_profile_files=benchmarks/noop-drill.toml --omni-profile=compile_off --omni-update-baselines --omni-baseline-dir=/tmp/drill4/bl --omni-history=none --omni-report-json=/tmp/drill4/run-$i.json > /tmp/drill4/run-$i.log 2>&1
  echo "run $i exit $?" >> /tmp/drill4/steps.txt
done
pkill -f "while True: pass"
echo DONE >> /tmp/drill4/steps.txt
