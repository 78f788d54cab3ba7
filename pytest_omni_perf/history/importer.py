"""``import-baselines``: the stored baselines (``<dir>/<hardware key>/<test>/<profile>/
metrics.json``) become history runs, one per file, accepted as levels.

Idempotent: a run's id is derived from the file's place and content, so importing the same
folder again adds nothing, and a re-recorded baseline (new content) adds one new run. The
run's time and commit are those of the git commit that last changed the file, when it is
in a checkout (otherwise its modification time and no commit), so imported levels sort
where they were recorded.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_omni_perf.history import rows
from pytest_omni_perf.history.store import HistoryStore

METRICS = "metrics.json"


@dataclasses.dataclass
class ImportReport:
    """What an import did: runs added, files already in the history, files that could not
    be read (path and why; they are skipped, the rest is imported)."""

    added: int = 0
    present: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


def _last_commit(path: Path) -> tuple[str | None, str | None]:
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%H %cI", "--", path.name],
                              cwd=path.parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 2:
        return None, None
    when = datetime.datetime.fromisoformat(parts[1]).astimezone(datetime.timezone.utc)
    return parts[0], when.isoformat(timespec="microseconds")


def as_result(metrics: Mapping[str, Any], profile_folder: str) -> dict[str, Any]:
    """A stored baseline's metrics.json in the shape of a reported result
    (``PerfResult.to_dict``), as far as a baseline holds it."""
    profile, _, label = profile_folder.partition("@")
    ssim = metrics.get("ssim_vs_baseline_profile")
    return {
        "nodeid": metrics["nodeid"], "profile": metrics.get("profile") or profile,
        "label": label,
        "measurement": {"latency": metrics.get("latency") or {},
                        "samples_s": metrics.get("samples_s") or [],
                        "memory": metrics.get("memory") or {},
                        "cold_start_s": metrics.get("cold_start_s"),
                        "model": metrics.get("model"), "backend": metrics.get("backend"),
                        "applied": metrics.get("applied") or {}},
        "speedup": metrics.get("speedup"),
        "quality": None if ssim is None else {"ssim_mean": ssim},
        "fingerprint": metrics.get("fingerprint") or {},
        "verdict": None, "outcome": None,
    }


def import_baselines(store: HistoryStore, baseline_dir: Path) -> ImportReport:
    """Import every ``metrics.json`` under ``baseline_dir`` (see the module docstring)."""
    from pytest_omni_perf.version import __version__

    report = ImportReport()
    for path in sorted(baseline_dir.glob(f"*/**/{METRICS}")):
        relative = path.relative_to(baseline_dir)
        try:
            content = path.read_bytes()
            metrics = json.loads(content)
            if not isinstance(metrics, dict) or not isinstance(metrics.get("nodeid"), str):
                raise ValueError("no nodeid: not a pytest-omni-perf baseline")
            hardware_key = str(metrics.get("hardware_key") or relative.parts[0])
            result = as_result(metrics, path.parent.name)
        except (OSError, ValueError) as exc:
            report.problems.append(f"{path}: {exc}")
            continue
        digest = hashlib.sha256(str(relative).encode() + b"\0" + content).hexdigest()
        run_id = f"baseline-{digest[:24]}"
        commit, when = _last_commit(path)
        when = when or datetime.datetime.fromtimestamp(
            path.stat().st_mtime, datetime.timezone.utc).isoformat(timespec="microseconds")
        run = rows.run_row(run_id=run_id, started=when, finished=when, commit=commit,
                           hardware_key=hardware_key, plugin_version=__version__,
                           backend=result["measurement"]["backend"],
                           options={"imported_from": str(path)}, source="import")
        row = rows.result_row(result, run_id=run_id, seq=0, hardware_key=hardware_key,
                              commit=commit, recorded=when, plugin_version=__version__,
                              accepted=True, new_level=True)
        if store.append(run, [row], skip_existing=True):
            report.added += 1
        else:
            report.present += 1
    return report
