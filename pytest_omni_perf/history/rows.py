"""History rows from what a run reported: the JSON report's per-result dicts
(``PerfResult.to_dict()`` plus ``outcome``) and the session's facts.

Reads what exists today and what the verdict machinery adds (a robust estimate with its
interval, a pass/fail/inconclusive outcome); absent fields become NULL, so rows from
older and newer plugin versions sit in one history.
"""

from __future__ import annotations

import datetime
import json
import math
import socket
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_omni_perf.history.backends import Value

OUTCOMES = ("pass", "fail", "inconclusive")


def now() -> str:
    """The current UTC time as ISO 8601 text (the history's time format)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def new_run_id() -> str:
    """A fresh run id (32 hex digits): unique across hosts without a shared counter."""
    return uuid.uuid4().hex


def git_commit(root: Path) -> str | None:
    """``git rev-parse HEAD`` of the checkout holding ``root``; None outside a checkout,
    before the first commit or without git."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def estimate(result: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(robust latency estimate, interval low, interval high) in seconds, where reported.

    The estimate is ``measurement.latency.estimate`` (the Harrell-Davis 20% quantile the
    gates compare). Its interval in seconds is the estimate scaled by the interval of the
    ratio the gates judged: ``latency_ratio`` (against the stored run) where there is one,
    else ``speedup_interval`` (inverted: a faster profile has a higher speedup). Results of
    plugin versions before the robust estimate give (None, None, None).
    """
    latency = _mapping(_mapping(result.get("measurement")).get("latency"))
    value = _number(latency.get("estimate"))
    if value is None:
        return None, None, None
    if (low := _number(latency.get("ci_low"))) is not None:  # an interval given in seconds
        return value, low, _number(latency.get("ci_high"))
    ratio = _mapping(result.get("latency_ratio"))
    if ratio and (est := _number(ratio.get("estimate"))):
        low, high = _number(ratio.get("low")), _number(ratio.get("high"))
        return value, _scaled(value, low, est), _scaled(value, high, est)
    speedup = _mapping(result.get("speedup_interval"))
    if speedup and (est := _number(speedup.get("estimate"))):
        low, high = _number(speedup.get("high")), _number(speedup.get("low"))
        return value, _scaled(value, est, low), _scaled(value, est, high)
    return value, None, None


def _scaled(value: float, numerator: float | None, denominator: float | None) -> float | None:
    """``value * numerator / denominator`` where both are known and the denominator > 0."""
    if numerator is None or not denominator:
        return None
    return value * numerator / denominator


def weights_digest(measurement: Mapping[str, Any]) -> str | None:
    """The weights' sha256 where known: what the engine reported, else the expected digest
    of a built-in model (whose weights are bit-identical everywhere by construction)."""
    for source in (measurement.get("applied"), measurement.get("engine_metrics")):
        if isinstance(digest := _mapping(source).get("weights_digest"), str):
            return digest
    from pytest_omni_perf.builtin_models import EXPECTED_DIGESTS

    return EXPECTED_DIGESTS.get(str(measurement.get("model")))


def result_row(result: Mapping[str, Any], *, run_id: str, seq: int, hardware_key: str,
               commit: str | None, recorded: str, plugin_version: str,
               accepted: bool = False, new_level: bool = False) -> dict[str, Value]:
    """One ``omni_perf_results`` row (column -> value) from one reported result dict."""
    measured = _mapping(result.get("measurement"))
    latency = _mapping(measured.get("latency"))
    memory = _mapping(measured.get("memory"))
    fingerprint = _mapping(result.get("fingerprint"))
    samples = measured.get("samples_s") or latency.get("samples") or []
    value, low, high = estimate(result)
    verdict = result.get("verdict")
    peak = _number(memory.get("peak_bytes"))
    rounds = latency.get("n")
    return {
        "run_id": run_id, "seq": seq, "nodeid": str(result["nodeid"]),
        "profile": str(result["profile"]), "label": str(result.get("label") or ""),
        "backend": measured.get("backend"), "model": measured.get("model"),
        "weights_digest": weights_digest(measured),
        "hardware_key": str(fingerprint.get("hardware_key") or hardware_key),
        "fingerprint": _json(dict(fingerprint) or None),
        "versions": _json({**_mapping(fingerprint.get("versions")),
                           "pytest-omni-perf": plugin_version}),
        "git_commit": commit, "recorded": recorded,
        "rounds": rounds if isinstance(rounds, int) else len(samples),
        "estimate_s": value, "ci_low": low, "ci_high": high,
        "median_s": _number(latency.get("median")), "p90_s": _number(latency.get("p90")),
        "mean_s": _number(latency.get("mean")), "stdev_s": _number(latency.get("stdev")),
        "samples": _json([s for s in samples if _number(s) is not None]),
        "cold_start_s": _number(measured.get("cold_start_s")),
        "memory_peak_bytes": None if peak is None else int(peak),
        "memory_kind": memory.get("kind"),
        "speedup": _number(result.get("speedup")),
        "ssim": _number(_mapping(result.get("quality")).get("ssim_mean")),
        "stored_ssim": _number(_mapping(result.get("stored_quality")).get("ssim_mean")),
        "outcome": verdict if verdict in OUTCOMES else None,
        "test_outcome": result.get("outcome"),
        "violations": _json(result.get("violations") or []),
        "accepted": int(accepted), "new_level": int(new_level),
    }


def run_row(*, run_id: str, started: str, finished: str, commit: str | None,
            hardware_key: str, plugin_version: str, backend: str | None,
            options: Mapping[str, Any], source: str = "pytest") -> dict[str, Value]:
    """One ``omni_perf_runs`` row; ``options`` is stored as JSON."""
    return {"run_id": run_id, "started": started, "finished": finished,
            "host": socket.gethostname(), "git_commit": commit, "hardware_key": hardware_key,
            "plugin_version": plugin_version, "backend": backend,
            "options": _json(dict(options)), "source": source}
