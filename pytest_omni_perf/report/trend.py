"""What a result's history looks like: a sparkline for the terminal and an inline SVG chart
for the HTML report, both drawn from the ``history`` entry that :mod:`.session` attaches
to each reported result::

    history  {metric: "latency_s", where: file or URL, run_id: this run,
              points: [{run_id, recorded, commit, value, low, high, accepted}] (oldest first,
                       the last TREND_POINTS of the series, this run last),
              level: {value, low, high, n, this_run_only} (the accepted level: mean, min
                     and max of the recent accepted runs; this_run_only when this run
                     started it) or null,
              changes: [{index (in points), run_id, recorded, commit, before, after,
                         change_percent, p_value}],
              changes_error: why change points are missing (optional)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pytest_omni_perf.escape import html_text as escape
from typing import Any

_BARS = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 8


SPARK_MIN_SPAN = 0.10
"""A sparkline spans at least 10 % of its largest value, so run-to-run noise of a few
percent draws as a nearly flat line instead of filling all eight levels."""


def sparkline(values: Sequence[float]) -> str:
    """Eight-level block characters, one per value, scaled to their min..max (widened to
    SPARK_MIN_SPAN around their middle when narrower)."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = max(hi - lo, abs(hi) * SPARK_MIN_SPAN)
    if span <= 0:
        return _BARS[0] * len(values)
    lo = (lo + hi) / 2 - span / 2
    return "".join(_BARS[max(0, min(7, int((v - lo) / span * 8)))] for v in values)


def marker(history: Mapping[str, Any] | None) -> str:
    """The terminal's trend cell: a sparkline of the last 8 values (this run last) and this
    run against the accepted level, e.g. ``▁▁▂▁▇▇█▇ +31% vs level``; ``first run, no level
    yet`` when every point is this run's; ``new level from this run`` when the level is made
    of this run alone (``--omni-update-baselines`` starts one)."""
    if not history:
        return "-"
    values = [p["value"] for p in history.get("points") or [] if p.get("value") is not None]
    if not values:
        return "-"
    text = sparkline(values[-SPARK_POINTS:])
    level = (history.get("level") or {}).get("value")
    current = [p["value"] for p in history.get("points") or []
               if p.get("run_id") == history.get("run_id") and p.get("value") is not None]
    runs = {p.get("run_id") for p in history.get("points") or [] if p.get("value") is not None}
    if runs <= {history.get("run_id")}:
        # A level made of this run alone: "+0% vs level" read as a comparison on a fresh clone.
        text += " first run, no level yet"
    elif (history.get("level") or {}).get("this_run_only"):
        # A refresh starts a level of this run alone: "+0% vs level" compared it to itself.
        text += " new level from this run"
    elif level and current:
        text += f" {(current[-1] / level - 1) * 100:+.0f}% vs level"
    if history.get("changes"):
        text += f" ({len(history['changes'])} change{'s' * (len(history['changes']) > 1)})"
    return text


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def trend_svg(history: Mapping[str, Any] | None, width: int = 560, height: int = 170) -> str:
    """An inline SVG line chart of the history: points (hollow = not accepted), their
    intervals, the accepted level as a shaded band with its mean, change points as dashed
    red lines with the move, and this run as a larger blue dot. "" without points."""
    points = [p for p in (history or {}).get("points") or [] if p.get("value") is not None]
    if not history or not points:
        return ""
    level = history.get("level") or None
    values = [p["value"] for p in points] + [v for p in points for v in (p.get("low"),
                                                                          p.get("high")) if v]
    if level:
        values += [level["low"], level["high"]]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or hi * 0.05 or 1.0
    left, right, top, bottom = 58, 12, 14, 30
    x = _scale(0, max(len(points) - 1, 1), left, width - right)
    y = _scale(lo - pad, hi + pad, height - bottom, top)
    parts = [f'<svg class="trend" width="{width}" height="{height}" viewBox="0 0 {width} '
             f'{height}" role="img" aria-label="trend of {escape(str(history.get("metric")))}">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" '
             f'height="{height - top - bottom}" fill="#fff" stroke="#d0d4dc"/>']
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" '
                     f'text-anchor="end" fill="#555">{v:.3g}</text>')
    if level:
        parts.append(f'<rect x="{left}" y="{y(level["high"]):.1f}" width="{width - left - right}"'
                     f' height="{max(1.0, y(level["low"]) - y(level["high"])):.1f}" '
                     'fill="#2e7d32" fill-opacity="0.12"/>')
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(level["value"]):.1f}" '
                     f'y2="{y(level["value"]):.1f}" stroke="#2e7d32" stroke-width="1.5">'
                     f'<title>accepted level {level["value"]:.4g} (n={level["n"]})</title></line>')
    index = {p["run_id"]: i for i, p in enumerate(points)}
    for change in history.get("changes") or []:
        if (i := index.get(change["run_id"])) is None:
            continue
        cx = (x(i - 1) + x(i)) / 2 if i else x(i)
        parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{top}" y2="{height - bottom}" '
                     'stroke="#c62828" stroke-dasharray="4 3" stroke-width="1.5"><title>'
                     f'level moved {change["change_percent"]:+.1f}% (p={change["p_value"]:.2g})'
                     '</title></line>')
        parts.append(f'<text x="{cx + 3:.1f}" y="{top + 11}" font-size="10" fill="#c62828">'
                     f'{change["change_percent"]:+.0f}%</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(p['value']):.1f}"
                    for i, p in enumerate(points))
    parts.append(f'<path d="{path}" fill="none" stroke="#8a93a6" stroke-width="1"/>')
    for i, p in enumerate(points):
        if p.get("low") is not None and p.get("high") is not None:
            parts.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(p["low"]):.1f}" '
                         f'y2="{y(p["high"]):.1f}" stroke="#8a93a6"/>')
        current = p["run_id"] == history.get("run_id")
        fill = "#1565c0" if current else ("#37474f" if p.get("accepted") else "#fff")
        tip = (f'{escape(str(p.get("recorded", ""))[:19])} {p["value"]:.4g}'
               + (f' commit {escape(str(p["commit"])[:12])}' if p.get("commit") else "")
               + (" (this run)" if current else ""))
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(p["value"]):.1f}" '
                     f'r="{5 if current else 3}" fill="{fill}" stroke="#37474f">'
                     f'<title>{tip}</title></circle>')
    parts.append(f'<text x="{left}" y="{height - 10}" font-size="10" fill="#555">'
                 f'{escape(str(history.get("metric")))} over the last {len(points)} runs '
                 '(green: accepted level; red: change points; blue: this run)</text></svg>')
    return "".join(parts)


def trend_html(result: Mapping[str, Any]) -> str:
    """The chart block of one report result, or "" when it has no history."""
    history = result.get("history")
    chart = trend_svg(history)
    if not chart:
        return ""
    note = (history or {}).get("changes_error")
    return (f'<div class="trend"><div><b>history</b></div>{chart}'
            + (f'<p class="neutral">{escape(str(note))}</p>' if note else "") + "</div>")
