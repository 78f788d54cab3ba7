"""The HTML report's load tables: ``omni_perf.load()`` levels and ``--omni-cases`` items.

One row per concurrency level with its numbers, a verdict badge (pass, fail, inconclusive)
and one line per bound: its outcome, the metric's interval and the bound, as the terminal
prints it (``cases/load_verdict.py``). Units: s, req/s, MB, ms for stage durations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_omni_perf.escape import html_text as escape

_METRICS = ("throughput_qps", "latency_mean", "latency_p50", "latency_p95", "latency_p99",
            "peak_memory_mb_max", "completed", "failed")
_HEAD = ("test", "concurrency", "verdict", "req/s", "mean s", "p50 s", "p95 s", "p99 s",
         "peak MB", "ok", "failed", "stages", "host", "bounds")
_WORDS = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


def _bounds_cell(verdicts: Sequence[Mapping[str, Any]], violations: Sequence[str]) -> str:
    """Each bound's outcome and message, then failures that are not bounds (requests)."""
    messages = {str(v.get("message")) for v in verdicts}
    items = [f'<li><span class="badge {escape(str(v.get("outcome")))}">'
             f'{_WORDS.get(str(v.get("outcome")), "?")}</span> {escape(str(v.get("message")))}'
             "</li>" for v in verdicts]
    items += [f'<li><span class="badge fail">FAIL</span> {escape(v)}</li>'
              for v in violations if v not in messages]
    return f"<ul>{''.join(items)}</ul>" if items else "-"


def _row(name: str, concurrency: object, verdict: str, metrics: Mapping[str, Any],
         stages: Mapping[str, float], host: object, bounds: str) -> str:
    cells = [escape(name), escape(str(concurrency)),
             f'<span class="badge {escape(verdict)}">{escape(verdict)}</span>']
    cells += ["-" if metrics.get(k) is None else f"{metrics[k]:.4g}" for k in _METRICS]
    cells.append(escape("; ".join(f"{k} {v:.4g} ms" for k, v in stages.items()) or "-"))
    # The host's conditions during the level ("quiet", "other processes used 1.1 cores in
    # 6 of 6 rounds"); "-" when not recorded (an attached server).
    cells.append(escape(str(host or "-")))
    cells.append(bounds)
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _table(title: str, rows: Sequence[str], notes: Sequence[str]) -> str:
    return (f"<h2>{escape(title)}</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in _HEAD)
            + "</tr>" + "".join(rows) + "</table>"
            + "".join(f'<p class="neutral">{escape(n)}</p>' for n in notes))


def loads_html(loads: Sequence[Mapping[str, Any]]) -> str:
    """A table of omni_perf.load() levels (empty when the run made no load)."""
    if not loads:
        return ""
    rows, notes = [], []
    for load in loads:
        for level in load["levels"]:
            rows.append(_row(
                f'{load["nodeid"]} [{load["profile"]}]', level["concurrency"],
                str(level.get("verdict") or ("fail" if level["violations"] else "pass")),
                level["metrics"], level["stage_durations_ms"], level.get("host"),
                _bounds_cell(level.get("verdicts") or (), level["violations"])))
        notes += [f"note: {n}" for n in load.get("notes", ())]
    return _table("Loads", rows, notes)


def cases_html(cases: Sequence[Mapping[str, Any]]) -> str:
    """A table of ``--omni-cases`` items, one per entry and level (empty without any)."""
    if not cases:
        return ""
    rows, notes = [], []
    for case in cases:
        rows.append(_row(str(case["nodeid"]), case["concurrency"],
                         str(case.get("verdict") or "pass"), case["measured"], {},
                         case.get("host"), _bounds_cell(case.get("verdicts") or (), ())))
        notes += [f"{case['nodeid']}: {n}" for n in case.get("notes", ())]
    return _table("Case files", rows, notes)
