"""Exports of a history: one JSON document, or pytest-benchmark JSON files (one per run).

JSON layout: ``{schema_version, exported, runs: [{run columns..., options: {...},
results: [{result columns..., fingerprint/versions/samples/violations decoded}]}]}``,
columns as in :mod:`.schema`, times ISO 8601 UTC, latencies in seconds.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_omni_perf.history.backends import Value
from pytest_omni_perf.history.schema import SCHEMA_VERSION
from pytest_omni_perf.history.store import HistoryStore, decode

_JSON_COLUMNS = ("fingerprint", "versions", "samples", "violations", "options")


def _decoded(row: Mapping[str, Value]) -> dict[str, Any]:
    return {k: decode(v) if k in _JSON_COLUMNS else v for k, v in row.items()}


def history_document(store: HistoryStore) -> dict[str, Any]:
    """The whole history as one JSON-ready dict (layout in the module docstring)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in store.results():
        by_run.setdefault(str(row["run_id"]), []).append(_decoded(row))
    return {"schema_version": SCHEMA_VERSION,
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "runs": [{**_decoded(run), "results": by_run.get(str(run["run_id"]), [])}
                     for run in store.runs()]}


def _as_result(row: Mapping[str, Any]) -> dict[str, Any]:
    samples = row.get("samples") or []
    return {"nodeid": row["nodeid"], "profile": row["profile"], "label": row["label"],
            "measurement": {"samples_s": samples, "latency": {"samples": samples},
                            "memory": {"peak_bytes": row.get("memory_peak_bytes") or 0,
                                       "kind": row.get("memory_kind")},
                            "cold_start_s": row.get("cold_start_s"), "model": row.get("model"),
                            "backend": row.get("backend"), "request": None},
            "speedup": row.get("speedup"), "quality": {"ssim_mean": row.get("ssim")},
            "verdict": row.get("outcome") or "unknown"}


def write_benchmark_files(store: HistoryStore, folder: Path) -> list[Path]:
    """One pytest-benchmark JSON file per run with latency samples, named as
    pytest-benchmark's storage names them (``NNNN_<commit>_<YYYYmmdd_HHMMSS>.json``), so
    ``pytest-benchmark compare FOLDER/*.json`` charts the history. The written paths."""
    from pytest_omni_perf.report import benchmark_export as bench
    from pytest_omni_perf.report.json_report import write_json

    written = []
    document = history_document(store)
    for number, run in enumerate(document["runs"], 1):
        results = [_as_result(r) for r in run["results"] if r.get("samples")]
        if not results:
            continue
        when = datetime.datetime.fromisoformat(str(run["finished"]))
        commit = {"id": run.get("git_commit") or "unversioned", "time": None,
                  "author_time": None, "dirty": False, "project": "",
                  "branch": "(unknown)"}
        # The recording host, not this one: an export describes where each run was made.
        machine = {"node": run.get("host"), "hardware_key": run.get("hardware_key")}
        export = bench.benchmark_document(results, machine=machine, commit=commit,
                                          created=when)
        path = folder / f"{number:04d}_{commit['id']}_{when:%Y%m%d_%H%M%S}.json"
        write_json(path, export)
        written.append(path)
    return written


def write_history_json(store: HistoryStore, path: Path | None) -> str:
    """The JSON export, written atomically to ``path`` or returned as text for stdout."""
    from pytest_omni_perf.report.json_report import _finite, write_json

    document = _finite(history_document(store))
    if path is None:
        return json.dumps(document, indent=2, allow_nan=False) + "\n"
    write_json(path, document)
    return ""
