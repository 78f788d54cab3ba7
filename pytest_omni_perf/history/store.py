"""The history store: append runs, accept a run as the level, read series back.

One ``append`` is one transaction (the run row and all its result rows, or nothing), so a
crash or a concurrent writer never leaves half a run. Reads return plain dataclasses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_omni_perf.history.backends import (
    Database, HistoryError, Row, Value, open_database, placeholders,
)
from pytest_omni_perf.history.schema import (
    METRICS, RESULT_COLUMNS, RESULTS_TABLE, RUN_COLUMNS, RUNS_TABLE,
)

LATENCY = "latency_s"
"""Pseudo-metric: the robust estimate where a row has one, else its median (seconds)."""
_METRIC_SQL = {LATENCY: "COALESCE(estimate_s, median_s)", **{m: m for m in METRICS}}


@dataclasses.dataclass(frozen=True)
class SeriesKey:
    """What one series follows: a test's result for one profile and request, on one
    kind of hardware (different GPUs never share a series)."""

    nodeid: str
    profile: str
    label: str
    hardware_key: str

    def __str__(self) -> str:
        label = f"@{self.label}" if self.label else ""
        return f"{self.nodeid} [{self.profile}{label}] on {self.hardware_key}"


@dataclasses.dataclass(frozen=True)
class HistoryPoint:
    """One result of one run in a series; ``value`` is the metric asked for (None where
    the row has no value for it). Times are ISO 8601 UTC text."""

    key: SeriesKey
    run_id: str
    recorded: str
    git_commit: str | None
    value: float | None
    estimate_s: float | None
    ci_low: float | None
    ci_high: float | None
    median_s: float | None
    outcome: str | None
    accepted: bool
    new_level: bool


def metric_sql(metric: str) -> str:
    """The SQL expression of a metric name; ValueError naming the known ones."""
    try:
        return _METRIC_SQL[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(_METRIC_SQL)}") from None


def _float(value: Value) -> float | None:
    return None if value is None else float(value)


_POINT_COLUMNS = ("nodeid, profile, label, hardware_key, run_id, recorded, git_commit, {metric},"
                  " estimate_s, ci_low, ci_high, median_s, outcome, accepted, new_level")


def _point(row: Row) -> HistoryPoint:
    return HistoryPoint(
        key=SeriesKey(str(row[0]), str(row[1]), str(row[2]), str(row[3])),
        run_id=str(row[4]), recorded=str(row[5]),
        git_commit=None if row[6] is None else str(row[6]), value=_float(row[7]),
        estimate_s=_float(row[8]), ci_low=_float(row[9]), ci_high=_float(row[10]),
        median_s=_float(row[11]), outcome=None if row[12] is None else str(row[12]),
        accepted=bool(row[13]), new_level=bool(row[14]))


class HistoryStore:
    """A history (SQLite file or database URL); see :func:`open_database` for errors."""

    def __init__(self, database: Database) -> None:
        self.db = database

    @classmethod
    def open(cls, target: str | Path) -> HistoryStore:
        """Open (creating when absent) the history at a path or URL; HistoryError if it
        is not a history of this schema version."""
        return cls(open_database(target))

    @property
    def where(self) -> str:
        """The file or URL (password hidden), for messages."""
        return self.db.where

    def close(self) -> None:
        """Release the connection."""
        self.db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------
    def append(self, run: Mapping[str, Value], results: Sequence[Mapping[str, Value]],
               *, skip_existing: bool = False) -> int:
        """Write one run and its result rows in one transaction; the number of result rows
        written. ``skip_existing``: a run id already present is left as it is and 0 is
        returned (what makes an import idempotent); otherwise it is an error."""
        with self.db.transaction() as tx:
            if tx.execute(f"SELECT 1 FROM {RUNS_TABLE} WHERE run_id = :r",
                          {"r": run["run_id"]}):
                if skip_existing:
                    return 0
                raise HistoryError(f"history {self.where}: run {run['run_id']} exists already")
            tx.execute(f"INSERT INTO {RUNS_TABLE} {placeholders(RUN_COLUMNS)}",
                       {c: run.get(c) for c in RUN_COLUMNS})
            insert = f"INSERT INTO {RESULTS_TABLE} {placeholders(RESULT_COLUMNS)}"
            for row in results:
                tx.execute(insert, {c: row.get(c) for c in RESULT_COLUMNS})
        return len(results)

    def accept(self, run_id: str, *, new_level: bool = True) -> int:
        """Mark every result of ``run_id`` accepted; ``new_level``: they start a new level
        (``--omni-update-baselines``: a deliberate step change), so earlier accepted runs
        no longer count for :meth:`recent_accepted`. The number of rows marked; HistoryError
        for an unknown run."""
        with self.db.transaction() as tx:
            if not tx.execute(f"SELECT 1 FROM {RUNS_TABLE} WHERE run_id = :r", {"r": run_id}):
                raise HistoryError(f"history {self.where}: no run {run_id!r}")
            count = tx.execute(f"SELECT COUNT(*) FROM {RESULTS_TABLE} WHERE run_id = :r",
                               {"r": run_id})[0][0]
            tx.execute(f"UPDATE {RESULTS_TABLE} SET accepted = 1, new_level = :n "
                       "WHERE run_id = :r", {"r": run_id, "n": int(new_level)})
        return int(count or 0)

    # -- reading ---------------------------------------------------------------------------
    def recent_accepted(self, test: str, profile: str, label: str, hardware_key: str,
                        n: int, metric: str = LATENCY) -> list[HistoryPoint]:
        """The last ``n`` accepted results of one series, oldest first, counted from the
        latest accepted row that started a level (earlier levels are not mixed in)."""
        return self._recent_in_level(test, profile, label, hardware_key, n, metric,
                                     "accepted = 1")

    def recent_unfailed(self, test: str, profile: str, label: str, hardware_key: str,
                        n: int, metric: str = LATENCY) -> list[HistoryPoint]:
        """The last ``n`` results of one series' current level that no gate failed (passed,
        inconclusive, or accepted by a record run), oldest first: how much unchanged runs
        differ. Inconclusive runs count (leaving them out would keep only the runs that
        happened to land near the level); failed ones do not (they are the regressions)."""
        return self._recent_in_level(test, profile, label, hardware_key, n, metric,
                                     "(accepted = 1 OR outcome IN ('pass', 'inconclusive'))")

    def _recent_in_level(self, test: str, profile: str, label: str, hardware_key: str,
                         n: int, metric: str, which: str) -> list[HistoryPoint]:
        series = "nodeid = :t AND profile = :p AND label = :l AND hardware_key = :h"
        sql = (f"SELECT {_POINT_COLUMNS.format(metric=metric_sql(metric))} "
               f"FROM {RESULTS_TABLE} WHERE {series} AND {which} AND recorded >= COALESCE("
               f"(SELECT MAX(recorded) FROM {RESULTS_TABLE} WHERE {series} AND accepted = 1 "
               "AND new_level = 1), '') ORDER BY recorded DESC, run_id DESC LIMIT :n")
        with self.db.transaction(write=False) as tx:
            rows = tx.execute(sql, {"t": test, "p": profile, "l": label, "h": hardware_key,
                                    "n": n})
        return [_point(r) for r in reversed(rows)]

    def series(self, metric: str = LATENCY, *, test: str | None = None,
               nodeid: str | None = None, profile: str | None = None,
               label: str | None = None,
               hardware_key: str | None = None) -> dict[SeriesKey, list[HistoryPoint]]:
        """Every series matching the filters (None: any), each oldest first. ``test``
        matches any node id containing it; ``nodeid`` only that node id."""
        clauses, params = [], {}
        for column, value in (("nodeid", nodeid), ("profile", profile), ("label", label),
                              ("hardware_key", hardware_key)):
            if value is not None:
                clauses.append(f"{column} = :{column}")
                params[column] = value
        if test is not None:
            clauses.append("nodeid LIKE :test")
            params["test"] = "%" + test.replace("\\", "\\\\").replace("%", "\\%").replace(
                "_", "\\_") + "%"
        where = " AND ".join(c + (" ESCAPE '\\'" if c.startswith("nodeid LIKE") else "")
                             for c in clauses) or "1 = 1"
        sql = (f"SELECT {_POINT_COLUMNS.format(metric=metric_sql(metric))} FROM {RESULTS_TABLE}"
               f" WHERE {where} ORDER BY recorded, run_id, seq")
        with self.db.transaction(write=False) as tx:
            rows = tx.execute(sql, params)
        found: dict[SeriesKey, list[HistoryPoint]] = {}
        for row in rows:
            point = _point(row)
            found.setdefault(point.key, []).append(point)
        return found

    def runs(self) -> list[dict[str, Value]]:
        """Every run row, oldest first (``options`` still JSON text)."""
        with self.db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM {RUNS_TABLE} "
                              "ORDER BY started, run_id")
        return [dict(zip(RUN_COLUMNS, r)) for r in rows]

    def results(self, run_id: str | None = None) -> list[dict[str, Value]]:
        """Result rows (all, or one run's), oldest first, JSON columns still text."""
        where, params = ("WHERE run_id = :r", {"r": run_id}) if run_id else ("", {})
        with self.db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {', '.join(RESULT_COLUMNS)} FROM {RESULTS_TABLE} "
                              f"{where} ORDER BY recorded, run_id, seq", params)
        return [dict(zip(RESULT_COLUMNS, r)) for r in rows]

    def count(self) -> tuple[int, int]:
        """(runs, result rows) in the history."""
        with self.db.transaction(write=False) as tx:
            runs = tx.execute(f"SELECT COUNT(*) FROM {RUNS_TABLE}")[0][0]
            results = tx.execute(f"SELECT COUNT(*) FROM {RESULTS_TABLE}")[0][0]
        return int(runs or 0), int(results or 0)


def decode(value: Value) -> object:
    """A JSON column's value as data (None stays None)."""
    return None if value is None else json.loads(str(value))
