"""A deterministic stand-in engine runner, for tests of the gate and statistics logic only.

Every feature is also tested through the real diffusers engine; this one exists so a test
can make a profile exactly 30% slower or its image noisier, which a real engine cannot
promise. Behaviour per profile comes from environment variables read at each request, so a
pytester run can change it between runs:

    STANDIN_DELAY_<PROFILE>=seconds   (default 0.02)
    STANDIN_JITTER_<PROFILE>=fraction (each request sleeps delay x (1 + U(0, fraction)):
                                       noisy rounds on purpose; default 0. U comes from a
                                       generator seeded with the profile's name: the arms
                                       draw independently, and every run draws the same)
    STANDIN_NOISE_<PROFILE>=sigma     (default 0: identical image for every profile)
    STANDIN_CRASH_<PROFILE>=1         (the process exits during the request)
    STANDIN_HANG_<PROFILE>=1          (the request never returns)
    STANDIN_CRASH_ONCE_<PROFILE>=path (exits during the request unless ``path`` exists; creates
                                       it first, so only the first engine of the run crashes)
    STANDIN_<WHAT>_<PROFILE>_<BACKEND>  (any of the above for one backend only, the backend's
                                       name upper-cased with - as _: STANDIN_NOISE_EAGER_
                                       OMNI_SERVER; parity tests run one profile on two)
    STANDIN_DEVICES_LOG=path          (every request appends one JSON line: profile, pid, the
                                       CUDA_VISIBLE_DEVICES it was started with, width, begin,
                                       end: which GPUs an engine ran on, and when)
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from pytest_omni_perf.engines.base import GenerationOutput, GenerationRequest, ProfileUnsupported


def _uniform_draws(profile: str) -> Iterator[float]:
    """U(0, 1) draws seeded by ``profile``: independent per arm, the same in every run."""
    import numpy as np

    generator = np.random.default_rng(zlib.crc32(profile.encode()))
    while True:
        yield float(generator.random())


class StandinRunner:
    def __init__(self, profile: str, options: Mapping[str, Any], backend: str = "") -> None:
        self.profile = profile
        self.options = dict(options)
        self.backend = backend.upper().replace("-", "_")
        self._jitter_draws = _uniform_draws(profile)

    def _env(self, what: str, default: str) -> str:
        name = f"STANDIN_{what}_{self.profile.upper()}"
        return os.environ.get(f"{name}_{self.backend}", os.environ.get(name, default))

    def load(self) -> dict[str, Any]:
        if self._env("UNSUPPORTED", ""):
            raise ProfileUnsupported(f"stand-in: {self.profile} is unsupported on purpose")
        return {"standin": self.profile}

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        import numpy as np

        if self._env("CRASH", ""):
            os._exit(3)
        once = self._env("CRASH_ONCE", "")
        if once and not os.path.exists(once):
            open(once, "x").close()
            os._exit(3)
        if self._env("HANG", ""):
            time.sleep(3600)
        began = time.perf_counter()
        wall = time.time()
        jitter = float(self._env("JITTER", "0")) * next(self._jitter_draws)
        time.sleep(float(self._env("DELAY", "0.02")) * (1.0 + jitter))
        if log := os.environ.get("STANDIN_DEVICES_LOG"):
            line = {"profile": self.profile, "pid": os.getpid(), "width": request.width,
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "begin": wall, "end": time.time()}
            with open(log, "a") as handle:  # one short append per line: no torn lines
                handle.write(json.dumps(line) + "\n")
        rng = np.random.default_rng(request.seed)
        frames = []
        for _ in range(request.num_frames or 1):
            base = rng.integers(0, 256, (request.height, request.width, 3)).astype(np.float64)
            noise = float(self._env("NOISE", "0"))
            if noise:
                base += np.random.default_rng(12345).normal(0, noise, base.shape)
            frames.append(np.clip(base, 0, 255).astype(np.uint8))
        return GenerationOutput(frames=frames, engine_latency_s=time.perf_counter() - began)

    def close(self) -> None:
        pass

    def versions(self) -> dict[str, str]:
        return {"standin": "1"}


def make(profile: str, options: Mapping[str, Any], backend: str = "") -> StandinRunner:
    return StandinRunner(profile, options, backend)


CONFTEST = '''
import os, sys
sys.path.insert(0, {tests_dir!r})
from pytest_omni_perf.engines.hosting import InProcessEngine, IsolatedEngine

def pytest_omni_perf_make_engine(config, spec, hardware):
    kwargs = {{"profile": spec.profile_name, "options": dict(spec.options),
              "backend": spec.backend}}
    if os.environ.get("STANDIN_ISOLATED"):
        return IsolatedEngine(spec, "standin:make", kwargs,
                              env={{"PYTHONPATH": {tests_dir!r}}})
    return InProcessEngine(spec, "standin:make", kwargs)
'''


def conftest_source() -> str:
    """conftest.py text that routes every engine to this stand-in."""
    return CONFTEST.format(tests_dir=os.path.dirname(os.path.abspath(__file__)))
