"""The self-contained HTML report (``--omni-report-html=PATH``).

One page, no network: inline CSS, charts as inline SVG, images as ``data:`` URIs read from
the thumbnails the measuring processes wrote (see :mod:`pytest_omni_perf.report.images`).
Per test and request: a speed-vs-quality chart over its profiles (x speedup, y SSIM against
the baseline profile, marker area ~ peak memory), then per profile the numbers, bounds,
violations (in red) and the baseline / output / SSIM diff images side by side; a video gets
a strip of frames per row and its per-frame SSIM curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_omni_perf.report import html_parity
from pytest_omni_perf.report.trend import trend_html
from pytest_omni_perf.escape import html_text as escape
from pytest_omni_perf.escape import json_document
from pytest_omni_perf.report.html_loads import cases_html, loads_html
from pytest_omni_perf.report.html_support import support_html
from pytest_omni_perf.report.images import read_data_uris
from pytest_omni_perf.atomic_files import write_atomic
from pytest_omni_perf.report.html_charts import (
    base_id, fmt, peak_gib, result_name, verdict_of, speed_quality_svg, ssim_curve_svg,
)

Result = Mapping[str, Any]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px} header p{margin:2px 0;color:#c9cfdb}
main{padding:8px 28px 40px;max-width:1400px}
h2{margin:26px 0 10px;font-size:18px} h3{margin:0 0 10px;font-size:16px;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.pass{background:#d6f5dd;color:#11632a} .fail{background:#fbd9d7;color:#a3120b}
.inconclusive{background:#fdefc3;color:#7a5300}
.neutral{background:#e3e6ec;color:#39404f}
table{border-collapse:collapse;background:#fff} td,th{padding:4px 10px;text-align:left;
 border-bottom:1px solid #e3e6ec;vertical-align:top} th{background:#eceef2;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{color:#a3120b} td.bad,span.bad{color:#a3120b;font-weight:600}
section.test{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:16px;margin:18px 0}
article{border-top:1px solid #e3e6ec;margin-top:16px;padding:14px 0 4px 12px;
 border-left:4px solid #1e8e3e}
article.v-fail{border-left-color:#d93025;background:#fff7f6}
article h4{margin:0 0 8px;font-size:15px}
.cols{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.facts{background:none} .facts td{border:none;padding:1px 10px 1px 0}
.facts td:first-child{color:#5b6475}
.pics{display:flex;gap:14px;flex-wrap:wrap} figure{margin:0;text-align:center}
figure img{width:220px;height:auto;border:1px solid #cfd4dc;background:#fff;display:block}
figcaption{font-size:12px;color:#5b6475;margin-top:3px;max-width:220px}
.strip{display:flex;gap:6px;align-items:flex-end;margin-bottom:6px}
.strip .lab{width:96px;font-size:12px;color:#5b6475;text-align:right;align-self:center}
.strip img{width:120px} .strip figcaption{max-width:120px} img.px{image-rendering:pixelated}
ul.viol{color:#a3120b;margin:8px 0;padding-left:18px} ul.notes{color:#5b6475;margin:6px 0;
 padding-left:18px} .missing{color:#a3120b;font-size:12px}
details{margin-top:8px} pre{white-space:pre-wrap;font-size:12px;background:#f4f5f7;padding:8px}
svg text{font:11px system-ui,sans-serif;fill:#39404f}
.legend{font-size:12px;color:#5b6475;max-width:520px} figure.chart{text-align:left}
"""


def _summary_table(results: Sequence[Result]) -> str:
    rows = []
    for i, r in enumerate(results):
        m = r["measurement"]
        q = r.get("quality") or {}
        v = verdict_of(r)
        rows.append(
            f'<tr class="{"bad" if v != "pass" else ""}"><td><a href="#r{i}">'
            f'{escape(r["nodeid"])}</a></td><td>{escape(result_name(r))}</td>'
            f'<td class="num">{fmt(m["latency"]["median"], ".4f", " s")}</td>'
            f'<td class="num">{fmt(m.get("cold_start_s"), ".2f", " s")}</td>'
            f'<td class="num">{fmt(r.get("speedup"), ".2f", "x")}</td>'
            f'<td class="num">{fmt(peak_gib(r), ".3f", " GiB")} {escape(m["memory"]["kind"])}</td>'
            f'<td class="num">{fmt(q.get("ssim_mean"), ".5f")}</td>'
            f'<td><span class="badge {escape(v)}">{escape(v)}</span> '
            f'<span class="badge neutral">{escape(str(r.get("outcome", "?")))}</span></td></tr>')
    return ('<table><tr><th>test</th><th>profile</th><th>median</th><th>cold start</th>'
            '<th>speedup</th><th>peak memory</th><th>SSIM</th><th>verdict / outcome</th></tr>'
            + "".join(rows) + "</table>")


def _bound(op: str, value: Any, suffix: str = "") -> str:
    return "" if value is None else f"; bound {op} {value:g}{suffix}"


def _quality_text(q: Mapping[str, Any]) -> str:
    if not q:
        return "-"
    if q.get("not_applicable"):
        psnr = "" if not q.get("comparable", True) else ", PSNR " + (
            fmt(q["psnr_mean"], ".2f", " dB") if q.get("psnr_mean") is not None else "inf")
        return f'not applicable: {escape(str(q["not_applicable"]))}{psnr}'
    frames = len(q.get("per_frame_ssim") or [])
    worst = f', worst {fmt(q.get("ssim_min"), ".5f")} (frame {q.get("worst_frame")})' \
        if frames > 1 else ""
    return f'mean {fmt(q.get("ssim_mean"), ".5f")}{worst}, PSNR ' \
           f'{fmt(q.get("psnr_mean"), ".2f", " dB") if q.get("psnr_mean") is not None else "inf"}'


def _interval(interval: Mapping[str, Any] | None, point: float | None) -> str:
    """``1.234x [1.180, 1.301] (99% CI, 15 rounds)`` from a serialized RatioInterval."""
    if not interval:
        return fmt(point, ".3f", "x")
    text = f'{interval["estimate"]:.3f}x'
    if interval["rounds"] >= 5 and interval["low"] != interval["high"]:
        text += (f' [{interval["low"]:.3f}, {interval["high"]:.3f}] '
                 f'({interval["confidence"]:.0%} CI, {interval["rounds"]} rounds)')
    return text


def _facts(r: Result) -> str:
    m, b = r["measurement"], r.get("bounds") or {}
    lat = m["latency"]
    memory = m["memory"]
    memory_label = escape(memory.get("label") or (
        "VRAM (NVML)" if memory["kind"] == "nvml" else "peak RSS (CPU run, no VRAM)"))
    base = r.get("baseline")
    reg = r.get("latency_ratio")
    req = m.get("request") or {}
    cold = ("engine reused (started by an earlier test)" if m.get("engine_reused") else
            f'{fmt(m.get("cold_start_s"), ".2f", " s")} (start {fmt(m.get("start_s"), ".2f")}'
            f' s + first request {fmt(m.get("first_request_s"), ".2f")} s)')
    if base is None:
        speed = "reference profile (it is the baseline of others)"
        ssim = "-"
    else:
        speed = (f'{_interval(r.get("speedup_interval"), r.get("speedup"))} against '
                 f'{escape(base["profile"])} (its median '
                 f'{fmt(base["latency"]["median"], ".4f", " s")})'
                 + _bound("≥", b.get("min_speedup")))
        ssim = _quality_text(r.get("quality") or {}) + _bound("≥", b.get("min_ssim"))
    ratio = r.get("memory_ratio")
    rows = [
        ("warm latency", f'estimate {fmt(lat.get("estimate"), ".4f", " s")} (Harrell-Davis 20% quantile, '
         f'what gates compare), median {fmt(lat["median"], ".4f")}, p90 {fmt(lat["p90"], ".4f")}'
         f', p99 {fmt(lat.get("p99"), ".4f")}'
         f', mean {fmt(lat["mean"], ".4f")} ± {fmt(lat["stdev"], ".4f")}, min '
         f'{fmt(lat["min"], ".4f")}, max {fmt(lat["max"], ".4f")}, n={lat["n"]}', ()),
        ("engine latency", f'median {fmt(m["engine_latency"]["median"], ".4f", " s")}', ()),
        ("cold start", cold, ()),
        ("speedup", speed, ("speedup",)),
        ("SSIM vs baseline profile", ssim, ("ssim",)),
        ("SSIM vs stored image", _quality_text(r.get("stored_quality") or {}) + (
            _bound("≥", b.get("min_ssim")) if r.get("stored_quality") else ""),
         ("stored_ssim", "baseline")),
        ("latency vs stored", "-" if not reg else
         f'{_interval(reg, None)} the stored run\'s'
         + _bound("≤", None if b.get("max_regression") is None else 1 + b["max_regression"],
                  "x") + _warning_only(r, "latency_regression"), ("latency_regression",)),
        ("peak memory", f'{peak_gib(r):.3f} GiB {memory_label}'
         + ("" if ratio is None else f', {ratio:.2f}x the baseline profile\'s')
         + _bound("≤", b.get("max_vram_gib"), " GiB")
         + _bound("≤", b.get("max_vram_ratio"), "x"),
         ("vram", "vram_ratio", "vram_regression")),
        *html_parity.rows(r),
        ("host conditions", _interference_text(m.get("interference")), ()),
        ("request", escape(f'{req.get("width")}x{req.get("height")}, '
                           f'{req.get("num_inference_steps")} steps, '
                           f'{req.get("num_frames") or 1} frame(s), seed {req.get("seed")}'
                           + _inputs_text(req)), ()),
    ]
    failed = {v["metric"] for v in r.get("violations") or []}
    body = "".join(
        f'<tr><td>{name}</td><td class="{"bad" if failed.intersection(metrics) else ""}">'
        f"{value}</td></tr>" for name, value, metrics in rows)
    return f'<table class="facts">{body}</table>'


def _warning_only(r: Result, metric: str) -> str:
    """Why a regression of ``metric`` only warns (the gate's own note says), or ''."""
    prefix = f"{metric} (warning only"
    for note in r.get("notes") or []:
        if note.startswith(prefix):
            why = note[len(prefix):].split(")", 1)[0].lstrip(": ") or "see the notes"
            return f'<br><span class="neutral">a warning only, the test does not fail: ' \
                   f"{escape(why)}</span>"
    return ""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _interference_text(found: Mapping[str, Any] | None) -> str:
    """The measurement's interference summary (issue 16), or "-" when none was recorded."""
    if not found or not found.get("summary"):
        return "-"
    rounds = len(found.get("rounds") or [])
    return (f'<span class="{"bad" if found.get("notable") else ""}">'
            f'{escape(str(found["summary"]))}</span> ({found.get("noisy_rounds", 0)} of '
            f'{rounds} rounds noisy)')


def _inputs_text(req: Result) -> str:
    """``, 2 input image(s), strength 0.6``: the request's conditioning inputs, if any."""
    parts = [f"{len(req[key])} {name}" for key, name in
             (("images", "input image(s)"), ("video", "input video frame(s)")) if req.get(key)]
    parts += ["a mask"] if req.get("mask") else []
    parts += [f"strength {req['strength']}"] if req.get("strength") is not None else []
    return "".join(f", {part}" for part in parts)


def _figure(uri: str | None, caption: str, small: bool) -> str:
    if uri is None:
        return f'<figure><div class="missing">image missing</div><figcaption>{caption}' \
               "</figcaption></figure>"
    return (f'<figure><img class="{"px" if small else ""}" src="{uri}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _images(r: Result, report_dir: Path) -> str:
    images = r.get("images")
    if not images:
        return ""
    shape = r["measurement"].get("output_shape") or [0, 0]
    small = max(shape[:2]) < 200  # tiny outputs are enlarged: keep their pixels sharp
    frames = list(images.get("frames") or [])
    base = r.get("baseline")
    base_name = escape(base["profile"]) if base else "baseline"
    quality = r.get("quality") or {}
    same = quality.get("ssim_min") == 1.0
    rows = [("output", f"output ({escape(result_name(r))})"),
            ("baseline", f"baseline profile ({base_name})"),
            ("diff", "1 − SSIM heat map, " + ("identical: all dark" if same else
                                               "bright = most different, scaled per image"))]
    uris = {kind: read_data_uris(images.get(kind) or [], report_dir) for kind, _ in rows}
    error = f'<div class="missing">{escape(images["error"])}</div>' if images.get("error") else ""
    per_frame = quality.get("per_frame_ssim") or []
    inputs = "".join(
        _figure(uri, escape(caption), small) for uri, caption in zip(
            read_data_uris(images.get("input") or [], report_dir),
            images.get("input_captions") or []))
    if inputs:
        inputs = f'<div class="strip"><div class="lab">request inputs</div>{inputs}</div>'
    if len(frames) <= 1 and int(r["measurement"].get("output_frames") or 1) <= 1:
        figs = [_figure(uris[k][0], label, small) for k, label in
                (rows[1], rows[0], rows[2]) if uris[k]]
        return f'{inputs}<div class="pics">{"".join(figs)}</div>{error}'
    strips = []
    for kind, label in (rows[1], rows[0], rows[2]):
        if not uris[kind]:
            continue
        figs = []
        for index, uri in zip(frames, uris[kind]):
            score = f", SSIM {per_frame[index]:.4f}" if index < len(per_frame) else ""
            figs.append(_figure(uri, f"frame {index}{score if kind == 'diff' else ''}", small))
        strips.append(f'<div class="strip"><div class="lab">{label}</div>{"".join(figs)}</div>')
    return inputs + "".join(strips) + error


def _curve(r: Result) -> str:
    quality = r.get("quality") or {}
    shown = (r.get("images") or {}).get("frames") or []
    return ssim_curve_svg(quality.get("per_frame_ssim") or [], shown, quality.get("worst_frame"))


def _article(i: int, r: Result, report_dir: Path) -> str:
    v = verdict_of(r)
    violations = "".join(f"<li><b>{escape(x['metric'])}</b>: {escape(x['message'])}</li>"
                         for x in r.get("violations") or [])
    notes = "".join(f"<li>{escape(n)}</li>" for n in r.get("notes") or [])
    undecided = "".join(f"<li><b>inconclusive {escape(u['metric'])}</b>: "
                        f"{escape(u['message'])}</li>" for u in r.get("undecided") or [])
    details = json_document({k: r.get(k) for k in ("bounds", "fingerprint")} | {
        "applied": r["measurement"].get("applied"),
        "engine_metrics": r["measurement"].get("engine_metrics"),
        "stored_path": r.get("stored_path")}, indent=1)
    return (
        f'<article id="r{i}" class="v-{escape(v)}"><h4>{escape(result_name(r))} '
        f'<span class="badge {escape(v)}">{escape(v)}</span> <span class="badge neutral">'
        f'pytest: {escape(str(r.get("outcome", "?")))}</span></h4>'
        + (f'<ul class="viol">{violations}</ul>' if violations else "")
        + (f'<ul class="undecided">{undecided}</ul>' if undecided else "")
        + f'<div class="cols"><div>{_facts(r)}'
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + f'</div><div>{_images(r, report_dir)}{_curve(r)}{trend_html(r)}</div></div>'
        f"<details><summary>bounds, fingerprint, applied options</summary><pre>"
        f"{escape(details)}</pre></details></article>")


def render_html(document: Mapping[str, Any], report_dir: Path) -> str:
    """The page for a JSON-report document; thumbnails are read relative to ``report_dir``."""
    results: list[Result] = list(document.get("results") or [])
    totals = document.get("totals") or {}
    groups: dict[str, list[tuple[int, Result]]] = {}
    for i, r in enumerate(results):
        groups.setdefault(base_id(r), []).append((i, r))
    sections = []
    for title, members in groups.items():
        verdicts = {verdict_of(r) for _, r in members}
        badge = "fail" if "fail" in verdicts else \
            "inconclusive" if "inconclusive" in verdicts else "pass"
        chart = speed_quality_svg([r for _, r in members]) or (
            '<p class="neutral">no speedup/SSIM pairs to chart (reference profiles only)</p>')
        sections.append(
            f'<section class="test"><h3>{escape(title)} <span class="badge '
            f'{badge}">{badge}</span></h3>'
            f'{chart}'
            + "".join(_article(i, r, report_dir) for i, r in members) + "</section>")
    hardware = document.get("hardware") or {}
    backend = document.get("backend") or {}
    run = document.get("run") or {}
    session = document.get("session") or {}
    models = list(dict.fromkeys(str(r["measurement"].get("model", "?")) for r in results)) \
        or [str(run.get("model", "?"))]
    head = (f'<p>{escape(str(document.get("created", "")))} · pytest-omni-perf '
            f'{escape(str(document.get("pytest_omni_perf", "")))} · backend '
            f'{escape(str(backend.get("name", "?")))} ({escape(str(backend.get("why", "")))})</p>'
            f'<p>{_plural(len(models), "model")} {escape(", ".join(models))} · first look after '
            f'{run.get("rounds", "?")} rounds, after {run.get("warmup", "?")} warmup · '
            'engine starts '
            f'{session.get("engine_starts", "?")} · '
            f'{escape(str(hardware.get("summary", "")))}</p>')
    verdict = "fail" if totals.get("failed") else \
        "inconclusive" if totals.get("inconclusive") else "pass"
    # Counted as the terminal's suite cost line counts: test functions x profiles.
    functions = len({str(r["nodeid"]).split("[")[0] for r in results})
    profiles = len({str(r["profile"]) for r in results})
    tally = (f'<p><span class="badge {verdict}">{totals.get("passed", 0)} passed, '
             f'{totals.get("failed", 0)} failed, {totals.get("inconclusive", 0)} '
             f'inconclusive</span> of '
             f'{_plural(int(totals.get("results", 0)), "result")}: '
             f'{_plural(functions, "test")} x {_plural(profiles, "profile")}; '
             f'{_plural(int(totals.get("violations", 0)), "violation")}</p>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pytest-omni-perf report</title><style>{_CSS}</style></head><body>"
        f"<header><h1>pytest-omni-perf report</h1>{head}</header><main>{tally}"
        f"<h2>Summary</h2>{_summary_table(results)}{support_html(document)}"
        f"{loads_html(document.get('loads') or [])}"
        f"{cases_html(document.get('cases') or [])}"
        f"<h2>Tests</h2>{''.join(sections)}"
        "</main></body></html>\n")


def write_html(path: Path, document: Mapping[str, Any]) -> None:
    """Render ``document`` and write it to ``path`` atomically."""
    write_atomic(path, render_html(document, path.parent))
