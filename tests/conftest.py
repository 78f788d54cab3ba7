"""Shared fixtures of the plugin's own tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy  # noqa: F401
import numpy.fft  # noqa: F401  (numpy 2 imports these submodules on first use)
import numpy.linalg  # noqa: F401
import numpy.ma  # noqa: F401
import numpy.polynomial  # noqa: F401
import numpy.random  # noqa: F401
import pytest

import standin

# pytester's inline runs drop modules first imported during the run from sys.modules; a C
# extension such as numpy cannot be imported twice in one process, so a later test's
# `import numpy` then fails ("cannot load module more than once per process"). Importing it
# here, before any inline run, keeps it loaded for the whole worker. numpy 2 loads its
# submodules lazily: numpy.fft, first imported by diffusers' scheduler inside an inline
# run, failed the next tiny-model build of that worker (5 errors in a -n 2 subset run).


@pytest.fixture
def standin_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose engines are the deterministic stand-in (see tests/standin.py)."""
    pytester.makeconftest(standin.conftest_source())
    for name in list(os.environ):
        if name.startswith("STANDIN_"):
            monkeypatch.delenv(name)
    return pytester

@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache folder holding the built-in tiny-flux, tiny-wan, tiny-flux-kontext,
    tiny-wan-i2v and tiny-qwen-image-edit-plus: the one named by OMNI_PERF_CACHE_DIR (as CI
    sets it), else a folder of this session's own."""
    from pytest_omni_perf.builtin_models import ensure_model

    shared = os.environ.get("OMNI_PERF_CACHE_DIR")
    folder = Path(shared) if shared else tmp_path_factory.mktemp("omni-cache")
    for name in ("tiny-flux", "tiny-wan", "tiny-flux-kontext", "tiny-wan-i2v",
                 "tiny-qwen-image-edit-plus"):
        ensure_model(name, folder)  # file-locked: safe when xdist workers build at once
    return folder


# The perf suite has its own command (scripts/perf-suite.sh): it measures, it is not a test
# of the plugin, and it needs its own --omni-* options.
collect_ignore = ["perf"]
