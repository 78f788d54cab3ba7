"""The terminal summary table: one row per test, profile and request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _on_gpus(results: Sequence[dict[str, Any]]) -> bool:
    return any(r["measurement"].get("devices") for r in results)


def _devices(measurement: dict[str, Any]) -> str:
    return ",".join(map(str, measurement.get("devices") or ())) or "-"


def summary_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows of the table from serialized results (as reports carry them); a GPUs column
    (the profile's physical GPU indices, then the baseline's) when any result ran on one."""
    rows = []
    gpus = _on_gpus(results)
    for result in results:
        measured = result["measurement"]
        memory = measured["memory"]
        unit = "GiB" if memory["kind"] == "nvml" else "GiB RSS"
        quality = result.get("quality") or {}
        profile = result["profile"] + (f"@{result['label']}" if result.get("label") else "")
        rows.append([
            result["nodeid"].split("[")[0], profile,
            _fmt(measured["latency"]["median"], ".3f", " s"),
            _fmt(measured.get("cold_start_s"), ".1f", " s"),
            _fmt(result.get("speedup"), ".2f", "x"),
            _fmt(memory["peak_bytes"] / 2**30, ".2f", f" {unit}"),
            _fmt(quality.get("ssim_mean"), ".4f"),
            "FAIL" if result["violations"] else "ok",
        ])
        if gpus:
            where = _devices(measured)
            if result.get("baseline") is not None:
                where += f" (base {_devices(result['baseline'])})"
            rows[-1].insert(2, where)
    return rows


def write_summary(terminalreporter: Any, results: Sequence[dict[str, Any]]) -> None:
    """Write the table, then each violation and note in full."""
    header = ["test", "profile", "median", "cold", "speedup", "peak mem", "SSIM", "verdict"]
    if _on_gpus(results):
        header.insert(2, "GPUs")
    rows = summary_rows(results)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    terminalreporter.write_sep("=", "omni-perf summary")
    for row in [header, *rows]:
        terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for result in results:
        for note in result.get("notes", []):
            terminalreporter.write_line(f"note [{result['profile']}] {result['nodeid']}: {note}")
    for line in interference_lines(results):
        terminalreporter.write_line(line)


def interference_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    """One line per measurement whose host conditions were notable (issue 16), e.g.
    ``interference [cache_dit] t.py::test_x[cache_dit]: other processes used 1.6 cores in 9
    of 15 rounds``; the baseline profile's measurement is named as such, once per run."""
    lines, seen = [], set()
    for result in results:
        for key, who in (("measurement", result["profile"]),
                         ("baseline", f"baseline of {result['profile']}")):
            measured = result.get(key) or {}
            found = measured.get("interference") or {}
            if not found.get("notable"):
                continue
            line = (f"interference [{measured.get('profile', '?')}"
                    f"{'' if key == 'measurement' else ', ' + who}] {result['nodeid']}: "
                    f"{found.get('summary')}")
            if line not in seen:
                seen.add(line)
                lines.append(line)
    return lines


def write_suite_cost(terminalreporter: Any, results: Sequence[Mapping[str, Any]],
                     processes: Mapping[str, Mapping[str, Any]]) -> None:
    """The line saying what the session spent: engine starts, measurements, baselines."""
    from pytest_omni_perf.suite_cost import summary_line

    terminalreporter.write_line(f"omni-perf: {summary_line(results, processes)}")
