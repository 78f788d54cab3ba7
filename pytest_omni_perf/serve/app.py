"""The shipped server's routes on FastAPI: vLLM-Omni's image/video API subset.

Routes and shapes as in vLLM-Omni 0.26/0.30 (``vllm_omni/entrypoints/openai/api_server.py``):
``GET /health`` (503 while loading), ``GET /v1/models``, ``GET /version``,
``POST /v1/images/generations`` (JSON), ``POST /v1/images/edits`` (multipart: one or more
``image`` or ``image[]`` file parts, ``mask_image``, ``size`` ``auto`` by default),
``POST /v1/videos`` (multipart job; an ``input_reference`` image file for image to video),
``GET /v1/videos/{id}`` (a failed job answers its error status with the job as body),
``GET /v1/videos/{id}/content`` (404 while running, 422 failed), ``POST /v1/videos/sync``
(mp4 with ``X-*`` headers). Request fields are checked by the models in ``protocol``;
their errors answer 400 with vLLM's error body, as vLLM's ``build_app`` maps pydantic's
``RequestValidationError``. HTTP framing (Content-Length, chunked, malformed requests) is
uvicorn's and h11's; multipart and urlencoded bodies are parsed by Starlette's parsers
(python-multipart).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import traceback
import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from pytest_omni_perf.engines.base import GenerationRequest, RequestError
from pytest_omni_perf.engines.diffusers_inputs import too_many_images
from pytest_omni_perf.omni_wire import (
    DEFAULT_FPS, EDITS_PATH, IMAGES_PATH, INPUT_REFERENCE, VIDEOS_PATH, VIDEOS_SYNC_PATH,
    encode_mp4, error_body,
)
from pytest_omni_perf.png import encode_png
from pytest_omni_perf.serve.framing import FramingGuard, without_preamble
from pytest_omni_perf.serve.protocol import (
    ImageEditRequest, ImageGenerationRequest, VideoGenerationRequest, allowed_range,
)
from pytest_omni_perf.request_inputs import image_from_bytes
from pytest_omni_perf.serve.state import ServerState

Asked = TypeVar("Asked", bound=BaseModel)
MAX_BODY = 64 * 2**20
"""Largest request body read (bytes); more answers 413."""


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
"""pydantic's error types for a number outside a Field's ge/gt/le/lt."""


def validation_error(exc: ValidationError | RequestValidationError,
                     model: type[BaseModel] | None = None) -> JSONResponse:
    """HTTP 400 naming every bad field, its allowed range and the value sent."""
    parts, param = [], None
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"] if part != "body")
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc:
            parts.append(message)
            continue
        bounds = allowed_range(model, loc) if model is not None else None
        if bounds and error["type"] in _RANGE_ERRORS:
            # pydantic's "greater than or equal to 1" and the range would say the limit twice.
            message = f"out of range, allowed {bounds}"
        elif bounds and "allowed" not in message:
            message += f", allowed {bounds}"
        parts.append(f"{loc}: {message} (got {error.get('input')!r})")
        param = param or loc
    return _error(400, "; ".join(parts) or "invalid request", param)


def _validated(model: type[Asked], fields: Mapping[str, Any], state: ServerState) -> Asked:
    try:
        return model.model_validate(fields, context={"rules": state.rules})
    except ValidationError as exc:
        raise _Invalid(validation_error(exc, model)) from None


class _Invalid(Exception):
    """A request refused by its model: carries the 400 answer."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__("invalid request")
        self.response = response


async def read_body(request: Request) -> bytes:
    """The whole body, whatever its framing; 413 past ``MAX_BODY``, 400 when cut short."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"body of {declared} bytes is over the {MAX_BODY} byte limit")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise HTTPException(413, f"body is over the {MAX_BODY} byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the client closed the connection before the body ended")
    return b"".join(chunks)


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body, else 400 saying what is wrong."""
    try:
        value = json.loads(body or b"null")
    except ValueError as exc:  # UnicodeDecodeError included
        raise HTTPException(400, f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "the JSON body must be an object")
    return value


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def form_parts(request: Request, body: bytes
                     ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Plain fields of a multipart, urlencoded or JSON body (empty fields left out: an empty
    form field means "not given", as browsers send them) and file parts, (name, content) in
    body order."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        return json_object(body), []
    form: FormData
    try:
        if kind == "multipart/form-data":
            form = await MultiPartParser(request.headers, _once(
                without_preamble(body, content_type))).parse()
        elif kind == "application/x-www-form-urlencoded":
            form = await FormParser(request.headers, _once(body)).parse()
        else:
            raise HTTPException(400, "expected multipart/form-data, got "
                                f"{content_type or 'no content type'!r}")
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed form body: {exc.message}") from None
    try:
        files = [(name, await value.read()) for name, value in form.multi_items()
                 if isinstance(value, UploadFile)]
        return {name: value for name, value in form.multi_items()
                if not isinstance(value, UploadFile) and value != ""}, files
    finally:
        await form.close()


def edit_images(files: list[tuple[str, bytes]]) -> list[bytes]:
    """The input images of ``POST /v1/images/edits``, in body order: its ``image`` parts or
    its ``image[]`` parts (the OpenAI SDK's name for a list), as vLLM-Omni's ``edit_images``
    takes either (``image: list[UploadFile]`` and ``image_array`` aliased ``image[]``,
    api_server.py at 005fd8e). Both names in one body are refused (400): vLLM-Omni reads
    ``image or image_array`` and would drop the ``image[]`` parts without a word."""
    names = {name for name, _ in files if name in ("image", "image[]")}
    if len(names) > 1:
        raise HTTPException(400, "image, image[]: send every input image under one name, "
                            "'image' or 'image[]' (vLLM-Omni ignores the 'image[]' parts "
                            "when 'image' parts come too)")
    return [data for name, data in files if name in names]


def _ready(state: ServerState) -> None:
    if not state.ready.is_set():
        raise HTTPException(503, "the model is still loading")


def build_app(state: ServerState) -> FastAPI:
    """The ASGI application serving ``state``'s model."""
    app = FastAPI(title="pytest-omni-perf serve", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(FramingGuard)

    @app.exception_handler(_Invalid)
    async def _invalid(request: Request, exc: _Invalid) -> JSONResponse:
        return exc.response

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc)

    @app.exception_handler(RequestError)
    async def _bad_generation(request: Request, exc: RequestError) -> JSONResponse:
        # GenerationRequest checks its own fields too (engines/base.py); a value the models
        # let through and it refuses is still the client's error, never a 500.
        return _error(400, str(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"no route {request.method} {request.url.path}"
        return _error(exc.status_code, message)

    @app.get("/health")
    def health() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"status": "healthy"})
        return JSONResponse({"status": "unhealthy", "reason": "model loading"}, 503)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": state.model_name, "object": "model", "created": state.created,
            "owned_by": "pytest-omni-perf", "root": state.model_name}]}

    @app.get("/version")
    def version() -> dict[str, Any]:
        return {"version": state.info.get("version", ""), **state.info}

    @app.post(IMAGES_PATH)
    async def images(request: Request) -> Response:
        _ready(state)
        fields = json_object(await read_body(request))
        asked = _validated(ImageGenerationRequest, fields, state)
        return await image_answer(asked.to_request())

    @app.post(EDITS_PATH)
    async def edits(request: Request) -> Response:
        _ready(state)
        fields, files = await form_parts(request, await read_body(request))
        if "url" in fields or "url[]" in fields:
            raise HTTPException(400, "url: this server does not fetch images; send each "
                                "input image as an 'image' file part")
        asked = _validated(ImageEditRequest, fields, state)
        parts = edit_images(files)
        if not parts:
            # vLLM-Omni answers 422 here, its one non-400 validation answer.
            return _error(422, "Field 'image' or 'url' is required", "image")
        if len(parts) > state.rules.max_images:
            # vLLM-Omni refuses before decoding, with these words (api_server.py edit_images).
            raise HTTPException(400, too_many_images(len(parts), state.rules.max_images))
        images = tuple(image_from_bytes(data, f"image[{index}]")
                       for index, data in enumerate(parts))
        masks = [image_from_bytes(data, "mask_image") for name, data in files
                 if name == "mask_image"]
        return await image_answer(asked.to_request(images, masks[0] if masks else None,
                                                   state.rules))

    async def image_answer(generation: GenerationRequest) -> Response:
        try:
            frames, metrics = await run_in_threadpool(state.generate, generation)
            png = encode_png(frames[0])
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            traceback.print_exc()
            return _error(500, f"{type(exc).__name__}: {exc}")
        height, width = frames[0].shape[:2]
        return JSONResponse({
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(png).decode(), "url": None,
                      "revised_prompt": None}],
            "output_format": "png", "size": f"{width}x{height}", "cot_output": None,
            "metrics": metrics})

    async def video_request(request: Request) -> tuple[VideoGenerationRequest,
                                                        GenerationRequest]:
        _ready(state)
        fields, files = await form_parts(request, await read_body(request))
        if "image_reference" in fields:
            raise HTTPException(400, "image_reference: this server does not fetch images; "
                                f"send the input image as an '{INPUT_REFERENCE}' file part")
        if other := sorted({name for name, _ in files} - {INPUT_REFERENCE}):
            raise HTTPException(400, f"file part {other[0]!r}: POST {VIDEOS_PATH} takes its "
                                f"input image as '{INPUT_REFERENCE}'")
        asked = _validated(VideoGenerationRequest, fields, state)
        references = tuple(image_from_bytes(data, INPUT_REFERENCE) for _, data in files)
        return asked, asked.to_request(state.rules, references)

    @app.post(VIDEOS_PATH)
    async def video_job(request: Request) -> JSONResponse:
        asked, generation = await video_request(request)
        fps = asked.frame_rate(DEFAULT_FPS)
        job_id = f"video_gen_{uuid.uuid4().hex}"
        job = {"id": job_id, "object": "video", "model": state.model_name,
               "prompt": generation.prompt, "status": "queued", "progress": 0,
               "size": f"{generation.width}x{generation.height}",
               "created_at": int(time.time()), "completed_at": None, "error": None,
               "media_type": "video/mp4", "file_name": None, "fps": fps,
               "num_frames": generation.num_frames, "inference_time_s": None,
               "stage_durations": {}, "peak_memory_mb": 0.0, "metrics": None}
        state.jobs[job_id] = job
        threading.Thread(target=state.run_job, args=(job_id, generation, fps),
                         name=f"job-{job_id}", daemon=True).start()
        return JSONResponse(dict(job))

    @app.post(VIDEOS_SYNC_PATH)
    async def video_sync(request: Request) -> Response:
        asked, generation = await video_request(request)
        try:
            frames, metrics = await run_in_threadpool(state.generate, generation)
            mp4 = encode_mp4(frames, asked.frame_rate(DEFAULT_FPS))
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving
            traceback.print_exc()
            return _error(500, f"{type(exc).__name__}: {exc}")
        return Response(mp4, media_type="video/mp4", headers={
            "X-Request-Id": f"video_sync-{uuid.uuid4().hex}", "X-Model": state.model_name,
            "X-Inference-Time-S": f"{metrics['inference_time_s']:.3f}",
            "X-Stage-Durations": json.dumps(metrics["stage_durations"], separators=(",", ":")),
            "X-Peak-Memory-MB": f"{metrics['peak_memory_mb']:.3f}"})

    @app.get(VIDEOS_PATH + "/{job_id}")
    def video_status(job_id: str) -> JSONResponse:
        job = _job(state.jobs, job_id)
        failed = job["status"] == "failed"
        return JSONResponse(dict(job), int(job["error"]["code"]) if failed else 200)

    @app.get(VIDEOS_PATH + "/{job_id}/content")
    def video_content(job_id: str) -> Response:
        job = _job(state.jobs, job_id)
        if job["status"] == "failed":
            return _error(422, "Video generation failed. Check job status for error details.")
        if job_id not in state.videos:
            return _error(404, "Generation is still in-progress")
        return Response(state.videos[job_id], media_type="video/mp4")

    return app


def _job(jobs: Mapping[str, dict[str, Any]], job_id: str) -> dict[str, Any]:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, "Video not found")
    return job
