"""The history store on its own: rows in and out, accepted levels, refusing files that are
not ours, many writers at once, import of stored baselines, export."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.history import HistoryError, HistoryStore
from pytest_omni_perf.history import rows
from pytest_omni_perf.history.cli import main as cli
from pytest_omni_perf.history.schema import RESULTS_TABLE, SCHEMA_TABLE


def reported(nodeid: str = "t.py::test_a[eager]", median: float = 0.2, *,
             verdict: str = "pass", latency_extra: dict[str, Any] | None = None,
             label: str = "") -> dict[str, Any]:
    """A result dict as the JSON report carries it (PerfResult.to_dict + outcome)."""
    samples = [median * 0.99, median, median * 1.01]
    return {"nodeid": nodeid, "profile": "eager", "label": label,
            "measurement": {"model": "tiny-flux", "backend": "diffusers", "samples_s": samples,
                            "latency": {"n": 3, "median": median, "p90": median * 1.01,
                                        "mean": median, "stdev": 0.001, "min": samples[0],
                                        "max": samples[-1], "samples": samples,
                                        **(latency_extra or {})},
                            "memory": {"kind": "rss", "peak_bytes": 2**30, "samples": 3},
                            "cold_start_s": 1.5, "applied": {}, "engine_metrics": {}},
            "speedup": None, "quality": {"ssim_mean": 0.97}, "stored_quality": None,
            "violations": [], "verdict": verdict, "outcome": "passed",
            "fingerprint": {"hardware_key": "cpu", "versions": {"torch": "2.13.0"}}}


def append(store: HistoryStore, results: list[dict[str, Any]], *, when: str,
           accepted: bool = True, new_level: bool = False, commit: str | None = None) -> str:
    run_id = rows.new_run_id()
    run = rows.run_row(run_id=run_id, started=when, finished=when, commit=commit,
                       hardware_key="cpu", plugin_version="0.1.0", backend="diffusers",
                       options={"rounds": 3})
    store.append(run, [rows.result_row(r, run_id=run_id, seq=i, hardware_key="cpu",
                                       commit=commit, recorded=when, plugin_version="0.1.0",
                                       accepted=accepted, new_level=new_level)
                       for i, r in enumerate(results)])
    return run_id


def test_rows_round_trip_with_and_without_the_robust_estimate(tmp_path: Path) -> None:
    with HistoryStore.open(tmp_path / "h.sqlite") as store:
        append(store, [reported(median=0.2)], when="2026-01-01T00:00:00+00:00")
        append(store, [reported(median=0.3, verdict="inconclusive", latency_extra={
            "estimate": 0.29, "ci_low": 0.28, "ci_high": 0.31})],
            when="2026-01-02T00:00:00+00:00", commit="abc123")
        got = store.results()
    assert [r["median_s"] for r in got] == [0.2, 0.3]
    assert [(r["estimate_s"], r["ci_low"], r["ci_high"]) for r in got] == [
        (None, None, None), (0.29, 0.28, 0.31)]
    assert [r["outcome"] for r in got] == ["pass", "inconclusive"]
    assert got[1]["git_commit"] == "abc123" and got[0]["git_commit"] is None
    assert got[0]["weights_digest"] and len(str(got[0]["weights_digest"])) == 64  # tiny-flux
    assert json.loads(str(got[0]["samples"])) == pytest.approx([0.198, 0.2, 0.202])
    assert json.loads(str(got[0]["versions"]))["torch"] == "2.13.0"
    assert got[0]["memory_peak_bytes"] == 2**30 and got[0]["ssim"] == 0.97


def test_recent_accepted_counts_from_the_latest_level(tmp_path: Path) -> None:
    key = ("t.py::test_a[eager]", "eager", "", "cpu")
    with HistoryStore.open(tmp_path / "h.sqlite") as store:
        for day, median in enumerate([0.20, 0.21, 0.19]):
            append(store, [reported(median=median)], when=f"2026-01-0{day + 1}T00:00:00+00:00",
                   new_level=day == 0)
        append(store, [reported(median=0.5, verdict="fail")], when="2026-01-04T00:00:00+00:00",
               accepted=False)
        assert [p.value for p in store.recent_accepted(*key, 10)] == [0.20, 0.21, 0.19]
        assert [p.value for p in store.recent_accepted(*key, 2)] == [0.21, 0.19]
        # A deliberate step: the run at 0.3 is accepted as a new level; older ones drop out.
        step = append(store, [reported(median=0.3)], when="2026-01-05T00:00:00+00:00",
                      accepted=False)
        assert store.accept(step, new_level=True) == 1
        append(store, [reported(median=0.31)], when="2026-01-06T00:00:00+00:00")
        assert [p.value for p in store.recent_accepted(*key, 10)] == [0.3, 0.31]
        assert store.recent_accepted("t.py::other", "eager", "", "cpu", 10) == []
        with pytest.raises(HistoryError, match="no run 'nope'"):
            store.accept("nope")


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(b"these are someone's notes, not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(HistoryError, match=f"history {path} is not a usable SQLite database"):
        HistoryStore.open(path)
    assert path.read_bytes() == before


def test_a_foreign_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    before = path.read_bytes()
    with pytest.raises(HistoryError, match=r"holds other tables \(invoices\) and no "
                       f"{SCHEMA_TABLE} table: not a pytest-omni-perf history"):
        HistoryStore.open(path)
    assert path.read_bytes() == before


def test_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    HistoryStore.open(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute(f"UPDATE {SCHEMA_TABLE} SET version = 7")
    with pytest.raises(HistoryError, match="schema version 7, but this pytest-omni-perf "
                       "reads version 1"):
        HistoryStore.open(path)


def _writer(path: str, worker: int, runs: int) -> None:
    with HistoryStore.open(path) as store:
        for i in range(runs):
            append(store, [reported(f"t.py::test_{worker}[eager]"), reported(label="2")],
                   when=f"2026-01-01T00:00:{i:02d}+00:00")


def test_concurrent_writers_lose_no_row(tmp_path: Path) -> None:
    """Four processes append 15 runs of 2 rows each to one new file at the same time."""
    path = tmp_path / "h.sqlite"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(path), w, 15)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    with HistoryStore.open(path) as store:
        assert store.count() == (60, 120)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute(f"SELECT COUNT(DISTINCT run_id) FROM {RESULTS_TABLE}"
                                  ).fetchone() == (60,)


def write_baseline(root: Path, hardware: str, slug: str, profile: str, median: float) -> Path:
    folder = root / hardware / slug / profile
    folder.mkdir(parents=True)
    metrics = {"schema_version": 1, "hardware_key": hardware, "frames": 1,
               "nodeid": f"tests/t.py::{slug}[{profile.split('@')[0]}]",
               "profile": profile.split("@")[0], "samples_s": [median] * 3,
               "latency": {"n": 3, "median": median, "p90": median, "samples": [median] * 3},
               "memory": {"kind": "nvml", "peak_bytes": 7 * 2**30}, "speedup": 1.5,
               "ssim_vs_baseline_profile": 0.99, "fingerprint": {"hardware_key": hardware}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "metrics.json"


def test_import_baselines_once_then_export(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    baselines = tmp_path / "baselines"
    write_baseline(baselines, "nvidia-h200", "test_image", "eager", 0.5)
    write_baseline(baselines, "nvidia-h200", "test_image", "fp8@large", 0.3)
    broken = write_baseline(baselines, "cpu", "test_video", "eager", 1.0)
    broken.write_text("{not json")
    history = str(tmp_path / "h.sqlite")

    assert cli(["import-baselines", str(baselines), "--history", history]) == 1
    out, err = capsys.readouterr()
    assert "imported 2 baseline(s)" in out and "0 already there" in out
    assert f"skipped {broken}: Expecting property name" in err
    broken.unlink()
    assert cli(["import-baselines", str(baselines), "--history", history]) == 0
    assert "imported 0 baseline(s)" in capsys.readouterr().out  # idempotent
    with HistoryStore.open(history) as store:
        assert store.count() == (2, 2)
        points = store.recent_accepted("tests/t.py::test_image[fp8]", "fp8", "large",
                                       "nvidia-h200", 5)
    assert [(p.median_s, p.accepted, p.new_level) for p in points] == [(0.3, True, True)]

    assert cli(["export", "--format", "json", "--history", history]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema_version"] == 1 and len(document["runs"]) == 2
    assert {r["source"] for r in document["runs"]} == {"import"}
    assert document["runs"][0]["results"][0]["samples"] == [0.5] * 3 or \
        document["runs"][0]["results"][0]["samples"] == [0.3] * 3

    out_dir = tmp_path / "bench"
    assert cli(["export", "--format", "pytest-benchmark", "--history", history,
                "--output", str(out_dir)]) == 0
    files = sorted(out_dir.glob("*.json"))
    assert [f.name[:4] for f in files] == ["0001", "0002"]
    bench = json.loads(files[0].read_text())
    assert bench["benchmarks"][0]["stats"]["rounds"] == 3 and bench["version"] == "5.3.1"


def test_cli_names_a_missing_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["changes", "--history", str(tmp_path / "none.sqlite")]) == 1
    assert f"error: history {tmp_path / 'none.sqlite'}: no such file" in capsys.readouterr().err
