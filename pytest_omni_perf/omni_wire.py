"""vLLM-Omni's image/video HTTP API as both ends see it: field names, payloads, media codecs,
the error-body shape, and the shipped server's exit codes.

Neither side's program owns this module: the shipped server (``pytest_omni_perf.serve``)
and the ``omni-server`` client (``engines/omni_server.py``) both import it, and it imports
nothing from the package at run time. Shapes follow vLLM-Omni's
``vllm_omni/entrypoints/openai/protocol/images.py`` and ``protocol/videos.py`` and vLLM's
``ErrorResponse`` (``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_omni_perf.request import GenerationRequest

# -- the shipped server's exit codes, read by the client during start-up ------------------
EXIT_STOPPED = 0
"""Stopped by SIGTERM/SIGINT."""
EXIT_LOAD_FAILED = 1
"""The model failed to load (traceback in the log)."""
EXIT_USAGE = 2
"""Bad arguments or model."""
EXIT_UNSUPPORTED = 3
"""The diffusers engine cannot honour the profile; a stderr line ``UNSUPPORTED: <reason>``."""
EXIT_ADDRESS_IN_USE = 4
"""The address cannot be bound (port in use)."""
UNSUPPORTED_PREFIX = "UNSUPPORTED: "

# -- routes and media --------------------------------------------------------------------
IMAGES_PATH = "/v1/images/generations"
EDITS_PATH = "/v1/images/edits"
"""Image edit: multipart, one ``image`` file part per input image, ``mask_image`` as a file,
the other fields as form fields (vLLM-Omni's ``edit_images``, api_server.py at 005fd8e)."""
VIDEOS_PATH = "/v1/videos"
VIDEOS_SYNC_PATH = "/v1/videos/sync"
INPUT_REFERENCE = "input_reference"
"""Image to video: the multipart file part of ``POST /v1/videos`` (and ``/v1/videos/sync``)
that carries the input image (vLLM-Omni's ``create_video``: ``input_reference: UploadFile``
in api_server.py; serving_video.py at 0131cb5 passes it as ``multi_modal_data["image"]``)."""
# vLLM-Omni's mp4 settings (diffusion/utils/media_utils.py: h264, yuv420p, crf 18), so the
# codec loss a client measures through the shipped server is the one the real server adds.
VIDEO_CODEC = "h264"
VIDEO_CRF = "18"
DEFAULT_FPS = 16
"""Frames per second the client asks for (an int: vLLM-Omni 0.26 takes only ints)."""

ERROR_TYPES: Mapping[int, str] = {
    400: "BadRequestError", 404: "NotFoundError", 405: "MethodNotAllowedError",
    413: "RequestEntityTooLargeError", 422: "UnprocessableEntityError",
    500: "InternalServerError", 503: "ServiceUnavailableError",
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body for ``status``: ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "Error"),
                      "param": param, "code": status}}


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


# -- requests ----------------------------------------------------------------------------
def multipart(fields: Mapping[str, Any],
              files: Sequence[tuple[str, str, bytes]] = ()) -> tuple[bytes, str]:
    """A multipart/form-data body of plain fields and ``files`` (name, file name, PNG
    bytes; a name may repeat, as ``image`` does for several input images), and its
    Content-Type."""
    boundary = f"omni-perf-{uuid.uuid4().hex}"
    chunks = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
              f"{value}\r\n".encode() for name, value in fields.items()]
    for name, filename, data in files:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                      f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
                      + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# Sampling fields each endpoint has (vLLM-Omni's protocol/images.py ImageGenerationRequest
# and protocol/videos.py VideoGenerationRequest): images have no guidance_scale_2 or fps.
IMAGE_SAMPLING = ("negative_prompt", "guidance_scale", "true_cfg_scale", "flow_shift")
VIDEO_SAMPLING = IMAGE_SAMPLING + ("guidance_scale_2",)
UNTAKEN_PREFIX = "this model's pipeline does not take "
"""How the shipped server's 400 begins when the model cannot take a request field."""


def unsent_fields(request: GenerationRequest) -> list[str]:
    """Sampling fields of ``request`` its endpoint has no field for (a server would drop
    them silently): the client refuses such a request instead of sending it."""
    if request.is_video:
        return []
    return [name for name in ("guidance_scale_2",) if getattr(request, name) is not None]


def image_payload(request: GenerationRequest) -> dict[str, Any]:
    """JSON of ``POST /v1/images/generations`` for ``request``; its extra_body's fields are
    merged in at the top level, as vLLM-Omni's benchmark client merges ``extra_body``."""
    payload: dict[str, Any] = {"prompt": request.prompt, "n": 1,
                               "size": f"{request.width}x{request.height}",
                               "num_inference_steps": request.num_inference_steps,
                               "seed": request.seed, "response_format": "b64_json"}
    for name in IMAGE_SAMPLING:
        if (value := getattr(request, name)) is not None:
            payload[name] = value
    return {**payload, **request.extra_body}


def edit_parts(request: GenerationRequest) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    """Form fields and file parts of ``POST /v1/images/edits`` for ``request``: its input
    images as PNG (their lossless bytes, never re-encoded), the mask, strength."""
    fields = image_payload(request)
    if request.strength is not None:
        fields["strength"] = request.strength
    files = [("image", f"image-{index}.png", item.png)
             for index, item in enumerate(request.images)]
    if request.mask is not None:
        files.append(("mask_image", "mask.png", request.mask.png))
    return fields, files


def video_fields(request: GenerationRequest, fps: int = DEFAULT_FPS) -> dict[str, Any]:
    """Form fields of ``POST /v1/videos`` for ``request`` (its own fps wins over ``fps``);
    extra_body's fields are added, objects and lists as JSON text."""
    fields: dict[str, Any] = {"prompt": request.prompt, "width": request.width,
                              "height": request.height, "num_frames": request.num_frames,
                              "num_inference_steps": request.num_inference_steps,
                              "seed": request.seed, "fps": request.fps or fps}
    for name in VIDEO_SAMPLING:
        if (value := getattr(request, name)) is not None:
            fields[name] = value
    for key, value in request.extra_body.items():
        fields[key] = json.dumps(value) if isinstance(value, (dict, list, bool)) or \
            value is None else value
    return fields


def video_parts(request: GenerationRequest, fps: int = DEFAULT_FPS
                ) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    """Form fields and file parts of ``POST /v1/videos`` (or ``/sync``) for ``request``: its
    input image, if any, as the ``input_reference`` PNG (lossless bytes, never re-encoded).
    ValueError naming the request field the endpoint has no place for."""
    if request.video:
        raise ValueError("request field video: the omni-server client sends no input video "
                         "(video to video) yet; an input image it sends as input_reference")
    if request.mask is not None or request.strength is not None:
        field = "mask" if request.mask is not None else "strength"
        raise ValueError(f"request field {field}: POST {VIDEOS_PATH} has no {field} (it takes "
                         "one input image, input_reference)")
    if len(request.images) > 1:
        raise ValueError(f"request field images: POST {VIDEOS_PATH} takes one input image "
                         f"(input_reference), the request gives {len(request.images)}")
    files = [(INPUT_REFERENCE, "input.png", item.png) for item in request.images]
    return video_fields(request, fps), files


# -- answers -----------------------------------------------------------------------------
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


# -- media -------------------------------------------------------------------------------
def decode_png(data: str) -> npt.NDArray[np.uint8]:
    """A base64 image as an HxWx3 uint8 array (ValueError/OSError when it is none)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError("the server's mp4 needs PyAV: pip install av "
                          "(or pytest-omni-perf[server])") from None
    return av


def encode_mp4(frames: list[npt.NDArray[np.uint8]], fps: float) -> bytes:
    """HxWx3 uint8 frames as an H.264 mp4 at ``fps`` frames per second (PyAV)."""
    av = _av()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=Fraction(fps).limit_denominator(10000))
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


def decode_mp4(data: bytes) -> list[npt.NDArray[np.uint8]]:
    """Every frame of an mp4 as HxWx3 uint8 arrays (PyAV; ImportError names the extra)."""
    av = _av()
    with av.open(io.BytesIO(data), mode="r") as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
