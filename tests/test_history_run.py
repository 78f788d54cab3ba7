"""The history through real pytest runs: every session appends its results (serial, under
-n 2, and two sessions at once), a step change injected into the engine is found at the
right run, and the trend shows in the terminal and in the HTML page (checked in Chromium)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_omni_perf.history import HistoryStore
from pytest_omni_perf.history.cli import main as cli

PERF_TESTS = """
def test_image(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

def test_two_requests(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2, label="small")
    omni_perf.measure(width=48, height=32, num_inference_steps=2, label="large")
"""
ONE_TEST = """
def test_image(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--omni-rounds=3",
                                         "--omni-warmup=1", *args)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_each_session_appends_one_run(standin_pytester: pytest.Pytester,
                                      xdist: list[str]) -> None:
    standin_pytester.makepyfile(test_perf=PERF_TESTS)
    first = run(standin_pytester, "--omni-update-baselines", *xdist)
    first.assert_outcomes(passed=2)
    history = standin_pytester.path / "baselines" / "history.sqlite"
    first.stdout.fnmatch_lines([f"omni-perf: history: 3 results of run * appended to {history}"])
    run(standin_pytester, *xdist).assert_outcomes(passed=2)
    with HistoryStore.open(history) as store:
        assert store.count() == (2, 6)
        results = store.results()
        runs = store.runs()
    assert {(r["nodeid"], r["label"]) for r in results} == {
        ("test_perf.py::test_image[eager]", ""), ("test_perf.py::test_two_requests[eager]",
                                                  "small"),
        ("test_perf.py::test_two_requests[eager]", "large")}
    assert all(r["rounds"] == 3 and r["median_s"] and r["outcome"] == "pass"
               and r["hardware_key"] == "cpu" and r["memory_kind"] == "rss" for r in results)
    # The update run starts a level; the passing run joins it.
    assert [(r["accepted"], r["new_level"]) for r in results] == [(1, 1)] * 3 + [(1, 0)] * 3
    assert json.loads(str(runs[0]["options"]))["update_baselines"] is True
    assert runs[0]["git_commit"] is None  # pytester's folder is no git checkout


def test_two_concurrent_sessions_under_xdist_lose_no_row(standin_pytester: pytest.Pytester,
                                                         tmp_path: Path) -> None:
    """Two pytest sessions, each with -n 2, write one history at the same time."""
    standin_pytester.makepyfile(test_perf=PERF_TESTS)
    history = tmp_path / "shared.sqlite"
    procs = [standin_pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--omni-rounds=3",
         "-n", "2", f"--omni-history={history}", "--omni-update-baselines",
         f"--omni-baseline-dir=b{i}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
        for i in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("3 results of run" in out for out in outputs), outputs
    with HistoryStore.open(history) as store:
        assert store.count() == (2, 6)


def test_a_foreign_history_file_stops_the_session_before_any_test(
        standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(test_perf=ONE_TEST)
    foreign = standin_pytester.path / "notes.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    before = foreign.read_bytes()
    result = run(standin_pytester, "--omni-history=notes.db")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--omni-history: history {foreign}: it holds other tables "
                                 "(notes) and no omni_perf_schema table: not a "
                                 "pytest-omni-perf history; it was left untouched"])
    assert foreign.read_bytes() == before


def test_step_change_is_found_at_the_run_that_made_it(standin_pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """Ten runs, one commit each; from the sixth on, the engine sleeps 0.06 s instead of
    0.02 s per request. The change point is the sixth run, at its commit."""
    root = standin_pytester.path
    standin_pytester.makepyfile(test_perf=ONE_TEST)
    git(root, "init", "-q")
    commits = []
    for i in range(10):
        delay = "0.02" if i < 5 else "0.06"
        monkeypatch.setenv("STANDIN_DELAY_EAGER", delay)
        (root / "engine_version.txt").write_text(f"run {i}: delay {delay}\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"run {i}")
        commits.append(git(root, "rev-parse", "HEAD"))
        result = run(standin_pytester, "--omni-rounds=5",
                     *(["--omni-update-baselines"] if i == 0 else []))
        result.assert_outcomes(passed=1)
    # The last run's terminal table: a sparkline jumping up half way, and the move found.
    result.stdout.re_match_lines([r"test_perf.py::test_image\s+eager .* ok\s+[▁▂]{3}[▇█]{5} "
                                  r"[+-]\d+% vs level \(\d changes?\)$"])
    history = root / "baselines" / "history.sqlite"
    # 50 %: this shared CPU host flips between levels ~17 % apart from run to run.
    assert cli(["changes", "--history", str(history), "--min-change", "50"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"test_perf.py::test_image\[eager\] \[eager\] on cpu: latency_s, 10 runs, "
                     r"1 level change\(s\)", out), out
    found = re.search(rf"run \w+ \(commit {commits[5][:12]}\): 0\.0\d+ s -> 0\.0[67]\d* s "
                      r"\(\+(\d+\.\d) %\), p = ([\d.e-]+)", out)
    assert found, out
    assert float(found.group(1)) > 100 and float(found.group(2)) < 0.001


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            if os.access(exe := os.path.join(folder, name), os.X_OK):
                return exe
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")


def test_trend_chart_in_the_html_report(standin_pytester: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    exe = chromium()
    standin_pytester.makepyfile(test_perf=ONE_TEST)
    for i in range(8):
        monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.02" if i < 4 else "0.05")
        html = ["--omni-report-html=out/report.html"] if i == 7 else []
        run(standin_pytester, *html, *(["--omni-update-baselines"] if i == 0 else []))
    page = (standin_pytester.path / "out" / "report.html").read_text()
    svg = re.search(r'<svg class="trend".*?</svg>', page)
    assert svg, page[-3000:]
    chart = svg.group(0)
    assert chart.count("<circle") == 8 and chart.count('fill="#1565c0"') == 1  # this run
    assert "level moved +" in chart and "accepted level" in chart

    shot = tmp_path / "shot.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,3200",
                    f"--screenshot={shot}", (standin_pytester.path / "out" / "report.html"
                                             ).as_uri()], capture_output=True, timeout=60)
    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    # The change-point line (#c62828) and this run's dot (#1565c0) are drawn on the page.
    red = (abs(rgb[..., 0] - 0xc6) < 30) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    blue = (rgb[..., 0] < 60) & (abs(rgb[..., 1] - 0x65) < 30) & (rgb[..., 2] > 160)
    assert red.sum() > 20 and blue.sum() > 20
    if os.environ.get("OMNI_PERF_KEEP_SCREENSHOT"):  # to look at it by eye
        Image.open(shot).save(os.environ["OMNI_PERF_KEEP_SCREENSHOT"])


def test_the_history_measures_the_run_to_run_spread_of_a_series(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the third unfailed run of a series on, its intervals are widened by the spread
    its own history shows (pooled with the default), and each result says so;
    --omni-run-spread still fixes the spread by hand."""
    standin_pytester.makepyfile(test_perf=ONE_TEST)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.03")
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.01")  # 3x: passes min_speedup=1.2
    args = ("--omni-profile=cache_dit", "--omni-rounds=5", "--omni-report-json=r.json")
    for i in range(3):
        result = run(standin_pytester, *args, *(["--omni-update-baselines"] if i == 0 else []))
        result.assert_outcomes(passed=1)
        assert "unfailed runs of this series" not in result.stdout.str()
    result = run(standin_pytester, *args, "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*[[]cache_dit[]]*run-to-run spread *%: 3 unfailed runs of this series in the history "
        "(their own sd *%, of the log speedup), pooled with the default 2.0% (weight 4 runs)"])
    (only,) = json.loads((standin_pytester.path / "r.json").read_text())["results"]
    note = re.search(r"run-to-run spread ([\d.]+)%: 3 unfailed", " ".join(only["notes"]))
    assert note is not None
    # The interval the gate read was widened by that spread, not by the 2% default.
    assert only["speedup_interval"]["spread"] == pytest.approx(float(note[1]) / 100, abs=5e-4)
    fixed = run(standin_pytester, *args, "--omni-run-spread=0.02", "-rA")
    fixed.assert_outcomes(passed=1)
    assert "unfailed runs of this series" not in fixed.stdout.str()


def test_the_level_of_accepted_runs_is_the_stored_reference(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unlucky recording run (3x slow) is not the reference once three runs are accepted:
    the stored-latency gate compares with their level, and says so. (The spread is fixed:
    that unlucky run would otherwise widen this series' measured spread to ~35%.)"""
    standin_pytester.makepyfile(test_perf=ONE_TEST)
    args = ("--omni-rounds=5", "--omni-report-json=r.json", "-rA", "--omni-run-spread=0.02")
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.06")  # the recording run, 3x slow
    run(standin_pytester, *args, "--omni-update-baselines").assert_outcomes(passed=1)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.02")
    for _ in range(2):
        run(standin_pytester, *args).assert_outcomes(passed=1)
    with HistoryStore.open(standin_pytester.path / "baselines" / "history.sqlite") as store:
        assert [r["accepted"] for r in store.results()] == [1, 1, 1]  # recorded, passed
    # Against the stored 0.06 s run this would read 0.33x; against the level (the median
    # of 0.06, 0.02 and 0.02 s), about 1x.
    result = run(standin_pytester, *args)
    result.assert_outcomes(passed=1)
    (only,) = json.loads((standin_pytester.path / "r.json").read_text())["results"]
    assert 0.8 < only["latency_ratio"]["estimate"] < 1.25, only["latency_ratio"]
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.04")  # now 2x the level
    slow = run(standin_pytester, *args)
    slow.assert_outcomes(passed=1)  # a reference profile's absolute latency only warns
    slow.stdout.fnmatch_lines([
        "*latency_regression*latency is *x [[]*[]] (95% CI, 5 rounds*) the level of the last 4 "
        "accepted runs of this series in the history *history.sqlite (their median), bound "
        "+5%: the whole interval is above the bound*"])
    (only,) = json.loads((standin_pytester.path / "r.json").read_text())["results"]
    assert 1.7 < only["latency_ratio"]["estimate"] < 2.3, only["latency_ratio"]
