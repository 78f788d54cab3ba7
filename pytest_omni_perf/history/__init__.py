"""Run history: every session's results in a store (SQLite file or database URL), the
accepted level of each series, change points, trends, import and export.

Command line: ``python -m pytest_omni_perf.history --help``.
"""

from __future__ import annotations

from pytest_omni_perf.history.backends import HistoryError
from pytest_omni_perf.history.store import HistoryPoint, HistoryStore, SeriesKey

__all__ = ["HistoryError", "HistoryPoint", "HistoryStore", "SeriesKey"]
