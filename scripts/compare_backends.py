"""Side-by-side table of JSON reports (``--omni-report-json``) from several backends.

usage: python scripts/compare_backends.py REPORT.json [REPORT.json ...]

One row per profile, one column group per report (its backend): warm median latency,
speedup against that backend's own baseline profile, SSIM against it, peak VRAM and engine
start. The last column divides each later backend's median by the first report's (the
reports come from one machine in one device call, so the ratio is a like-for-like one).
Nothing here is measured: it only reads what the reports hold.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def load(path: Path) -> tuple[str, dict[str, Mapping[str, Any]]]:
    """(backend name, {profile: result}) of one report; later results of a profile win."""
    report = json.loads(path.read_text(encoding="utf-8"))
    backend = str((report.get("backend") or {}).get("name") or path.stem)
    return backend, {str(r.get("profile")): r for r in report.get("results") or []}


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def cells(result: Mapping[str, Any] | None) -> list[str]:
    """median s, speedup, SSIM, peak GiB, start s (or the skip reason) of one result."""
    if result is None:
        return ["(not run)", "", "", "", ""]
    measurement = result.get("measurement") or {}
    median = (measurement.get("latency") or {}).get("median")
    if median is None:
        reason = " ".join(str(n) for n in result.get("notes") or []) or result.get("outcome")
        return [f"({str(reason)[:60]})", "", "", "", ""]
    peak = (measurement.get("memory") or {}).get("peak_bytes")
    return [_num(median, ".3f"), _num(result.get("speedup"), ".2f"),
            _num((result.get("quality") or {}).get("ssim_mean"), ".4f"),
            _num(peak / 2**30 if isinstance(peak, (int, float)) else None, ".2f"),
            _num(measurement.get("start_s"), ".0f")]


def table(reports: Sequence[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> str:
    """The side-by-side table as aligned text."""
    profiles: list[str] = []
    for _, results in reports:
        profiles += [p for p in results if p not in profiles]
    head = ["profile"]
    for backend, _ in reports:
        head += [f"{backend} s", "speedup", "ssim", "GiB", "start s"]
    head += [f"{b}/{reports[0][0]}" for b, _ in reports[1:]]
    rows = [head]
    for profile in profiles:
        row = [profile]
        for _, results in reports:
            row += cells(results.get(profile))
        first = _median(reports[0][1].get(profile))
        for _, results in reports[1:]:
            other = _median(results.get(profile))
            row.append(_num(other / first if first and other else None, ".2f"))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _median(result: Mapping[str, Any] | None) -> float | None:
    median = (((result or {}).get("measurement") or {}).get("latency") or {}).get("median")
    return float(median) if isinstance(median, (int, float)) else None


def main(argv: Sequence[str]) -> int:
    paths = [Path(a) for a in argv if Path(a).is_file()]
    for missing in (a for a in argv if not Path(a).is_file()):
        print(f"(no report: {missing})")
    if not paths:
        return 1
    print(table([load(p) for p in paths]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
