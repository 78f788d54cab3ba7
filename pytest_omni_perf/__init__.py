"""pytest-omni-perf: does a vLLM-Omni diffusion optimization pay off, and did it break anything?

The pytest plugin itself is ``pytest_omni_perf.plugin`` (entry point ``omni_perf``). This
package imports nothing heavy, so ``pytest --help`` stays fast on any machine: the public
types below load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_omni_perf.version import __version__

if TYPE_CHECKING:
    from pytest_omni_perf.load_runs import LoadLevel, LoadReport
    from pytest_omni_perf.omni_perf import OmniPerf
    from pytest_omni_perf.results import PerfResult

__all__ = ["LoadLevel", "LoadReport", "OmniPerf", "PerfResult", "__version__"]


def __getattr__(name: str) -> object:
    """Load the public types when first asked for (PEP 562)."""
    if name == "OmniPerf":
        from pytest_omni_perf.omni_perf import OmniPerf

        return OmniPerf
    if name == "PerfResult":
        from pytest_omni_perf.results import PerfResult

        return PerfResult
    if name in ("LoadReport", "LoadLevel"):
        from pytest_omni_perf import load_runs

        return getattr(load_runs, name)
    raise AttributeError(f"module 'pytest_omni_perf' has no attribute {name!r}")
