"""vLLM-Omni's online API subset, both sides: the wire format the ``omni-server`` client
and the shipped server share (request fields, multipart, PNG/mp4 with PyAV, error bodies,
metrics), and the shipped server's stdlib ``http.server`` handler.

Routes (shapes as in vLLM-Omni 0.26/0.30, ``entrypoints/openai/api_server.py``):
``GET /health`` (503 while loading), ``GET /v1/models``, ``GET /version``,
``POST /v1/images/generations`` (JSON), ``POST /v1/videos`` (multipart job),
``GET /v1/videos/{id}``, ``GET /v1/videos/{id}/content`` (404 while running, 422 failed),
``POST /v1/videos/sync`` (mp4 with ``X-*`` headers). One generation runs at a time.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Mapping
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.engines.base import EngineError, GenerationRequest
from pytest_omni_perf.serve import ServerState, log

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# vLLM-Omni's mp4 settings (diffusion/utils/media_utils.py: h264, yuv420p, crf 18), so the
# codec loss a client measures through this server is the one the real server adds.
VIDEO_CODEC = "h264"
VIDEO_CRF = "18"
DEFAULT_FPS = 16
MAX_BODY = 64 * 2**20


def multipart(fields: Mapping[str, Any]) -> tuple[bytes, str]:
    """A multipart/form-data body of plain fields, and its Content-Type."""
    boundary = f"omni-perf-{uuid.uuid4().hex}"
    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                      f"{value}\r\n".encode())
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def image_payload(request: GenerationRequest) -> dict[str, Any]:
    """JSON of ``POST /v1/images/generations`` for ``request``."""
    payload: dict[str, Any] = {"prompt": request.prompt, "n": 1,
                               "size": f"{request.width}x{request.height}",
                               "num_inference_steps": request.num_inference_steps,
                               "seed": request.seed, "response_format": "b64_json"}
    if request.guidance_scale is not None:
        payload["guidance_scale"] = request.guidance_scale
    if request.negative_prompt is not None:
        payload["negative_prompt"] = request.negative_prompt
    return payload


def video_fields(request: GenerationRequest, fps: int = DEFAULT_FPS) -> dict[str, Any]:
    """Form fields of ``POST /v1/videos`` for ``request`` (fps is an int for 0.26)."""
    fields: dict[str, Any] = {"prompt": request.prompt, "width": request.width,
                              "height": request.height, "num_frames": request.num_frames,
                              "num_inference_steps": request.num_inference_steps,
                              "seed": request.seed, "fps": fps}
    if request.guidance_scale is not None:
        fields["guidance_scale"] = request.guidance_scale
    if request.negative_prompt is not None:
        fields["negative_prompt"] = request.negative_prompt
    return fields


def error_message(body: bytes) -> str:
    """The human part of an error body (vLLM, FastAPI or plain text)."""
    try:
        value = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:2000]
    if isinstance(value, dict):
        for candidate in (value.get("error"), value):
            if isinstance(candidate, dict):
                for key in ("message", "detail"):
                    if candidate.get(key):
                        return str(candidate[key])
    return json.dumps(value)[:2000]


def decode_png(data: str) -> npt.NDArray[np.uint8]:
    """A base64 image as an HxWx3 uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_mp4(data: bytes) -> list[npt.NDArray[np.uint8]]:
    """Every frame of an mp4 as HxWx3 uint8 arrays (PyAV)."""
    try:
        import av
    except ImportError:
        raise EngineError("decoding the server's mp4 needs PyAV: pip install av "
                          "(or pytest-omni-perf[server])") from None
    container: Any = av.open(io.BytesIO(data), mode="r")
    with container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def server_metrics(metrics: Mapping[str, Any], e2e_s: float) -> tuple[float, dict[str, Any]]:
    """engine_latency_s and engine_metrics from what a server reported.

    The server's own time is preferred (``inference_time_s``, else ``stage_0_gen_ms``);
    without either the client's e2e time stands in, and ``engine_latency_source`` says which.
    """
    found: dict[str, Any] = {"client_e2e_s": e2e_s}
    peak = metrics.get("peak_memory_mb")
    if isinstance(peak, (int, float)) and not isinstance(peak, bool) and peak > 0:
        found["peak_memory_mb"] = float(peak)
    durations = metrics.get("stage_durations")
    if isinstance(durations, Mapping) and durations:
        found["stage_durations"] = dict(durations)
    for key in ("inference_time_s", "engine_metrics", "fps", "num_frames"):
        if metrics.get(key) is not None:
            found[key] = metrics[key]
    latency, source = e2e_s, "client_e2e"
    if isinstance(metrics.get("inference_time_s"), (int, float)):
        latency, source = float(metrics["inference_time_s"]), "inference_time_s"
    elif isinstance(found.get("stage_durations", {}).get("stage_0_gen_ms"), (int, float)):
        latency, source = found["stage_durations"]["stage_0_gen_ms"] / 1e3, "stage_0_gen_ms"
    found["engine_latency_source"] = source
    return latency, found


class BadRequest(ValueError):
    """The request cannot be served as sent (HTTP 400)."""


def encode_mp4(frames: list[npt.NDArray[np.uint8]], fps: float) -> bytes:
    """HxWx3 uint8 frames as an H.264 mp4 (PyAV)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream: Any = container.add_stream(VIDEO_CODEC, rate=Fraction(fps).limit_denominator(10000))
        stream.width = int(frames[0].shape[1])
        stream.height = int(frames[0].shape[0])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": VIDEO_CRF}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def encode_png(frame: npt.NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def _number(fields: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = fields.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadRequest(f"{name}: expected a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}: expected {kind.__name__}, got {value!r}") from None
    if kind is int and not isinstance(value, int) and float(value) != number:
        raise BadRequest(f"{name}: expected a whole number, got {value!r}")
    return number


def request_from_fields(fields: Mapping[str, Any], *, video: bool) -> GenerationRequest:
    """A GenerationRequest from JSON or form fields; BadRequest names the bad field."""
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt: a non-empty string is required")
    width, height = _number(fields, "width", int), _number(fields, "height", int)
    size = fields.get("size")
    if size:
        try:
            width, height = (int(v) for v in str(size).lower().split("x"))
        except ValueError:
            raise BadRequest(f"size: expected 'WIDTHxHEIGHT', got {size!r}") from None
    defaults = GenerationRequest()
    width, height = width or defaults.width, height or defaults.height
    if width < 1 or height < 1:
        raise BadRequest(f"size: {width}x{height} is not a positive size")
    steps = _number(fields, "num_inference_steps", int, defaults.num_inference_steps)
    if steps < 1:
        raise BadRequest(f"num_inference_steps: must be >= 1, got {steps}")
    negative = fields.get("negative_prompt")
    return GenerationRequest(
        prompt=prompt, width=width, height=height, num_inference_steps=steps,
        num_frames=_number(fields, "num_frames", int) if video else None,
        seed=_number(fields, "seed", int, 0),
        guidance_scale=_number(fields, "guidance_scale", float),
        negative_prompt=str(negative) if negative else None)


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Fields of a multipart/form-data or urlencoded body (file parts are ignored)."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode()).items()}
    if content_type.startswith("application/json"):
        return dict(_json_object(body))
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest(f"expected multipart/form-data, got {content_type or 'no content type'!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise BadRequest("malformed multipart body")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and part.get_filename() is None:
            payload = part.get_payload(decode=True)
            fields[name] = payload.decode() if isinstance(payload, bytes) else str(payload)
    return fields


def _json_object(body: bytes) -> Mapping[str, Any]:
    try:
        value = json.loads(body or b"null")
    except ValueError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("the JSON body must be an object")
    return value


class Handler(BaseHTTPRequestHandler):
    """One request; ``self.server.state`` is the shared ServerState."""

    server: OmniHTTPServer
    server_version = "pytest-omni-perf-serve"

    # -- plumbing -----------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        # vLLM's ErrorResponse shape
        self._json(status, {"error": {"message": message, "type": kind, "code": status}})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise BadRequest(f"body of {length} bytes is over the {MAX_BODY} byte limit")
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        log(format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Health and job polls would drown the lines that explain a failure.
        path = urllib.parse.urlsplit(self.path).path
        polled = path == "/health" or (path.startswith("/v1/videos/")
                                       and not path.endswith("/content"))
        if not (self.command == "GET" and polled and str(int(code) if isinstance(code, int)
                                                         else code) in ("200", "503")):
            super().log_request(code, size)

    # -- routes -------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        state = self.server.state
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        if path == "/health":
            if state.ready.is_set():
                self._json(200, {"status": "healthy"})
            else:
                self._json(503, {"status": "unhealthy", "reason": "model loading"})
        elif path == "/v1/models":
            self._json(200, {"object": "list", "data": [{
                "id": state.model_name, "object": "model", "created": state.created,
                "owned_by": "pytest-omni-perf", "root": state.model_name}]})
        elif path == "/version":
            self._json(200, {"version": state.info.get("version", ""), **state.info})
        elif path.startswith("/v1/videos/"):
            self._video_get(path.removeprefix("/v1/videos/"))
        else:
            self._error(404, f"no route GET {path}", "NotFoundError")

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        routes = {"/v1/images/generations": self._images, "/v1/videos": self._video_job,
                  "/v1/videos/sync": self._video_sync}
        route = routes.get(path)
        if route is None:
            self._error(404, f"no route POST {path}", "NotFoundError")
            return
        if not self.server.state.ready.is_set():
            self._error(503, "the model is still loading", "ServiceUnavailableError")
            return
        try:
            route()
        except BadRequest as exc:
            self._error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            traceback.print_exc()
            self._error(500, f"{type(exc).__name__}: {exc}", "InternalServerError")

    def _images(self) -> None:
        fields = _json_object(self._body())
        if _number(fields, "n", int, 1) != 1:
            raise BadRequest("n: this server generates one image per request")
        if fields.get("response_format", "b64_json") != "b64_json":
            raise BadRequest("response_format: only 'b64_json' is supported")
        request = request_from_fields(fields, video=False)
        frames, metrics = self.server.state.generate(request)
        image = frames[0]
        self._json(200, {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(encode_png(image)).decode(), "url": None,
                      "revised_prompt": None}],
            "output_format": "png", "size": f"{image.shape[1]}x{image.shape[0]}",
            "cot_output": None, "metrics": metrics})

    def _video_request(self) -> tuple[GenerationRequest, float]:
        fields = parse_form(self.headers.get("Content-Type", ""), self._body())
        request = request_from_fields(fields, video=True)
        fps = _number(fields, "fps", float, float(DEFAULT_FPS))
        if fps <= 0:
            raise BadRequest(f"fps: must be > 0, got {fps}")
        return request, fps

    def _video_job(self) -> None:
        state = self.server.state
        request, fps = self._video_request()
        job_id = f"video_gen_{uuid.uuid4().hex}"
        job = {"id": job_id, "object": "video", "model": state.model_name,
               "prompt": request.prompt, "status": "queued", "progress": 0,
               "size": f"{request.width}x{request.height}", "created_at": int(time.time()),
               "completed_at": None, "error": None, "media_type": "video/mp4",
               "file_name": None, "fps": fps, "num_frames": request.num_frames,
               "inference_time_s": None, "stage_durations": {}, "peak_memory_mb": 0.0,
               "metrics": None}
        state.jobs[job_id] = job
        threading.Thread(target=state.run_job, args=(job_id, request, fps),
                         name=f"job-{job_id}", daemon=True).start()
        self._json(200, dict(job))

    def _video_get(self, rest: str) -> None:
        state = self.server.state
        job_id, _, tail = rest.partition("/")
        job = state.jobs.get(job_id)
        if job is None or tail not in ("", "content"):
            self._error(404, "Video not found", "NotFoundError")
        elif tail == "":
            failed = job["status"] == "failed"
            self._json(int(job["error"]["code"]) if failed else 200, dict(job))
        elif job["status"] == "failed":
            self._error(422, "Video generation failed. Check job status for error details.",
                        "UnprocessableEntityError")
        elif job_id not in state.videos:
            self._error(404, "Generation is still in-progress", "NotFoundError")
        else:
            self._send(200, state.videos[job_id], "video/mp4")

    def _video_sync(self) -> None:
        state = self.server.state
        request, fps = self._video_request()
        frames, metrics = state.generate(request)
        self._send(200, encode_mp4(frames, fps), "video/mp4", {
            "X-Request-Id": f"video_sync-{uuid.uuid4().hex}", "X-Model": state.model_name,
            "X-Inference-Time-S": f"{metrics['inference_time_s']:.3f}",
            "X-Stage-Durations": json.dumps(metrics["stage_durations"], separators=(",", ":")),
            "X-Peak-Memory-MB": f"{metrics['peak_memory_mb']:.3f}"})


class OmniHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the ServerState; handler threads never block exit."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        super().__init__(address, Handler)
        self.state = state
