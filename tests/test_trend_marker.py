"""The terminal's trend cell (``report.trend.marker``)."""

from __future__ import annotations

from pytest_omni_perf.report.trend import marker


def test_first_run_is_not_compared_with_a_level_made_of_itself() -> None:
    """A newcomer's fresh clone showed "▄ +0% vs level" after one run: the level was that run."""
    first = {"run_id": "a", "points": [{"run_id": "a", "value": 1.0}],
             "level": {"value": 1.0}}
    assert marker(first).endswith(" first run, no level yet")
    later = {"run_id": "b", "points": [{"run_id": "a", "value": 1.0},
                                       {"run_id": "b", "value": 1.3}],
             "level": {"value": 1.0}}
    assert marker(later).endswith(" +30% vs level")
    assert marker(None) == "-"


def test_a_level_started_by_this_run_is_not_compared_with_itself() -> None:
    """After a refresh (``--omni-update-baselines`` starts a level) a newcomer read
    "▁█ +0% vs level": the level was this run alone."""
    refreshed = {"run_id": "b", "points": [{"run_id": "a", "value": 1.0},
                                           {"run_id": "b", "value": 1.3}],
                 "level": {"value": 1.3, "this_run_only": True}}
    assert marker(refreshed).endswith(" new level from this run")
    older = dict(refreshed, level={"value": 1.0, "this_run_only": False})
    assert marker(older).endswith(" +30% vs level")
