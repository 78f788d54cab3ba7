"""The history's part in a pytest session: check the store when the session starts, and
on the controller (never on xdist workers, whose results reach it through their reports)
append the run at session end, then attach each result's trend for the reports.

Acceptance: ``--omni-update-baselines`` accepts every result of the run as a new level
(a deliberate step change); otherwise a result whose gates passed joins the current level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_omni_perf.history.backends import HistoryError, is_url

if TYPE_CHECKING:
    from pytest_omni_perf.history.store import HistoryPoint, HistoryStore, SeriesKey
    from pytest_omni_perf.state import SessionState
    from pytest_omni_perf.verdict import HistorySource, SeriesHistory

DEFAULT_FILE = "history.sqlite"
OFF = ("none", "off")
TREND_POINTS = 30
LEVEL_RUNS = 10
"""Recent accepted runs that make a series' level: the trend chart's, and the reference of
the stored-latency gate."""
MIN_LEVEL_RUNS = 3
"""Fewer accepted runs than this: the stored run, not the level, is the reference."""

_started_key = pytest.StashKey[str]()


def target(value: str | None, baseline_dir: Path, invocation_dir: Path) -> str | Path | None:
    """Where the history goes: ``value`` is ``--omni-history`` (URL, path, or none/off to
    record nothing); by default ``<baseline dir>/history.sqlite``. A relative path is taken
    against the invocation folder, like the report paths."""
    if value is None or value == "":
        return invocation_dir / baseline_dir / DEFAULT_FILE
    if value.lower() in OFF:
        return None
    if is_url(value):
        return value
    return invocation_dir / Path(value).expanduser()


def _target(config: pytest.Config, state: SessionState) -> str | Path | None:
    return target(state.perf.history, state.perf.baseline_dir, config.invocation_params.dir)


def check(config: pytest.Config, state: SessionState) -> None:
    """At configure time: set ``state.history_source`` (every process reads the history);
    on the controller, an existing history must be ours and of this schema version
    (pytest.UsageError naming it otherwise), before any time is spent."""
    from pytest_omni_perf.history.rows import now

    config.stash[_started_key] = now()
    state.history_source = history_source(config, state)
    where = _target(config, state)
    if where is None or hasattr(config, "workerinput"):
        return
    if isinstance(where, Path) and not where.exists():
        return  # made when the first results are written
    from pytest_omni_perf.history.store import HistoryStore

    try:
        HistoryStore.open(where).close()
    except HistoryError as exc:
        raise pytest.UsageError(f"--omni-history: {exc}") from None


def history_source(config: pytest.Config, state: SessionState) -> HistorySource | None:
    """What reads each series' run-to-run spread (see :mod:`.spread`) and level from this
    session's history; None where there is no history. ``--omni-run-spread`` fixes the
    spread; the level still applies."""
    where = _target(config, state)
    if where is None:
        return None
    fixed_spread = state.perf.run_spread is not None

    def read(nodeid: str, profile: str, label: str, relative: bool,
             prior: float) -> SeriesHistory | None:
        from pytest_omni_perf.history.spread import spread_in
        from pytest_omni_perf.history.store import HistoryStore, SeriesKey
        from pytest_omni_perf.verdict import SeriesHistory

        if isinstance(where, Path) and not where.exists():
            return None  # nothing recorded yet
        key = SeriesKey(nodeid, profile, label, state.hardware.key)
        try:
            with HistoryStore.open(where) as store:  # one open for both reads
                spread = None if fixed_spread else spread_in(store, key, relative=relative,
                                                               prior=prior)
                level = _level(store, key, relative)
        except HistoryError:
            return None  # the stored run stands; recording the run reports the history
        if spread is None and level is None:
            return None
        return SeriesHistory(
            spread=None if spread is None else spread.spread,
            spread_note=None if spread is None else spread.describe(),
            level=None if level is None else level[0],
            level_runs=0 if level is None else level[1],
            level_note=None if level is None else (
                f"the level of the last {level[1]} accepted runs of this series in the "
                f"history {where} (their median)"))

    return read


def _level(store: HistoryStore, key: SeriesKey, relative: bool) -> tuple[float, int] | None:
    """(level, runs): the median of the series' last LEVEL_RUNS accepted runs, in a latency
    arm's units (seconds, or 1 / speedup when ``relative``); None with fewer than
    MIN_LEVEL_RUNS of them."""
    import statistics

    from pytest_omni_perf.history.store import LATENCY

    points = store.recent_accepted(key.nodeid, key.profile, key.label, key.hardware_key,
                                   LEVEL_RUNS, "speedup" if relative else LATENCY)
    values = [p.value for p in points if p.value is not None and p.value > 0]
    if len(values) < MIN_LEVEL_RUNS:
        return None
    middle = statistics.median(values)
    return (1.0 / middle if relative else middle), len(values)


def record(config: pytest.Config, state: SessionState) -> list[str]:
    """Controller, session end: append this run's results, attach each result's trend to
    ``state.reported`` (key ``history``), and return the terminal lines: where the run
    went, and each level change detected at this run ([] when nothing was recorded). A history that cannot be written is reported, not raised: the
    test outcomes stand and the reports are still written."""
    from pytest_omni_perf.version import __version__
    from pytest_omni_perf.history import rows
    from pytest_omni_perf.history.store import HistoryStore

    where = _target(config, state)
    results = [r for r in state.reported if r.get("measurement")]
    if where is None or not results or hasattr(config, "workerinput"):
        return []
    perf = state.perf
    run_id, finished = rows.new_run_id(), rows.now()
    commit = rows.git_commit(config.rootpath)
    hw = state.hardware.key
    run = rows.run_row(
        run_id=run_id, started=config.stash.get(_started_key, finished), finished=finished,
        commit=commit, hardware_key=hw, plugin_version=__version__, backend=state.backend[0],
        options={"model": perf.model, "profiles": list(perf.profile_names),
                 "rounds": perf.rounds, "warmup": perf.warmup,
                 "update_baselines": perf.update_baselines,
                 "baseline_dir": str(perf.baseline_dir), "backend": state.backend[0]})
    result_rows = [rows.result_row(
        r, run_id=run_id, seq=i, hardware_key=hw, commit=commit, recorded=finished,
        plugin_version=__version__,
        accepted=_refreshed(perf.update_baselines, r) or r.get("verdict") == "pass",
        new_level=_refreshed(perf.update_baselines, r)) for i, r in enumerate(results)]
    try:
        with HistoryStore.open(where) as store:
            store.append(run, result_rows)
            for result, row in zip(results, result_rows):
                result["history"] = trend(store, row, run_id)
    except HistoryError as exc:
        return [f"history NOT recorded: {exc}"]
    except OSError as exc:
        return [f"history NOT recorded in {where}: {exc}"]
    return [f"history: {len(result_rows)} results of run {run_id[:12]} appended to "
            f"{store.where}", *change_lines(results, run_id)]


def _refreshed(update_baselines: bool, result: Mapping[str, Any]) -> bool:
    """Whether this result's stored baseline was written this run: a refresh on a busy host
    keeps the stored one (``busy_host.baseline_kept``) and must not start a level either."""
    return update_baselines and result.get("stored_path") is not None


def trend(store: HistoryStore, row: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The ``history`` entry of one result (layout in :mod:`.trend`)."""
    from pytest_omni_perf.history.changes import find_changes
    from pytest_omni_perf.history.store import LATENCY

    args = (str(row["nodeid"]), str(row["profile"]), str(row["label"]), str(row["hardware_key"]))
    found = store.series(LATENCY, nodeid=args[0], profile=args[1], label=args[2],
                         hardware_key=args[3])
    points = [p for series in found.values() for p in series]
    accepted = [p for p in store.recent_accepted(*args, LEVEL_RUNS) if p.value is not None]
    level = [p.value for p in accepted if p.value is not None]
    entry: dict[str, Any] = {
        "metric": LATENCY, "where": store.where, "run_id": run_id,
        "points": [_point(p) for p in points[-TREND_POINTS:]],
        "level": None if not level else {"value": sum(level) / len(level), "low": min(level),
                                         "high": max(level), "n": len(level),
                                         "this_run_only": all(p.run_id == run_id
                                                              for p in accepted)},
        "changes": []}
    try:
        changes = find_changes(points)
    except HistoryError as exc:
        entry["changes_error"] = str(exc)
        return entry
    entry["changes"] = [{"index": c.index, "run_id": c.run_id, "recorded": c.recorded,
                         "commit": c.git_commit, "before": c.before, "after": c.after,
                         "change_percent": c.change_percent, "p_value": c.p_value}
                        for c in changes]
    return entry


def _point(p: HistoryPoint) -> dict[str, Any]:
    return {"run_id": p.run_id, "recorded": p.recorded, "commit": p.git_commit,
            "value": p.value, "low": p.ci_low, "high": p.ci_high, "accepted": p.accepted}


def change_lines(results: Sequence[Mapping[str, Any]], run_id: str) -> list[str]:
    """The level changes that this run starts, one line per result, for the terminal."""
    from pytest_omni_perf.history.changes import LevelChange, describe
    from pytest_omni_perf.history.store import SeriesKey

    lines = []
    for r in results:
        for c in (r.get("history") or {}).get("changes") or []:
            if c["run_id"] != run_id:
                continue
            key = SeriesKey(r["nodeid"], r["profile"], r.get("label") or "", "")
            change = LevelChange(key=key, index=c["index"], run_id=c["run_id"],
                                 recorded=c["recorded"], git_commit=c["commit"],
                                 previous_run_id="", before=c["before"], after=c["after"],
                                 change_percent=c["change_percent"], p_value=c["p_value"])
            label = f"@{r['label']}" if r.get("label") else ""
            lines.append(f"level change at this run in {r['nodeid']}{label}: {describe(change)}")
    return lines
