"""The JSON report (``--omni-report-json=PATH``) and the flat JUnit properties.

One document per session, written atomically by the controller (never by xdist workers)
when the session ends. Strict JSON (RFC 8259): non-finite numbers, such as the infinite PSNR
of two identical images, are written as ``null``. Schema, version 1::

    schema_version    1; bumped when a field changes meaning or disappears (adding is not)
    created           ISO 8601 UTC time the report was written
    pytest_omni_perf  the plugin's version
    hardware          {summary: one line, key: baseline hardware key ("cpu" or the GPU
                      model), driver, cuda_driver, note, gpus: [{index, name, sm: [major,
                      minor], vram_gib, uuid}]}, as the controller probed it
    backend           {name: diffusers|omni|omni-server, why: how "auto" resolved}
    run               {model, profiles (as asked; [] = per-test default), rounds, warmup,
                      update_baselines, baseline_dir}
    session           {engine_starts, measurements, rounds_run, baseline_measured,
                      baseline_reused: totals over processes (see suite_cost.SuiteCost),
                      processes: {"main" or the xdist worker id: {the same counters, live:
                      [[model, profile, backend], ...]}}}
    results           one object per test x profile x request, in completion order:
      nodeid, profile, label ("" unless a test measures several requests), outcome (the
      pytest call outcome: passed|failed|skipped), verdict (pass|fail|inconclusive: the
      omni-perf gates; inconclusive = a gate's interval still straddled its bound at the
      round budget), undecided [{metric, message}] (those gates),
      bounds {min_speedup, min_ssim, min_psnr (dB), max_mean_abs_diff, max_p99_abs_diff (pixel
        values, 0-255), max_vram_gib, max_vram_ratio, max_regression, parity (a backend
        name or null), max_latency_ratio, ...},
      measurement {profile, model, backend, request {prompt, width, height,
        num_inference_steps, num_frames, seed, ...}, samples_s [warm latencies, s],
        latency {n, median, p90, mean, stdev, min, max, samples} (s, around each request),
        engine_latency (same keys, timed inside the engine), memory {kind: "nvml" (VRAM of
        the engine's processes) | "engine" (allocator peak the engine reported) | "rss" (CPU
        run) | "none" (not measured), peak_bytes, samples, label (how, or why not)}, start_s (engine
        start), first_request_s, cold_start_s (start + first request; null if unknown),
        engine_reused, applied {what the engine really applied}, engine_metrics,
        interleaved_with, engine_profile (the profile whose engine ran the rounds: another
        one's when their engine options are equal and they shared it), devices [physical GPU indices the engine ran on; [] on CPU],
        rounds (measured, adaptive), stopped_by (decided|max_rounds|max_seconds),
        interference {rounds [one per measured round: {duration_s, gpu_util_pct,
          sm_clock_mhz, clock_event_reasons [names], other_gpu_processes, host_cpu_busy_pct,
          others_cpu_cores, steal_pct, load_avg_1m}, null where not measurable], summary
          (plain words, "quiet" when nothing notable), noisy_rounds, notable} or null,
          see measure/interference.py,
        startup {interpreter_s (worker launch until its main runs), imports_s (torch,
          diffusers, the pipeline's modules), load_s (from_pretrained), apply_s (options,
          move to the device), compile_s (a compile step of its own), first_request_s,
          other_s (start_s less the four phases before it, when all are known), compile
          (none|first_request|separate: where the profile compiles; first_request = inside
          first_request_s)}: where the engine's start went, s; null for a phase the engine
          cannot see (vLLM-Omni: launch and imports only; a server: none), see
          engines/startup.py,
        output_shape [H, W, C], output_frames},
      baseline (the baseline profile's measurement, same keys; null for reference profiles),
      speedup (robust baseline latency / this profile's: Harrell-Davis 20% quantiles),
        quality {ssim_mean, ssim_min, psnr_mean (dB; null when infinite, see identical),
        per_frame_ssim [...], worst_frame, not_applicable (why a metric is null), comparable,
        mean_abs_diff and p99_abs_diff (|output - reference| over every channel sample, in
        pixel values 0-255: mean and 99th percentile), identical (every sample equal: the
        PSNR is infinite)} against the baseline profile's output (or null),
      stored_quality (same keys, against the stored baseline image; or null),
      speedup_interval and latency_ratio (against the stored run) {estimate, low, high,
      confidence, rounds}: percentile-bootstrap intervals of ratios of robust estimates,
      memory_ratio (peak / baseline profile's peak), stored_path,
      parity (omni_bounds(parity=...); else null) {backend, measurement (the same profile on
        that backend, same keys as measurement), beside_samples_s (this backend's latencies
        in the rounds alongside it), latency_ratio {estimate, low, high, confidence, rounds}
        (robust latency here / there), quality (same keys as quality: this output against
        that backend's)},
      violations [{metric, message}], notes [...], fingerprint {hardware_key, gpus, driver,
      cuda_driver, clocks, cpu, cpu_count, python, platform, versions},
      images (only with --omni-report-html) {frames, output, baseline, diff: [paths relative
        to the HTML report's folder], error?}
    totals            {results, tests (distinct node ids), passed, failed, inconclusive
                      (verdicts), violations (count), outcomes {passed: n, failed: n, ...}
                      (pytest's: an inconclusive verdict is a passed test under
                      --omni-inconclusive=warn, so outcomes.passed may exceed passed)}
    skipped           [{nodeid, profile, model, reason}]: perf tests that skipped
    loads             [{nodeid, profile, label, model, backend, num_prompts, request_rate,
                      request, outcome, verdict (pass|fail|inconclusive over its levels),
                      notes, levels [{concurrency, verdict, metrics {throughput_qps
                      (req/s), completed, failed, latency_mean, latency_median, latency_p50,
                      latency_p95, latency_p99 (s), peak_memory_mb_max, peak_memory_mb_mean
                      (MB)}, stage_durations_ms {stage: mean ms}, violations, undecided
                      (messages of inconclusive bounds), first_error, verdicts [BOUND],
                      host (the host's conditions in plain words; "" not recorded)}]}]:
                      one per omni_perf.load() call (load_runs.py)
      BOUND           {field (omni_bounds field or case baseline path), metric, direction
                      (max|min), limit, unit, outcome (pass|fail|inconclusive), value (point),
                      interval {metric, estimate, low, high (null: an open end), confidence,
                      requests (completed), method, needs {low, high: requests each end
                      needs}} or null (memory, judged as a point), message, needed (requests
                      that would decide an inconclusive bound; null: none would)}; see
                      cases/load_verdict.py and measure/load_stats.py
    cases             [{nodeid, file, row, entry, concurrency, model, outcome, verdict,
                      measured (the metrics of loads' levels), bounds [field], verdicts
                      [BOUND], notes, host (as a load level's)}]: one per --omni-cases
                      item (case_items.py)
    support           {model: [{method (the table column), profile, guide (its section),
                      status ("supported" | "unsupported by the model" | "not runnable
                      here" | "not measured"), reason, measured [{label, nodeid, speedup,
                      low, high, confidence, memory_ratio, ssim, cold_start_s, verdict}]}]}
                      one entry per method of the guide (see support.py)
    recommendations   [{model, label, branch, profile (null: none qualifies), text}]: the
                      guide's decision flowchart answered from this run (recommend.py)
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.atomic_files import write_atomic
from pytest_omni_perf.escape import json_document, xml_text

if TYPE_CHECKING:
    import pytest

    from pytest_omni_perf.hardware import HardwareInfo
    from pytest_omni_perf.state import SessionState

SCHEMA_VERSION = 1


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def totals(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over the results: verdicts, violations, pytest outcomes, distinct tests."""
    verdicts = Counter(r.get("verdict", "pass" if not r.get("violations") else "fail")
                       for r in results)
    return {
        "results": len(results),
        "tests": len({r["nodeid"] for r in results}),
        "passed": verdicts.get("pass", 0),
        "failed": verdicts.get("fail", 0),
        "inconclusive": verdicts.get("inconclusive", 0),
        "violations": sum(len(r.get("violations") or []) for r in results),
        "outcomes": dict(sorted(Counter(str(r.get("outcome", "unknown"))
                                        for r in results).items())),
    }


def hardware_dict(hardware: HardwareInfo) -> dict[str, Any]:
    """The controller's hardware probe as plain data."""
    return {"summary": hardware.summary(), "key": hardware.key,
            **dataclasses.asdict(hardware)}


def session_facts(processes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``session`` entry from each process's engine facts (keyed "main" / "gw0"...)."""
    from pytest_omni_perf.suite_cost import total

    return {**total(processes), "processes": {k: dict(v) for k, v in sorted(processes.items())}}


def build_document(results: Sequence[Mapping[str, Any]], *, hardware: Mapping[str, Any],
                   backend: tuple[str, str], run: Mapping[str, Any],
                   session: Mapping[str, Any], created: datetime.datetime | None = None,
                   skipped: Sequence[Mapping[str, Any]] = (),
                   recommendations: Sequence[Mapping[str, Any]] = (),
                   loads: Sequence[Mapping[str, Any]] = (),
                   cases: Sequence[Mapping[str, Any]] = (),
                   ) -> dict[str, Any]:
    """The whole report as a JSON-ready dict (see the module docstring for the schema)."""
    from pytest_omni_perf.version import __version__
    from pytest_omni_perf.support import support_document

    when = created or datetime.datetime.now(datetime.timezone.utc)
    document = {
        "schema_version": SCHEMA_VERSION,
        "created": when.isoformat(),
        "pytest_omni_perf": __version__,
        "hardware": dict(hardware),
        "backend": {"name": backend[0], "why": backend[1]},
        "run": dict(run),
        "session": dict(session),
        "results": [dict(r) for r in results],
        "totals": totals(results),
        "skipped": [dict(s) for s in skipped],
        "loads": [_finite(dict(load)) for load in loads],
        "cases": [_finite(dict(case)) for case in cases],
        "support": support_document(results, skipped),
        "recommendations": [dict(r) for r in recommendations],
    }
    return dict(_finite(document))


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write the document as strict JSON, atomically (unknown objects as their text)."""
    write_atomic(path, json_document(document) + "\n")


def junit_properties(result: Mapping[str, Any]) -> list[tuple[str, object]]:
    """Flat scalar ``(name, value)`` pairs for JUnit XML, e.g. ``omni_perf.cache_dit.median_s``.

    The full result also travels as one ``omni_perf`` property (a dict), which JUnit XML
    can only print as one long string; these keep the key numbers readable there.
    """
    measured = result["measurement"]
    quality = result.get("quality") or {}
    name = result["profile"] + (f"@{result['label']}" if result.get("label") else "")
    values: dict[str, object] = {
        "median_s": measured["latency"]["median"],
        "cold_start_s": measured.get("cold_start_s"),
        "speedup": result.get("speedup"),
        "speedup_low": (result.get("speedup_interval") or {}).get("low"),
        "speedup_high": (result.get("speedup_interval") or {}).get("high"),
        "estimate_s": measured["latency"].get("estimate"),
        "rounds": measured["latency"]["n"],
        "ssim": quality.get("ssim_mean"),
        "peak_memory_gib": round(measured["memory"]["peak_bytes"] / 2**30, 4),
        "memory_kind": measured["memory"]["kind"],
        "verdict": result.get("verdict", "fail" if result.get("violations") else "pass"),
    }
    # pytest escapes property values but writes names as given: a label or profile name
    # with a control character would make the whole JUnit file unreadable.
    return [(xml_text(f"omni_perf.{name}.{key}"),
             round(v, 6) if isinstance(v, float) else xml_text(v) if isinstance(v, str) else v)
            for key, v in values.items() if v is not None]


def write_reports(config: pytest.Config, state: SessionState,
                  processes: Mapping[str, Mapping[str, Any]], json_path: Path | None,
                  html_path: Path | None, benchmark_path: Path | None) -> list[str]:
    """Write the asked-for reports from ``state.reported``; one line per report for the
    terminal (where it went, or why it could not be written)."""
    perf = state.perf
    hardware = hardware_dict(state.hardware)
    document = build_document(
        state.reported, hardware=hardware, backend=state.backend,
        run={"model": perf.model, "profiles": list(perf.profile_names), "rounds": perf.rounds,
             "warmup": perf.warmup, "update_baselines": perf.update_baselines,
             "baseline_dir": str(perf.baseline_dir)},
        session=session_facts(processes), skipped=state.skipped, loads=state.loads,
        cases=state.cases,
        recommendations=[r.to_dict() for r in _recommendations(state)])
    lines = []
    if json_path is not None:
        lines.append(_attempt("JSON report", json_path, lambda: write_json(json_path, document)))
    if html_path is not None:
        from pytest_omni_perf.report.html_report import write_html

        lines.append(_attempt("HTML report", html_path, lambda: write_html(html_path, document)))
        if json_path is None:
            # The page embeds the thumbnails; only a JSON report's "images" paths point at
            # the folder, so without one it would be left over beside the page.
            import shutil

            from pytest_omni_perf.report.images import assets_dir

            shutil.rmtree(assets_dir(html_path), ignore_errors=True)
    if benchmark_path is not None:
        from pytest_omni_perf.report import benchmark_export as bench

        export = bench.benchmark_document(
            document["results"], machine=bench.machine_info(hardware),
            commit=bench.commit_info(config.rootpath), warmup=perf.warmup)
        lines.append(_attempt("pytest-benchmark export", benchmark_path,
                              lambda: write_json(benchmark_path, _finite(export))))
    return lines


def _attempt(what: str, path: Path, write: Callable[[], None]) -> str:
    try:
        write()
    except (OSError, ValueError) as exc:
        # A report that cannot be written must be visible, but must not hide test results.
        return f"could not write the {what} to {path}: {exc}"
    return f"{what} written to {path}"


def _recommendations(state: SessionState) -> list[Any]:
    from pytest_omni_perf.recommend import recommend
    from pytest_omni_perf.report.terminal import profile_facts

    return recommend(state.reported, profile_facts(state.profiles), state.perf.ssim_budget)


def write_markdown(path: Path, state: SessionState) -> str:
    """Write the support table (``--omni-report-markdown``); the line for the terminal."""
    from pytest_omni_perf.report.markdown import support_markdown

    text = support_markdown(state.reported, state.skipped, backend=state.backend[0],
                            hardware=state.hardware.summary(),
                            loads=len(state.loads) + len(state.cases))
    return _attempt("Markdown support table", path, lambda: write_atomic(path, text))
