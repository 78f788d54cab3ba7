"""The ``omni-server`` backend attached to a server someone else runs (``--omni-server-url``).

vLLM-Omni's CI runners start their own ``vllm serve --omni``; the plugin measures it over
HTTP (``omni_client``) and never starts, signals or stops a process: ``stop()`` closes the
HTTP client only. What the plugin cannot see, it says so:

- the profile is the one the user named (``--omni-profile`` / ``NAME=URL``): vLLM-Omni's
  server reports no diffusion configuration, so ``applied["profile"]`` says it was not
  verified (the shipped server's ``/version`` reports what it applied: kept beside it);
- the model is confirmed against ``GET /v1/models`` (``id`` is the served name, ``root``
  the model path, as vLLM-Omni's ``_DiffusionServingModels`` reports them) where the
  server answers it; a server serving another model is an error naming both;
- memory: the server is no process of ours, so nothing is sampled; the peak is what the
  server reports (``peak_memory_mb``), else "not measured" (``measure/memory.py``).
"""

from __future__ import annotations

import time
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from pytest_omni_perf.engines.base import EngineError, EngineInfo, EngineSpec
from pytest_omni_perf.engines.omni_client import OmniHttpClient

_WAKE_S = 3.0
"""How long a URL where nothing answers is retried before the start fails: a server just
(re)started by the CI script may take a moment to bind."""
_POLL_S = 0.2
NOT_VERIFIED = ("named by the user (--omni-server-url/--omni-profile); not verified: the "
                "server does not report its diffusion configuration")
OUTSIDE_VIEW = ("the server's processes are not the plugin's: peak memory is what the server "
                "reports (peak_memory_mb), else not measured; on this machine its own CPU and "
                "GPU use counts as other processes' in the interference figures")


class AttachedServerEngine(OmniHttpClient):
    """A running server at ``url`` measured as ``spec``'s profile; no process is ours."""

    device = "attached server"

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self._url = spec.server_url.rstrip("/")
        # A server on another host may sit behind the user's proxy; a loopback one never.
        host = urlsplit(self._url).hostname or ""
        self.trust_env = host not in ("127.0.0.1", "localhost", "::1")
        self.versions: dict[str, str] = {}
        self.applied: dict[str, Any] = {}
        self._started = False

    @property
    def url(self) -> str:
        return self._url

    @property
    def who(self) -> str:
        return f"server at {self.url} (profile {self.spec.profile_name!r})"

    # -- lifecycle: health, model, what it reports -----------------------------------------
    def start(self) -> None:
        self._wait_healthy(time.monotonic() + self.spec.start_timeout_s)
        self.applied = {"attached": True, "url": self.url, "profile": NOT_VERIFIED,
                        "model": self._confirmed_model(), "outside_view": OUTSIDE_VIEW}
        self._read_version()
        self._started = True

    def _wait_healthy(self, deadline: float) -> None:
        """Healthy, or EngineError naming the URL: at once when nothing answers (after a
        short grace), at ``--omni-start-timeout`` when it answers but is not ready (503
        while its model loads)."""
        silent_until = time.monotonic() + _WAKE_S
        while True:
            status = self._health()
            if status == 200:
                return
            now = time.monotonic()
            if status is None and now > silent_until:
                raise EngineError(
                    f"nothing answers GET {self.url}/health (--omni-server-url for profile "
                    f"{self.spec.profile_name!r}): is the server running and reachable from "
                    "here? The plugin does not start a server while attached")
            if now > deadline:
                raise EngineError(
                    f"the server at {self.url} answered GET /health with HTTP {status} for "
                    f"{self.spec.start_timeout_s:g} s, never 200 (raise --omni-start-timeout "
                    "if it is still loading)")
            time.sleep(_POLL_S)

    def _confirmed_model(self) -> str:
        """How the model was confirmed (``GET /v1/models``), or why it was not; EngineError
        when the server serves another model than the test measures."""
        answer = self._get_json("/v1/models")
        data = answer.get("data") if isinstance(answer, dict) else None
        cards = [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []
        served = [str(c[k]) for c in cards for k in ("id", "root") if c.get(k)]
        if not served:
            return (f"{self.spec.model!r} named by the user; not verified: GET /v1/models "
                    "named no model")
        wanted = self.spec.model
        if wanted in served:
            return f"{wanted!r} confirmed by GET /v1/models"
        if PurePath(wanted).name in {PurePath(s).name for s in served}:
            return (f"{wanted!r} confirmed by folder name against GET /v1/models "
                    f"({', '.join(sorted(set(served)))})")
        raise EngineError(
            f"the server at {self.url} serves {', '.join(sorted(set(served)))} (GET /v1/models), "
            f"not {wanted!r}, the model this test measures: pass --omni-model=<the served "
            "model> (or mark the test with omni_model) so results and baselines are keyed by "
            "what was measured")

    def stop(self) -> None:
        """Close the HTTP client; the server is not ours and keeps running."""
        self.close_client()
        self._started = False

    # -- failures: the server is left alone -------------------------------------------------
    def _check_running(self) -> None:
        if not self._started:
            raise EngineError(f"{self.who} is not attached (start() failed or stop() ran)")

    def _timed_out(self) -> EngineError:
        return EngineError(
            f"{self.who} did not answer the request within {self.spec.request_timeout_s:g} "
            "s; the server was left running, as it is not the plugin's (raise "
            "--omni-request-timeout if that is expected)")

    def _request_failure(self, exc: BaseException) -> EngineError:
        self._started = False  # a later test gets a fresh engine, health-checked again
        return EngineError(f"request to {self.url} for {self.spec.profile_name!r} failed: "
                           f"{type(exc).__name__}: {exc} (the server is not the plugin's: "
                           "its own log says why)")

    # -- what the harness reads -------------------------------------------------------------
    def describe(self) -> EngineInfo:
        return EngineInfo(backend=self.spec.backend, model=self.spec.model, pids=(),
                          applied=self.applied, versions=self.versions, device=self.device)

    def pids(self) -> list[int]:
        """None: the server's processes are not ours to sample (or may be on another host)."""
        return []

    @property
    def alive(self) -> bool:
        return self._started
