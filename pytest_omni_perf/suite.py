"""The zero-code suite: ``pytest --pyargs pytest_omni_perf.suite --omni-model=M --omni-profile=all``.

One test, parametrized over ``--omni-profile`` like any perf test, measures each chosen
profile against its baseline profile on the requests ``suite_requests`` picks for the
model's kind and the hardware (``--omni-suite-request`` overrides fields). Profiles the
machine or the model cannot run skip with the plugin's reasons; with
``--omni-report-markdown=PATH`` the run writes the model's support-table row, and the
terminal summary ends with the best profile per budget (``pytest_omni_perf.support``).

A module of the package, not of ``tests/``: pytest collects it only when named on the
command line (``--pyargs`` turns the module name into its path; an explicit path is
collected whatever ``python_files`` says), so the repository's own ``pytest tests`` never
picks it up.
"""

from __future__ import annotations

import pytest

from pytest_omni_perf.omni_perf import OmniPerf


def test_support(omni_perf: OmniPerf, request: pytest.FixtureRequest) -> None:
    """Measure the active profile on each suite request (labels ``short``, ``realistic``).

    A first run of a model has no stored baselines: it is judged against the baseline
    profile measured beside it only (a note says so), not failed for the missing files.
    """
    from pytest_omni_perf.state import state_key
    from pytest_omni_perf.suite_requests import model_kind, suite_requests, takes_image

    state = request.config.stash[state_key]
    perf = state.perf
    kind = model_kind(perf.model, perf.cache_dir)
    omni_perf.allow_missing_baselines()
    with_image = takes_image(perf.model, perf.cache_dir)
    for chosen in suite_requests(kind, bool(state.hardware.gpus), perf.suite_request,
                                 with_image):
        omni_perf.measure(label=chosen.label, **chosen.fields)
