"""The run-to-run spread measured from a series' history: the pooling arithmetic, and
which runs of the history count."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pytest_omni_perf.history import HistoryStore
from pytest_omni_perf.history.spread import (
    MIN_SPREAD_RUNS, PRIOR_RUNS, pooled_spread, series_spread,
)


def test_without_prior_weight_it_is_the_sample_sd() -> None:
    logs = [0.01, -0.02, 0.03, 0.0, -0.01]
    assert pooled_spread(logs, 0.5, prior_runs=0) == pytest.approx(np.std(logs, ddof=1))


def test_the_default_weighs_as_prior_runs_runs() -> None:
    # Twenty identical runs: the default's 4 degrees of freedom against 19 of zero spread.
    assert pooled_spread([0.1] * 20, 0.075) == pytest.approx(
        math.sqrt(PRIOR_RUNS * 0.075**2 / (PRIOR_RUNS + 19)))
    assert pooled_spread([], 0.075) == 0.075
    assert pooled_spread([0.3], 0.075) == 0.075  # one run shows no spread
    # A noisy host widens the default: the pooled variance of both, by degrees of freedom.
    noisy = list(np.random.default_rng(1).normal(0, 0.2, 20))
    expected = math.sqrt((PRIOR_RUNS * 0.075**2 + 19 * np.var(noisy, ddof=1)) / (PRIOR_RUNS + 19))
    assert pooled_spread(noisy, 0.075) == pytest.approx(expected)
    assert pooled_spread(noisy, 0.075) > 0.1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        pooled_spread([0.0, bad], 0.075)
    with pytest.raises(ValueError, match="finite"):
        pooled_spread([0.0, 0.1], bad)


def _append(store: HistoryStore, run: int, speedup: float, outcome: str, *,
            new_level: bool = False) -> None:
    run_id = f"{run:032x}"
    recorded = f"2026-12-04T10:{run:02d}:00+00:00"
    store.append({"run_id": run_id, "started": recorded, "finished": recorded,
                  "hardware_key": "cpu", "source": "pytest"},
                 [{"run_id": run_id, "seq": 0, "nodeid": "t.py::test[cache_dit]",
                   "profile": "cache_dit", "label": "", "hardware_key": "cpu",
                   "recorded": recorded, "estimate_s": 0.01, "speedup": speedup,
                   "outcome": outcome, "accepted": int(new_level),
                   "new_level": int(new_level)}])


def test_failed_runs_and_earlier_levels_do_not_count(tmp_path: Path) -> None:
    where = tmp_path / "history.sqlite"
    args = {"nodeid": "t.py::test[cache_dit]", "profile": "cache_dit", "label": "",
            "hardware_key": "cpu", "relative": True, "prior": 0.075}
    assert series_spread(where, **args) is None  # no history yet
    with HistoryStore.open(where) as store:
        _append(store, 0, 9.0, "pass", new_level=True)  # an old level, far away
        _append(store, 1, 2.0, "pass", new_level=True)  # the current level starts here
        _append(store, 2, 2.1, "inconclusive")
        _append(store, 3, 0.5, "fail")  # a regression: not the host's spread
    assert series_spread(where, **args) is None  # 2 unfailed runs < MIN_SPREAD_RUNS
    with HistoryStore.open(where) as store:
        _append(store, 4, 1.9, "pass")
    found = series_spread(where, **args)
    assert found is not None and found.runs == MIN_SPREAD_RUNS and found.metric == "speedup"
    own = float(np.std(np.log([2.0, 2.1, 1.9]), ddof=1))
    assert found.history_sd == pytest.approx(own)
    assert found.spread == pytest.approx(pooled_spread(np.log([2.0, 2.1, 1.9]), 0.075))
    assert "3 unfailed runs of this series in the history" in found.describe()


def test_the_spread_command_lists_each_series(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_omni_perf.history.cli import main

    where = tmp_path / "history.sqlite"
    with HistoryStore.open(where) as store:
        for run, speedup in enumerate([2.0, 2.1, 1.9]):
            _append(store, run, speedup, "pass", new_level=run == 0)
    assert main(["spread", "--history", str(where)]) == 0
    own = float(np.std(np.log([2.0, 2.1, 1.9]), ddof=1))
    pooled = pooled_spread(np.log([2.0, 2.1, 1.9]), 0.02)
    assert capsys.readouterr().out == (
        f"t.py::test[cache_dit] [cache_dit] on cpu: log speedup: 3 unfailed runs, their sd "
        f"{own:.1%}; gates use {pooled:.1%} (pooled with the default 2.0%)\n")
    assert main(["spread", "--history", str(tmp_path / "none.sqlite")]) == 1
