"""The report's inline SVG charts and the small readers of a serialized result they share
with the page (``html_report``): speed against quality per test, SSIM per frame."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_omni_perf.escape import html_text as escape

Result = Mapping[str, Any]


def fmt(value: Any, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def result_name(r: Result) -> str:
    return str(r["profile"]) + (f"@{r['label']}" if r.get("label") else "")


def base_id(r: Result) -> str:
    nodeid = str(r["nodeid"])
    cut = nodeid.rfind("[") if nodeid.endswith("]") else -1
    return (nodeid[:cut] if cut > nodeid.rfind("::") else nodeid) + (
        f"  (request {r['label']})" if r.get("label") else "")


def peak_gib(r: Result) -> float:
    return float(r["measurement"]["memory"]["peak_bytes"]) / 2**30


def verdict_of(r: Result) -> str:
    return str(r.get("verdict") or ("fail" if r.get("violations") else "pass"))


# -- SVG charts -------------------------------------------------------------------------------
def _ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], int]:
    """Round tick values within [lo, hi] and the decimals that tell them apart."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = [(first + i) * step for i in range(count + 2) if (first + i) * step <= hi + 1e-12]
    return ticks, max(0, -math.floor(math.log10(step)))


def _domain(values: Sequence[float], must: float) -> tuple[float, float]:
    lo, hi = min(*values, must), max(*values, must)
    pad = (hi - lo) * 0.12 or max(abs(hi) * 0.01, 1e-4)
    return lo - pad, hi + pad


def _axes(w: int, h: int, m: tuple[int, int, int, int], xd: tuple[float, float],
          yd: tuple[float, float], xlabel: str, ylabel: str, inner: int = 0,
          ) -> tuple[list[str], Any, Any]:
    """Frame, grid, ticks and labels; ``inner`` pixels keep big markers inside the frame."""
    left, right, top, bottom = m

    def x(v: float) -> float:
        return left + inner + (v - xd[0]) / (xd[1] - xd[0]) * (w - left - right - 2 * inner)

    def y(v: float) -> float:
        return h - bottom - inner - (v - yd[0]) / (yd[1] - yd[0]) * (h - top - bottom - 2 * inner)

    def visible(d: tuple[float, float], pixels: int) -> tuple[float, float]:
        extra = (d[1] - d[0]) * inner / (pixels - 2 * inner)
        return d[0] - extra, d[1] + extra

    parts = [f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}"'
             ' fill="#fbfcfd" stroke="#cfd4dc"/>']
    xt, xdec = _ticks(*visible(xd, w - left - right))
    yt, ydec = _ticks(*visible(yd, h - top - bottom))
    for v in xt:
        parts.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top}" y2="{h - bottom}" '
                     f'stroke="#eceef2"/><text x="{x(v):.1f}" y="{h - bottom + 14}" '
                     f'text-anchor="middle">{v:.{xdec}f}</text>')
    for v in yt:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     f'stroke="#eceef2"/><text x="{left - 5}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end">{v:.{ydec}f}</text>')
    parts.append(f'<text x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle">'
                 f'{escape(xlabel)}</text><text transform="translate(11,{(top + h - bottom) / 2})'
                 f' rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
    return parts, x, y


def speed_quality_svg(results: Sequence[Result]) -> str:
    """Scatter of a test's profiles: x speedup, y SSIM vs the baseline profile, marker area
    proportional to peak memory; the baseline profile itself sits at (1, 1), hollow."""
    points: list[tuple[str, float, float, float, str]] = []
    reference: dict[str, float] = {}
    for r in results:
        quality = r.get("quality") or {}
        if r.get("speedup") is not None and quality.get("ssim_mean") is not None:
            points.append((result_name(r), float(r["speedup"]), float(quality["ssim_mean"]), peak_gib(r),
                           verdict_of(r)))
        base = r.get("baseline")
        if base is not None:
            reference[base["profile"]] = float(base["memory"]["peak_bytes"]) / 2**30
        elif r.get("speedup") is None:
            reference[r["profile"]] = peak_gib(r)
    if not points:
        return ""
    w, h, margins = 520, 300, (62, 110, 12, 36)
    xd = _domain([p[1] for p in points], 1.0)
    yd = _domain([p[2] for p in points], 1.0)
    parts, x, y = _axes(w, h, margins, xd, yd, "speedup vs baseline profile (x)",
                        "SSIM vs baseline profile", inner=20)
    parts.append(f'<line x1="{x(1.0):.1f}" x2="{x(1.0):.1f}" y1="{margins[2]}" '
                 f'y2="{h - margins[3]}" stroke="#8a93a3" stroke-dasharray="4 3"/>')
    biggest = max([p[3] for p in points] + list(reference.values())) or 1.0

    def radius(gib: float) -> float:
        return 4.0 + 14.0 * math.sqrt(max(gib, 0.0) / biggest)

    for name, gib in sorted(reference.items()):
        parts.append(f'<circle cx="{x(1.0):.1f}" cy="{y(1.0):.1f}" r="{radius(gib):.1f}" '
                     f'fill="none" stroke="#39404f" stroke-width="1.5"><title>{escape(name)} '
                     f'(baseline profile): 1.00x, SSIM 1, {gib:.3f} GiB</title></circle>'
                     f'<text x="{x(1.0) + radius(gib) + 3:.1f}" y="{y(1.0) - 4:.1f}">'
                     f'{escape(name)}</text>')
    for name, sx, sy, gib, verdict in points:
        color = {"pass": "#1e8e3e", "inconclusive": "#b8860b"}.get(verdict, "#d93025")
        parts.append(f'<circle cx="{x(sx):.1f}" cy="{y(sy):.1f}" r="{radius(gib):.1f}" '
                     f'fill="{color}" fill-opacity="0.55" stroke="{color}"><title>'
                     f'{escape(name)}: {sx:.2f}x, SSIM {sy:.5f}, {gib:.3f} GiB, {verdict}'
                     f'</title></circle><text x="{x(sx) + radius(gib) + 3:.1f}" '
                     f'y="{y(sy) + 4:.1f}">{escape(name)}</text>')
    legend = ('<div class="legend"><span style="color:#1e8e3e">●</span> pass '
              '<span style="color:#d93025">●</span> fail ○ baseline profile · marker area ~ '
              f'peak memory (largest {biggest:.3g} GiB) · dashed: no speedup</div>')
    return (f'<figure class="chart"><svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'role="img" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
            f'{legend}</figure>')


def ssim_curve_svg(per_frame: Sequence[float], shown: Sequence[int] = (),
                   worst: int | None = None) -> str:
    """Per-frame SSIM of a video as a line; shown frames ticked, the worst one in red."""
    if len(per_frame) < 2:
        return ""
    w, h, margins = 440, 170, (70, 14, 10, 32)
    xd = (0.0, float(len(per_frame) - 1))
    yd = _domain(per_frame, max(per_frame))
    parts, x, y = _axes(w, h, margins, xd, yd, "frame", "SSIM", inner=6)
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(per_frame))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#3367d6" stroke-width="1.6"/>')
    for i in shown:
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(per_frame[i]):.1f}" r="3" '
                     f'fill="#3367d6"><title>frame {i}: {per_frame[i]:.5f}</title></circle>')
    if worst is not None and 0 <= worst < len(per_frame):
        parts.append(f'<circle cx="{x(worst):.1f}" cy="{y(per_frame[worst]):.1f}" r="4.5" '
                     f'fill="#d93025"><title>worst frame {worst}: {per_frame[worst]:.5f}'
                     '</title></circle>')
    return (f'<figure class="chart"><svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'role="img" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg><div '
            'class="legend">per-frame SSIM vs the baseline profile; dots: frames shown above,'
            ' red: worst frame</div></figure>')


# -- HTML pieces ------------------------------------------------------------------------------
