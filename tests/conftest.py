"""Shared fixtures of the plugin's own tests."""

from __future__ import annotations

import pytest

import standin


@pytest.fixture
def standin_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose engines are the deterministic stand-in (see tests/standin.py)."""
    pytester.makeconftest(standin.conftest_source())
    for name in list(__import__("os").environ):
        if name.startswith("STANDIN_"):
            monkeypatch.delenv(name)
    return pytester

# The perf suite has its own command (scripts/perf-suite.sh): it measures, it is not a test
# of the plugin, and it needs its own --omni-* options.
collect_ignore = ["perf"]
