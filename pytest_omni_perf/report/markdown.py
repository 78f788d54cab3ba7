"""The Markdown support table (``--omni-report-markdown=PATH``).

Per model, first a row in the layout of vLLM-Omni's own support tables
(docs/user_guide/diffusion/parallelism_acceleration.md: a ``### ImageGen`` / ``### VideoGen``
heading, columns ``Model | Model Identifier | <method> ...`` with the marks centred, the
model's name in bold), one column per method of the guide; then one line per method with
what was measured (speedup and its interval, peak memory ratio, SSIM, cold start) or why it
was not. Every string from the run goes through ``escape.markdown_cell``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from pytest_omni_perf.escape import markdown_cell
from pytest_omni_perf.support import (
    NOT_MEASURED, NOT_RUNNABLE, SUPPORTED, UNSUPPORTED, Entry, model_of, models,
    support_row,
)

MARKS = {SUPPORTED: "✅", UNSUPPORTED: "❌", NOT_RUNNABLE: "⚠️", NOT_MEASURED: ""}
LEGEND = ("✅ measured (numbers below) · ❌ unsupported by the model · ⚠️ not runnable here "
          "(hardware or backend) · blank: not measured in this run")
DETAIL_COLUMNS = ("Method", "Profile", "Status", "Request", "Speedup [CI]", "Peak memory",
                  "SSIM", "Cold start", "Verdict or reason")


def _kind(model: str, results: Sequence[Mapping[str, Any]]) -> str:
    """``video`` when a request of this model asked for frames, else ``image``."""
    for result in results:
        request = (result.get("measurement") or {}).get("request") or {}
        if model_of(result) == model and request.get("num_frames") is not None:
            return "video"
    return "image"


def _name(model: str) -> str:
    """The model's short name: a folder's or hub id's last part, a built-in's own."""
    return PurePath(model.rstrip("/")).name or model


def column_name(column: str, kind: str) -> str:
    """vLLM-Omni calls the ring column Ring-SP for images and Ring-Attention for video."""
    return "Ring-Attention" if column == "Ring-SP" and kind == "video" else column


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def marks_table(model: str, kind: str, entries: Sequence[Entry]) -> list[str]:
    """The vLLM-Omni-layout header, alignment line and this model's row."""
    header = ["Model", "Model Identifier",
              *(column_name(e.method.column, kind) for e in entries)]
    align = ["---", "---", *(":---:" for _ in entries)]
    row = [f"**{markdown_cell(_name(model))}**", markdown_cell(model),
           *(MARKS[e.status] for e in entries)]
    return [_row(header), _row(align), _row(row)]


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def detail_lines(entries: Sequence[Entry]) -> list[str]:
    """One line per method and measured request: the numbers, or the reason it has none."""
    lines = [_row(DETAIL_COLUMNS), _row(["---"] * len(DETAIL_COLUMNS))]
    for entry in entries:
        method, profile = markdown_cell(entry.method.column), markdown_cell(entry.method.profile)
        if entry.status != SUPPORTED:
            lines.append(_row([method, profile, entry.status, "-", "-", "-", "-", "-",
                               markdown_cell(entry.reason) or "-"]))
            continue
        for m in entry.measured:
            lines.append(_row([
                method, profile, entry.status, markdown_cell(m.label or "-"), m.speedup_text(),
                _number(m.memory_ratio, ".2f", "x"), _number(m.ssim, ".4f"),
                _number(m.cold_start_s, ".1f", " s"), markdown_cell(m.verdict or "-")]))
    return lines


def support_markdown(results: Sequence[Mapping[str, Any]], skips: Sequence[Mapping[str, Any]],
                     *, backend: str, hardware: str, loads: int = 0) -> str:
    """The whole Markdown page: one section per model of the run. ``loads``: how many load
    results (``--omni-cases`` items, ``omni_perf.load`` calls) the run had: no row here."""
    out = ["# Measured support table (pytest-omni-perf)", "",
           markdown_cell(f"Backend {backend}; {hardware}."), "", LEGEND, ""]
    if not models(results, skips):
        # A case-file run wrote a page of headings and no table: say why it is empty.
        out += ["No profile was measured or skipped by a test of this run, so the table has "
                "no rows" + (f"; its {loads} load result(s) are in the JSON and HTML "
                             "reports." if loads else "."), ""]
    for model in models(results, skips):
        entries = support_row(model, results, skips)
        kind = _kind(model, results)
        out += [f"### {'VideoGen' if kind == 'video' else 'ImageGen'}", "",
                *marks_table(model, kind, entries), "",
                "Speedup and peak memory are relative to each profile's baseline profile "
                "measured in the same session; SSIM is against its output.", "",
                *detail_lines(entries), ""]
    return "\n".join(out)
