"""The HTTP half of the ``omni-server`` backend: requests to a vLLM-Omni-compatible server.

Shared by the engine that starts its own server (``omni_server.OmniServerEngine``) and the
one attached to a server someone else runs (``omni_attached.AttachedServerEngine``). What
the requests carry is ``omni_wire``'s; what a failure does to the server (kill the process
we started, or leave alone one that is not ours) is the subclass's: ``_timed_out``,
``_request_failure`` and ``_log_tail``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.engines.base import (
    EngineError, EngineSpec, GenerationOutput, GenerationRequest, ProfileUnsupported,
    checked_output,
)
from pytest_omni_perf.omni_wire import (
    EDITS_PATH, IMAGES_PATH, UNTAKEN_PREFIX, VIDEOS_PATH, decode_mp4, decode_png, edit_parts,
    error_message, image_payload, multipart, server_metrics, unsent_fields, video_parts,
)

try:
    import httpx
except ImportError:  # pragma: no cover - the server extra brings it
    raise ImportError("the omni-server backend needs httpx: "
                      "pip install pytest-omni-perf[server]") from None

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_JOB_POLL_S = (0.01, 0.2)  # first and longest pause between job polls
# Idle connections are dropped before uvicorn closes them (its keep-alive is 5 s), so a
# request never goes out on a socket the server is closing.
_KEEPALIVE_S = 2.0


class OmniHttpClient:
    """Requests to the server at ``url`` for ``spec``'s profile, over one httpx client."""

    spec: EngineSpec
    versions: dict[str, str]
    applied: dict[str, Any]
    _client: httpx.Client | None = None
    trust_env = False
    """Whether httpx reads proxy settings from the environment: never for a server on this
    machine, as the user's proxy does not reach it."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def who(self) -> str:
        """How messages name the server: ``server for 'eager'``."""
        return f"server for {self.spec.profile_name!r}"

    # -- what a failure does: the subclass's ----------------------------------------------
    def _check_running(self) -> None:
        """EngineError when no request can be sent now."""

    def _timed_out(self) -> EngineError:
        return EngineError(f"{self.who} did not answer the request within "
                           f"{self.spec.request_timeout_s:g} s")

    def _request_failure(self, exc: BaseException) -> EngineError:
        return EngineError(f"request to {self.url} for {self.spec.profile_name!r} failed: "
                           f"{type(exc).__name__}: {exc}")

    def _log_tail(self, lines: int) -> str:
        """The server's last log lines, where we have its log."""
        return ""

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- requests -------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> GenerationOutput:
        self._check_running()
        if unsent := unsent_fields(request):
            raise ProfileUnsupported(
                f"request field {', '.join(unsent)}: vLLM-Omni's POST {IMAGES_PATH} has no "
                "such field (a server would drop it silently)")
        if request.is_video:
            try:  # checked before the clock starts: an input the endpoint cannot carry
                parts = video_parts(request)
            except ValueError as exc:
                raise ProfileUnsupported(f"{self.who}: {exc}") from None
        elif request.video:
            raise ProfileUnsupported(f"{self.who}: request field video: an input video needs "
                                     "a video request (num_frames)")
        deadline = time.monotonic() + self.spec.request_timeout_s
        began = time.perf_counter()
        try:
            if request.is_video:
                frames, metrics = self._video(parts, deadline)
            else:
                frames, metrics = self._image(request, deadline)
        except TimeoutError:
            raise self._timed_out() from None
        except (OSError, httpx.TransportError) as exc:
            raise self._request_failure(exc) from None
        except ImportError as exc:  # PyAV missing: the message names the extra
            raise EngineError(str(exc)) from None
        except ValueError as exc:  # a body that is not the JSON the API promises
            raise EngineError(f"server's answer could not be read: {exc}") from None
        latency, engine_metrics = server_metrics(metrics, time.perf_counter() - began)
        return checked_output(GenerationOutput(frames=frames, engine_latency_s=latency,
                                               engine_metrics=engine_metrics), self.who)

    def _http(self, method: str, path: str, deadline: float, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> tuple[int, Mapping[str, str], bytes]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(path)
        if self._client is None:
            self._client = httpx.Client(trust_env=self.trust_env, limits=httpx.Limits(
                keepalive_expiry=_KEEPALIVE_S))
        try:
            response = self._client.request(method, self.url + path, content=body,
                                            headers=dict(headers or {}), timeout=remaining)
        except httpx.TimeoutException:
            raise TimeoutError(f"{method} {path}") from None
        return response.status_code, response.headers, response.content

    def _checked(self, method: str, path: str, deadline: float, body: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> bytes:
        status, _, data = self._http(method, path, deadline, body, headers)
        if status == 400 and UNTAKEN_PREFIX in (message := error_message(data)):
            # The shipped server names a request field the model cannot take: the request
            # cannot be honoured here, which is a skip, not a broken engine.
            raise ProfileUnsupported(f"{self.who}: {message}")
        if status != 200:
            raise EngineError(f"server answered HTTP {status} to {method} {path}: "
                              f"{error_message(data)}", log_tail=self._log_tail(15))
        return data

    def _image(self, request: GenerationRequest, deadline: float
               ) -> tuple[list[npt.NDArray[np.uint8]], dict[str, Any]]:
        if request.has_inputs:
            # An edit: the input images go as PNG file parts, as vLLM-Omni's API takes them.
            body, content_type = multipart(*edit_parts(request))
            path = EDITS_PATH
        else:
            body, content_type = json.dumps(image_payload(request)).encode(), "application/json"
            path = IMAGES_PATH
        answer = json.loads(self._checked("POST", path, deadline, body,
                                          {"Content-Type": content_type}))
        try:
            frame = decode_png(answer["data"][0]["b64_json"])
        except (KeyError, IndexError, TypeError, ValueError, OSError) as exc:
            raise EngineError(f"server's image answer has no decodable data[0].b64_json ({exc})")
        return [frame], dict(answer.get("metrics") or {})

    def _video(self, parts: tuple[dict[str, Any], list[tuple[str, str, bytes]]],
               deadline: float) -> tuple[list[npt.NDArray[np.uint8]], dict[str, Any]]:
        # An input image travels as the input_reference file part (image to video).
        body, content_type = multipart(*parts)
        job = json.loads(self._checked("POST", VIDEOS_PATH, deadline, body,
                                       {"Content-Type": content_type}))
        job_id = str(job.get("id") or "")
        if not job_id:
            raise EngineError(f"server's video answer has no job id: {job}")
        pause = _JOB_POLL_S[0]
        while job.get("status") != "completed":
            if job.get("status") == "failed":
                error = job.get("error") or {}
                message = error.get("message") if isinstance(error, dict) else error
                raise EngineError(f"video job {job_id} failed on the server: {message}",
                                  log_tail=self._log_tail(15))
            time.sleep(pause)
            pause = min(pause * 1.5, _JOB_POLL_S[1])
            # 0.30 answers a failed job with its error status and the job as the body.
            status, _, data = self._http("GET", f"/v1/videos/{job_id}", deadline)
            try:
                job = json.loads(data)
            except ValueError:
                job = {}
            if not isinstance(job, dict) or "status" not in job:
                raise EngineError(f"GET /v1/videos/{job_id} answered HTTP {status}: "
                                  f"{error_message(data)}")
        video = self._checked("GET", f"/v1/videos/{job_id}/content", deadline)
        frames = decode_mp4(video)
        if not frames:
            raise EngineError(f"video job {job_id}: the server's mp4 holds no frames")
        metrics = {k: job.get(k) for k in ("inference_time_s", "peak_memory_mb",
                                            "stage_durations", "fps", "num_frames")}
        if isinstance(job.get("metrics"), dict):
            metrics = {**job["metrics"], **{k: v for k, v in metrics.items() if v is not None}}
        return frames, metrics

    # -- what the server says about itself ------------------------------------------------
    def _health(self) -> int | None:
        """GET /health's status, None when nothing answers."""
        try:
            status, _, _ = self._http("GET", "/health", time.monotonic() + 2.0)
        except (OSError, httpx.TransportError, TimeoutError):
            return None
        return status

    def _get_json(self, path: str) -> Any:
        """GET ``path``'s JSON answer, None when there is none (no route, not JSON)."""
        try:
            status, _, data = self._http("GET", path, time.monotonic() + 5.0)
            return json.loads(data) if status == 200 else None
        except (OSError, httpx.TransportError, TimeoutError, ValueError):
            return None

    def _read_version(self) -> None:
        """``/version``: library versions, and what the shipped server applied."""
        answer = self._get_json("/version")
        if isinstance(answer, dict):
            versions = answer.get("versions")
            self.versions = {str(k): str(v) for k, v in versions.items()} \
                if isinstance(versions, dict) else {}
            if answer.get("version"):
                self.versions.setdefault("server", str(answer["version"]))
            if isinstance(answer.get("applied"), dict):
                self.applied["server_applied"] = answer["applied"]
