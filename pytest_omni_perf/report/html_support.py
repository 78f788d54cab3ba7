"""The HTML report's support-table and recommendation section, read from the JSON
document's ``support`` and ``recommendations`` (see json_report's schema). Every string
goes through ``escape.html_text``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_omni_perf.escape import html_text as escape

_MARKS = {"supported": "✅", "unsupported by the model": "❌", "not runnable here": "⚠️",
          "not measured": ""}


def _speedup(m: Mapping[str, Any]) -> str:
    if m.get("speedup") is None:
        return "-"
    if m.get("low") is None or m.get("high") is None:
        return f"{m['speedup']:.2f}x"
    return f"{m['speedup']:.2f}x [{m['low']:.2f}-{m['high']:.2f}]"


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _detail(entry: Mapping[str, Any]) -> list[str]:
    head = f"<td>{escape(entry['method'])}</td><td>{escape(entry['profile'])}</td>" \
           f"<td>{escape(entry['status'])}</td>"
    if not entry.get("measured"):
        return [f"<tr>{head}<td colspan=6>{escape(entry.get('reason') or '-')}</td></tr>"]
    return [f"<tr>{head}<td>{escape(m.get('label') or '-')}</td><td>{_speedup(m)}</td>"
            f"<td>{_number(m.get('memory_ratio'), '.2f', 'x')}</td>"
            f"<td>{_number(m.get('ssim'), '.4f')}</td>"
            f"<td>{_number(m.get('cold_start_s'), '.1f', ' s')}</td>"
            f"<td>{escape(m.get('verdict') or '-')}</td></tr>" for m in entry["measured"]]


def support_html(document: Mapping[str, Any]) -> str:
    """``<h2>Support table</h2>`` per model (marks row, then the numbers or reasons), then
    the recommendations; empty when the document has neither."""
    # A model none of whose methods ran or skipped (a run of its reference profile alone)
    # has nothing to say about support: a table of blanks would only push the tests down.
    support: Mapping[str, Sequence[Mapping[str, Any]]] = {
        model: entries for model, entries in (document.get("support") or {}).items()
        if any(e.get("status") != "not measured" for e in entries)}
    recs: Sequence[Mapping[str, Any]] = document.get("recommendations") or []
    if not support and not recs:
        return ""
    out = ["<h2>Support table</h2>",
           "<p>✅ measured · ❌ unsupported by the model · ⚠️ not runnable here · blank: not "
           "measured. Speedup, peak memory and SSIM against each profile's baseline "
           "profile measured in the same session.</p>"]
    for model, entries in support.items():
        heads = "".join(f"<th>{escape(e['method'])}</th>" for e in entries)
        marks = "".join(f"<td>{_MARKS.get(str(e['status']), '?')}</td>" for e in entries)
        out.append(f"<table><tr><th>Model</th>{heads}</tr><tr><td><b>{escape(model)}</b>"
                   f"</td>{marks}</tr></table>")
        out.append("<table><tr><th>Method</th><th>Profile</th><th>Status</th><th>Request"
                   "</th><th>Speedup [CI]</th><th>Peak memory</th><th>SSIM</th>"
                   "<th>Cold start</th><th>Verdict</th></tr>"
                   + "".join(row for e in entries for row in _detail(e)) + "</table>")
    if recs:
        out.append("<h2>Recommendation</h2><ul>" + "".join(
            f"<li>{escape(r['model'])}{' [' + escape(r['label']) + ']' if r.get('label') else ''}"
            f" <b>{escape(r['branch'])}</b>: {escape(r['text'])}</li>" for r in recs) + "</ul>")
    return "".join(out)
