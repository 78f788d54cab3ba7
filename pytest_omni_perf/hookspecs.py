"""Hooks other plugins and conftest.py files can implement to extend pytest-omni-perf."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_omni_perf.engines.base import Engine, EngineSpec
    from pytest_omni_perf.hardware import HardwareInfo


@pytest.hookspec(firstresult=True)
def pytest_omni_perf_make_engine(config: pytest.Config, spec: EngineSpec,
                                 hardware: HardwareInfo) -> Engine | None:
    """Return an (unstarted) Engine for ``spec.backend``, or None to let others try.

    Raise ``pytest_omni_perf.engines.base.ProfileUnsupported`` to skip the profile with a
    reason. conftest.py::

        def pytest_omni_perf_make_engine(config, spec, hardware):
            if spec.backend == "mine":
                return MyEngine(spec)
    """


@pytest.hookspec(firstresult=True)
def pytest_omni_perf_probe_hardware(config: pytest.Config) -> HardwareInfo | None:
    """Return the HardwareInfo markers and baselines use, or None for the NVML probe.

    Useful to pin a hardware key, or to test GPU-only paths' skip logic on a CPU machine.
    """
