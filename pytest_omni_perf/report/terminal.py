"""The terminal summary table: one row per test, profile and request.

Each column is a (header, cell) pair in ``COLUMNS``; ``summary_row`` builds a row from one
serialized result, so a new column (a confidence interval, an outcome) is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_omni_perf.escape import terminal_text
from pytest_omni_perf.support import ran_on_gpu

Result = Mapping[str, Any]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _on_gpus(results: Sequence[Result]) -> bool:
    """Whether any result of the run was measured on a GPU (the table then shows a GPU
    column)."""
    return any(ran_on_gpu(r) for r in results)


def _devices(measurement: Mapping[str, Any]) -> str:
    return ",".join(map(str, measurement.get("devices") or ())) or "-"


def _profile(result: Result) -> str:
    return terminal_text(str(result["profile"])
                         + (f"@{result['label']}" if result.get("label") else ""))


def _estimate(latency: Mapping[str, Any]) -> float | None:
    """The robust estimate the gates compare (the median for results without one)."""
    value = latency.get("estimate")
    return latency.get("median") if value is None else value


def _reference(result: Result) -> str:
    """What the speedup is against: the baseline profile measured beside this one."""
    base = result.get("baseline")
    if not base:
        return "-"
    return f"{base['profile']} {_fmt(_estimate(base['latency']), '.3f', ' s')}"


def _speedup(result: Result) -> str:
    """``1.42x [1.31-1.50]``: the estimate and its interval, where there is one."""
    interval = result.get("speedup_interval")
    if not interval or interval.get("rounds", 0) < 5 or interval["low"] == interval["high"]:
        return _fmt(result.get("speedup"), ".2f", "x")
    return f'{interval["estimate"]:.2f}x [{interval["low"]:.2f}-{interval["high"]:.2f}]'


_VERDICT_WORDS = {"pass": "ok", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


def _verdict(result: Result) -> str:
    return _VERDICT_WORDS.get(str(result.get("verdict")),
                              "FAIL" if result["violations"] else "ok")


def _ssim(result: Result) -> str:
    quality = result.get("quality") or {}
    return "n/a" if quality.get("not_applicable") else _fmt(quality.get("ssim_mean"), ".4f")


def psnr_text(quality: Mapping[str, Any]) -> str:
    """``34.12 dB``, ``inf (identical)`` or ``-``; JSON reports carry an infinite PSNR as
    null beside ``identical``, results in this process as ``inf``."""
    value = quality.get("psnr_mean")
    if quality.get("identical") or value == float("inf"):
        return "inf (identical)"
    return _fmt(value, ".2f", " dB")


def _pixels(result: Result) -> str:
    """PSNR against the baseline profile's output, then the mean and p99 |difference|."""
    quality = result.get("quality") or {}
    if not quality.get("comparable", bool(quality)):
        return "-"
    return (f"{psnr_text(quality)}, |d| {_fmt(quality.get('mean_abs_diff'), '.2f')}/"
            f"{_fmt(quality.get('p99_abs_diff'), '.0f')}")


def _parity(result: Result) -> str:
    """``diffusers 1.02x [0.98-1.05], SSIM 1.0000, PSNR inf (identical)``: latency here over
    the parity backend's, and how its output compares."""
    parity = result.get("parity")
    if not parity:
        return "-"
    ratio = parity.get("latency_ratio") or {}
    latency = "-" if not ratio else (
        f'{ratio["estimate"]:.2f}x' if ratio.get("rounds", 0) < 5 else
        f'{ratio["estimate"]:.2f}x [{ratio["low"]:.2f}-{ratio["high"]:.2f}]')
    quality = parity.get("quality") or {}
    ssim = "n/a" if quality.get("not_applicable") else _fmt(quality.get("ssim_mean"), ".4f")
    return terminal_text(f'{parity["backend"]} {latency}, SSIM {ssim}, PSNR '
                         f'{psnr_text(quality)}')


def _trend(result: Result) -> str:
    from pytest_omni_perf.report.trend import marker

    return marker(result.get("history"))


def _memory(result: Result) -> str:
    memory = result["measurement"]["memory"]
    unit = {"nvml": "GiB", "engine": "GiB alloc", "none": "GiB (not measured)"}.get(
        memory["kind"], "GiB RSS")
    return _fmt(memory["peak_bytes"] / 2**30, ".2f", f" {unit}")


def _gpus(result: Result) -> str:
    where = _devices(result["measurement"])
    if result.get("baseline") is not None:
        where += f" (base {_devices(result['baseline'])})"
    return where


Column = tuple[str, Callable[[Result], str]]
COLUMNS: list[Column] = [
    ("test", lambda r: terminal_text(str(r["nodeid"]).split("[")[0])),
    ("profile", _profile),
    ("estimate", lambda r: _fmt(_estimate(r["measurement"]["latency"]), ".3f", " s")),
    ("median", lambda r: _fmt(r["measurement"]["latency"]["median"], ".3f", " s")),
    ("speedup [95% CI]", _speedup),
    ("vs (estimate)", _reference),
    ("rounds", lambda r: str(r["measurement"]["latency"]["n"])),
    ("cold", lambda r: _fmt(r["measurement"].get("cold_start_s"), ".1f", " s")),
    ("peak mem", _memory),
    ("SSIM", _ssim),
    ("verdict", _verdict),
]
GPU_COLUMN: Column = ("GPUs", _gpus)
"""Shown after ``profile`` when any result ran on a GPU: the profile's physical GPU
indices, then the baseline's."""


PIXEL_COLUMN: Column = ("PSNR, |d| mean/p99", _pixels)
"""Shown after SSIM when a result has a PSNR or pixel-difference bound."""
PARITY_COLUMN: Column = ("parity: latency ratio [95% CI], quality", _parity)
"""Shown before the verdict when a result compared with another backend (parity)."""
_PIXEL_BOUNDS = ("min_psnr", "max_mean_abs_diff", "max_p99_abs_diff")

TREND_COLUMN: Column = ("trend (last 8 runs)", _trend)
"""Shown last when the run history is kept: a sparkline of the recent estimates."""


def columns(results: Sequence[Result]) -> list[Column]:
    """The columns of this run's table."""
    cols = [*COLUMNS[:2], GPU_COLUMN, *COLUMNS[2:]] if _on_gpus(results) else list(COLUMNS)
    if any((r.get("bounds") or {}).get(b) is not None for r in results for b in _PIXEL_BOUNDS):
        cols.insert(len(cols) - 1, PIXEL_COLUMN)
    if any(r.get("parity") for r in results):
        cols.insert(len(cols) - 1, PARITY_COLUMN)
    if any(r.get("history") for r in results):
        cols.append(TREND_COLUMN)
    return cols


def summary_row(result: Result, cols: Sequence[Column]) -> list[str]:
    """One row of the table from a serialized result (as reports carry it)."""
    return [cell(result) for _, cell in cols]


def summary_rows(results: Sequence[Result]) -> list[list[str]]:
    """Rows of the table from serialized results."""
    cols = columns(results)
    return [summary_row(r, cols) for r in results]


def models(results: Sequence[Result]) -> list[str]:
    """Every model measured in the run, in first-seen order."""
    return list(dict.fromkeys(str(r["measurement"].get("model", "?")) for r in results))


def write_summary(terminalreporter: Any, results: Sequence[Result]) -> None:
    """Write the table, then each violation and note in full."""
    cols = columns(results)
    header = [name for name, _ in cols]
    rows = [summary_row(r, cols) for r in results]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    names = models(results)
    terminalreporter.write_sep("=", "omni-perf summary")
    terminalreporter.write_line(
        f"model{'s' if len(names) > 1 else ''}: {terminal_text(', '.join(names))}; "
        "estimate = Harrell-Davis "
        "20% quantile of the rounds (what gates compare); speedup = estimate of the profile "
        "under 'vs' (measured beside it) / estimate, with its 95% bootstrap interval")
    for row in [header, *rows]:
        terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for result in results:
        for note in result.get("notes", []):
            terminalreporter.write_line(terminal_text(
                f"note [{result['profile']}] {result['nodeid']}: {note}"))
    for line in interference_lines(results):
        terminalreporter.write_line(line)
    # The start-up breakdown is for whoever asks with -v: most runs want the table alone.
    if getattr(terminalreporter, "verbosity", 0) > 0:
        for line in startup_lines(results):
            terminalreporter.write_line(line)


_PHASE_WORDS = (("interpreter_s", "interpreter"), ("imports_s", "imports"),
                ("load_s", "load"), ("apply_s", "apply"), ("compile_s", "compile"),
                ("other_s", "other"))


def startup_line(measured: Mapping[str, Any]) -> str | None:
    """``start 3.41 s = interpreter 0.35 + imports 2.40 + load 0.52 + apply 0.01 + other
    0.13; first request 0.80 s (compile inside it)``: where one engine start went ("?" for a
    phase the engine cannot see); None when it reported no phase."""
    phases = measured.get("startup") or {}
    if not any(phases.get(key) is not None for key, _ in _PHASE_WORDS[:5]):
        return None
    parts = [f"{word} {'?' if phases.get(key) is None else format(phases[key], '.2f')}"
             for key, word in _PHASE_WORDS if key != "compile_s" or phases.get(key) is not None]
    compiled = {"first_request": " (compile inside it)", "none": " (no compile)"}.get(
        str(phases.get("compile")), "")
    return (f"start {_fmt(measured.get('start_s'), '.2f', ' s')} = {' + '.join(parts)}; "
            f"first request {_fmt(phases.get('first_request_s'), '.2f', ' s')}{compiled}")


def startup_lines(results: Sequence[Result]) -> list[str]:
    """One line per engine start of the run (``-v``), e.g. ``startup [eager]
    t.py::test_x: start 3.41 s = interpreter 0.35 + ...``; a reused engine's start is shown
    once, with the test that started it."""
    lines = []
    for result in results:
        for key in ("measurement", "baseline"):
            measured = result.get(key) or {}
            if measured.get("engine_reused") or (line := startup_line(measured)) is None:
                continue
            text = terminal_text(f"startup [{measured.get('profile', '?')}] "
                                 f"{result['nodeid']}: {line}")
            if text not in lines:
                lines.append(text)
    return lines


def interference_lines(results: Sequence[Result]) -> list[str]:
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
            line = terminal_text(f"interference [{measured.get('profile', '?')}"
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


def profile_facts(profiles: Mapping[str, Any]) -> Callable[[str], Any]:
    """Lossy flag and GPU count of each known profile, for ``recommend.recommend``."""
    from pytest_omni_perf.recommend import ProfileFacts

    def facts(name: str) -> ProfileFacts | None:
        profile = profiles.get(name)
        if profile is None:
            return None
        return ProfileFacts(lossy=profile.lossy, gpus=max(1, profile.requires.gpus))
    return facts


def write_recommendations(terminalreporter: Any, results: Sequence[Result],
                          profiles: Mapping[str, Any], ssim_budget: float) -> None:
    """The guide's flowchart answered from this run: the best profile per budget, each with
    its numbers and interval (``recommend.recommend``)."""
    from pytest_omni_perf.recommend import recommend, recommendation_lines

    lines = recommendation_lines(recommend(results, profile_facts(profiles), ssim_budget))
    if not lines:
        return
    terminalreporter.write_sep("-", "omni-perf recommendation (speedup intervals wholly "
                               "above 1 only)")
    for line in lines:
        terminalreporter.write_line(terminal_text(line))
