"""The omni-server backend against the shipped server (``python -m pytest_omni_perf.serve``):
real processes, real HTTP, the built-in tiny models on CPU.

Every failure path is timed: a server that cannot start must fail in seconds with its log,
not after the start timeout, and must leave no process behind.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("av")

from pytest_omni_perf.builtin_models import RECIPE_VERSION, ensure_model  # noqa: E402
from pytest_omni_perf.canonical import CANONICAL_OPTIONS, serve_args  # noqa: E402
from pytest_omni_perf.engines.base import (  # noqa: E402
    EngineError, EngineSpec, GenerationRequest, ProfileUnsupported,
)
from pytest_omni_perf.engines.omni_server import (  # noqa: E402
    OmniServerEngine, command_argv, connect_host, flag_value,
)
from pytest_omni_perf.engines.process import running  # noqa: E402
from pytest_omni_perf.profiles import load_builtin  # noqa: E402
from pytest_omni_perf.serve import build_parser, options_from_args  # noqa: E402
from pytest_omni_perf.omni_wire import (  # noqa: E402
    decode_mp4, error_message, multipart, server_metrics,
)

SERVE = "{python} -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"
EAGER = {"enforce_eager": True}
IMAGE = GenerationRequest(width=64, height=64, num_inference_steps=3)
VIDEO = GenerationRequest(width=64, height=64, num_inference_steps=3, num_frames=5,
                          guidance_scale=1.0)
FAIL_FAST_S = 30.0  # a failing start must end well inside this (the start timeout is 300 s)


@pytest.fixture(scope="session")
def omni_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole session: the tiny models are built once."""
    cache = tmp_path_factory.mktemp("omni-perf-cache")
    for name in ("tiny-flux", "tiny-wan"):
        ensure_model(name, cache)
    return cache


def make_spec(cache: Path, model: str = "tiny-flux", options: dict[str, Any] | None = None,
              command: str = SERVE, **extra: Any) -> EngineSpec:
    fields: dict[str, Any] = {"start_timeout_s": 300.0, "request_timeout_s": 120.0, **extra}
    return EngineSpec(model=model, profile_name="eager", options=options or EAGER,
                      backend="omni-server", server_command=command, cache_dir=str(cache),
                      **fields)


@pytest.fixture
def started(omni_cache: Path) -> Iterator[list[OmniServerEngine]]:
    """Engines a test starts; stopped afterwards even when the test fails."""
    engines: list[OmniServerEngine] = []
    yield engines
    for engine in engines:
        engine.stop()


def start(engines: list[OmniServerEngine], spec: EngineSpec) -> OmniServerEngine:
    engine = OmniServerEngine(spec)
    engines.append(engine)
    engine.start()
    return engine


@pytest.fixture(scope="module")
def flux(omni_cache: Path) -> Iterator[OmniServerEngine]:
    engine = OmniServerEngine(make_spec(omni_cache))
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def wan(omni_cache: Path) -> Iterator[OmniServerEngine]:
    engine = OmniServerEngine(make_spec(omni_cache, "tiny-wan"))
    engine.start()
    yield engine
    engine.stop()


def http_call(engine: OmniServerEngine, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    connection = http.client.HTTPConnection(*engine.base, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        # Header names are case-insensitive (uvicorn sends them lower-case).
        return response.status, response.headers, response.read()
    finally:
        connection.close()


# -- the server's command line ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(load_builtin()))
def test_profile_flags_read_back_into_the_profile(name: str) -> None:
    options = load_builtin()[name].options
    args = build_parser().parse_args(["tiny-flux", "--omni", *serve_args(options)])
    # serve_args leaves out what is vLLM-Omni's default anyway (False, "none", degree 1)
    expected = {k: v for k, v in options.items()
                if not (v is None or v is False or v == "none"
                        or (CANONICAL_OPTIONS[k].group == "parallel" and v is not True
                            and v == 1))}
    assert options_from_args(args) == expected


@pytest.mark.parametrize(("flags", "expected"), [
    (["-tp", "2", "--ulysses-degree", "2", "--ring-degree", "2"],
     {"tensor_parallel_size": 2, "ulysses_degree": 2, "ring_degree": 2}),
    (["--dtype", "half", "--no-enforce-eager"], {"dtype": "float16", "enforce_eager": False}),
    (["--diffusion-quantization-config", '{"method":"fp8","ignored_layers":["img_mod"]}'],
     {"quantization": "fp8", "ignored_layers": ["img_mod"]}),
    (["--cache-backend", "cache_dit", "--cache-config", '{"Fn_compute_blocks":2}'],
     {"cache_backend": "cache_dit", "cache_config": {"Fn_compute_blocks": 2}}),
])
def test_vllm_spellings_are_accepted(flags: list[str], expected: dict[str, Any]) -> None:
    assert options_from_args(build_parser().parse_args(["m", *flags])) == expected


def test_quantization_given_twice_is_refused() -> None:
    args = build_parser().parse_args(["m", "-q", "fp8", "--diffusion-quantization-config",
                                      '{"method":"fp8"}'])
    with pytest.raises(ValueError, match="not both"):
        options_from_args(args)


def test_command_template_keeps_json_braces() -> None:
    template = "vllm serve {model} --omni --port {port} --cache-config '{\"a\": 1}'"
    argv = command_argv(template, "/models/my flux", 8123, {"enforce_eager": True})
    assert argv == ["vllm", "serve", "/models/my flux", "--omni", "--port", "8123",
                    "--cache-config", '{"a": 1}', "--enforce-eager"]
    assert flag_value(argv, "--port") == "8123" and flag_value(argv, "--host") is None
    assert flag_value(["x", "--host=0.0.0.0"], "--host") == "0.0.0.0"
    assert connect_host("0.0.0.0") == connect_host(None) == "127.0.0.1"
    for python in ("python", "python3", "{python}"):
        served = command_argv(SERVE.replace("{python}", python), "tiny-flux", 1, {})
        assert served[:3] == [sys.executable, "-m", "pytest_omni_perf.serve"]
    assert command_argv("python other.py", "m", 1, {})[0] == "python"  # only our server


def test_engine_latency_prefers_the_servers_own_time() -> None:
    assert server_metrics({"inference_time_s": 0.4, "peak_memory_mb": 0.0}, 0.5)[0] == 0.4
    latency, metrics = server_metrics({"stage_durations": {"stage_0_gen_ms": 250.0},
                                       "peak_memory_mb": 6436.0}, 0.5)  # real 0.26 images
    assert latency == 0.25 and metrics["engine_latency_source"] == "stage_0_gen_ms"
    assert metrics["peak_memory_mb"] == 6436.0
    latency, metrics = server_metrics({}, 0.5)
    assert latency == 0.5 and metrics["engine_latency_source"] == "client_e2e"
    assert "peak_memory_mb" not in metrics


def test_vllm_command_refuses_what_vllm_omni_would_silently_ignore(
        omni_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_omni_perf.capabilities import ModelCapabilities
    from pytest_omni_perf.engines import omni_engine, omni_server
    from pytest_omni_perf.hardware import HardwareInfo

    flux = ModelCapabilities("FluxPipeline", compile=True, sequence_parallel=False,
                             cfg_parallel=True, tensor_parallel=True, layerwise_offload=True,
                             cache_acceleration=True, tea_cache=True, hsdp=True,
                             expert_parallel=False, transformer_classes=("FluxTransformer2DModel",))
    asked: list[str] = []

    def discovered(folder: str, timeout_s: float) -> tuple[ModelCapabilities, str]:
        asked.append(folder)
        return flux, "capabilities of FluxPipeline checked"

    monkeypatch.setattr(omni_engine, "capabilities_in_subprocess", discovered)
    monkeypatch.setattr(omni_server, "_CAPABILITIES", {})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object()
                        if name == "vllm_omni" else real_find_spec(name, *a))
    usp = {"enforce_eager": True, "ulysses_degree": 2}
    vllm = "vllm serve {model} --omni --port {port}"
    with pytest.raises(ProfileUnsupported, match="ulysses_degree=2: FluxTransformer2DModel has "
                                                 "no _sp_plan"):
        omni_server.create(make_spec(omni_cache, options=usp, command=vllm), HardwareInfo())
    engine = omni_server.create(make_spec(omni_cache, command=vllm), HardwareInfo())
    assert engine.capabilities_note == "capabilities of FluxPipeline checked"
    # discovered once per model
    assert len(asked) == 1 and asked[0].endswith(f"tiny-flux-r{RECIPE_VERSION}")
    omni_server.create(make_spec(omni_cache, options=usp), HardwareInfo())  # shipped server
    assert len(asked) == 1


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error": {"message": "bad size", "type": "BadRequestError", "code": 400}}', "bad size"),
    (b'{"detail": "Video not found"}', "Video not found"),
    (b"Internal Server Error", "Internal Server Error"),
])
def test_error_bodies(body: bytes, message: str) -> None:
    assert error_message(body) == message


# -- working paths ----------------------------------------------------------------------------

def test_image_through_the_server(flux: OmniServerEngine) -> None:
    first = flux.generate(IMAGE)
    again = flux.generate(IMAGE)
    other = flux.generate(GenerationRequest(width=64, height=64, num_inference_steps=3, seed=1))
    (frame,) = first.frames
    assert frame.shape == (64, 64, 3) and str(frame.dtype) == "uint8"
    assert int(frame.max()) > int(frame.min())  # an image, not a blank
    assert (again.frames[0] == frame).all()  # same seed, same PNG bytes
    assert (other.frames[0] != frame).any()
    metrics = first.engine_metrics
    assert metrics["engine_latency_source"] == "inference_time_s"
    assert first.engine_latency_s == metrics["inference_time_s"] > 0
    assert metrics["client_e2e_s"] >= first.engine_latency_s
    assert metrics["stage_durations"]["stage_0_gen_ms"] > 0
    info = flux.describe()
    assert info.pids and all(running(p) for p in info.pids)
    assert "--enforce-eager" in info.applied["command"]
    assert info.applied["server_applied"]["pipeline"] == "FluxPipeline"
    assert info.versions["diffusers"]


def test_video_through_the_server(wan: OmniServerEngine) -> None:
    output = wan.generate(VIDEO)
    assert len(output.frames) == 5
    assert all(f.shape == (64, 64, 3) for f in output.frames)
    assert output.engine_metrics["num_frames"] == 5
    assert output.engine_metrics["fps"] == 16
    assert output.engine_metrics["inference_time_s"] == output.engine_latency_s > 0


def test_size_the_model_cannot_render_is_refused_at_once(wan: OmniServerEngine) -> None:
    # Wan needs sizes divisible by 16. The old server took the job and let it fail in torch
    # (HTTP 500 on the status GET); the request models now refuse it with the field named.
    bad = GenerationRequest(width=60, height=64, num_inference_steps=2, num_frames=5)
    with pytest.raises(EngineError, match=r"HTTP 400 to POST /v1/videos: width: width 60 is "
                       r"not a size this model renders unchanged \(allowed: 16\.\.4096 in "
                       r"steps of 16\)"):
        wan.generate(bad)
    assert wan.alive


def test_server_api_edges(wan: OmniServerEngine) -> None:
    status, _, body = http_call(wan, "GET", "/v1/models")
    served = json.loads(body)["data"][0]["id"]
    assert status == 200 and served.endswith(f"tiny-wan-r{RECIPE_VERSION}")
    status, _, body = http_call(wan, "POST", "/v1/images/generations", b"{not json",
                                {"Content-Type": "application/json"})
    assert status == 400 and "invalid JSON body" in json.loads(body)["error"]["message"]
    status, _, body = http_call(wan, "POST", "/v1/images/generations",
                                json.dumps({"prompt": "x", "size": "big"}).encode())
    assert status == 400 and "size" in json.loads(body)["error"]["message"]
    assert http_call(wan, "GET", "/v1/videos/video_gen_unknown")[0] == 404
    # A job long enough to be caught running: content is 404 until it completes.
    fields = {"prompt": "a fox", "width": 64, "height": 64, "num_frames": 5,
              "num_inference_steps": 40, "seed": 0, "guidance_scale": 1.0}
    body, content_type = multipart(fields)
    status, _, data = http_call(wan, "POST", "/v1/videos", body, {"Content-Type": content_type})
    job = json.loads(data)
    assert status == 200 and job["status"] in ("queued", "in_progress")
    assert http_call(wan, "GET", f"/v1/videos/{job['id']}/content")[0] == 404
    # The synchronous route waits for the lock, so it also waits out the job above.
    fields["num_inference_steps"] = 3
    body, content_type = multipart(fields)
    status, headers, data = http_call(wan, "POST", "/v1/videos/sync", body,
                                      {"Content-Type": content_type})
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert float(headers["X-Inference-Time-S"]) > 0
    assert "stage_0_gen_ms" in json.loads(headers["X-Stage-Durations"])
    assert len(decode_mp4(data)) == 5
    status, _, data = http_call(wan, "GET", f"/v1/videos/{job['id']}")
    assert status == 200 and json.loads(data)["status"] == "completed"


def test_image_response_has_vllm_omni_shape(flux: OmniServerEngine) -> None:
    payload = {"prompt": "a fox", "size": "64x64", "n": 1, "num_inference_steps": 2, "seed": 3,
               "response_format": "b64_json"}
    status, _, data = http_call(flux, "POST", "/v1/images/generations",
                                json.dumps(payload).encode(), {"Content-Type": "application/json"})
    answer = json.loads(data)
    assert status == 200
    assert set(answer) >= {"created", "data", "output_format", "size", "metrics"}
    assert answer["size"] == "64x64" and answer["output_format"] == "png"
    assert base64.b64decode(answer["data"][0]["b64_json"]).startswith(b"\x89PNG")
    assert set(answer["metrics"]) >= {"stage_durations", "peak_memory_mb"}


# -- failures ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "suffix", "expected"), [
    ("tiny-flux", " --no-such-flag", ["exit code 2", "unrecognized arguments: --no-such-flag"]),
    ("{missing}", "", ["exit code 2", "neither a built-in", "nor an existing local folder"]),
], ids=["bad-flag", "missing-model"])
def test_start_failure_is_fast_and_shows_the_log(omni_cache: Path, tmp_path: Path,
                                                 started: list[OmniServerEngine], model: str,
                                                 suffix: str, expected: list[str]) -> None:
    model = model.replace("{missing}", str(tmp_path / "no-such-model"))
    spec = make_spec(omni_cache, model, command=SERVE + suffix)
    began = time.monotonic()
    with pytest.raises(EngineError, match="exited during start-up") as failure:
        start(started, spec)
    assert time.monotonic() - began < FAIL_FAST_S
    for text in expected:
        assert text in str(failure.value)  # the log tail rides along in the message
    assert started[0].pids() == [] and not started[0].alive


def test_unsupported_profile_skips_with_the_server_reason(
        omni_cache: Path, started: list[OmniServerEngine]) -> None:
    spec = make_spec(omni_cache, options={"enforce_eager": True, "cache_backend": "tea_cache"})
    began = time.monotonic()
    with pytest.raises(ProfileUnsupported, match="tea_cache: the diffusers backend has no "
                                                 "TeaCache"):
        start(started, spec)
    assert time.monotonic() - began < FAIL_FAST_S
    assert not started[0].alive


def test_hard_coded_port_in_use_fails_before_starting(omni_cache: Path,
                                                      started: list[OmniServerEngine]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = SERVE.replace("{port}", str(port))
        with pytest.raises(EngineError, match=f"port {port} is already in use"):
            start(started, make_spec(omni_cache, command=command))
    assert started[0]._process is None  # nothing was started


def _kill_when_generating(engine: OmniServerEngine, pids: list[int]) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "generating image" in engine.log_path.read_text(errors="replace"):
                pids.extend(engine.pids())
                os.kill(pids[0], signal.SIGKILL)
                return
            time.sleep(0.02)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_server_killed_mid_request(omni_cache: Path, started: list[OmniServerEngine]) -> None:
    engine = start(started, make_spec(omni_cache))
    killed: list[int] = []
    watcher = _kill_when_generating(engine, killed)
    long_request = GenerationRequest(width=256, height=256, num_inference_steps=200)
    with pytest.raises(EngineError, match="the server died [(]signal 9[)]"):
        engine.generate(long_request)
    watcher.join()
    assert killed and not any(running(p) for p in killed)
    assert engine.pids() == [] and not engine.alive


def test_request_timeout_kills_the_server(omni_cache: Path,
                                          started: list[OmniServerEngine]) -> None:
    engine = start(started, make_spec(omni_cache, request_timeout_s=1.0))
    tree = engine.pids()
    long_request = GenerationRequest(width=256, height=256, num_inference_steps=200)
    began = time.monotonic()
    with pytest.raises(EngineError, match="did not answer the request within 1 s: killed it"):
        engine.generate(long_request)
    assert time.monotonic() - began < 15
    assert tree and not any(running(p) for p in tree)


# -- through the plugin -----------------------------------------------------------------------

PERF_TESTS = """
import pytest

def test_image(omni_perf):
    result = omni_perf.measure(width=64, height=64, num_inference_steps=2)
    assert result.median_s > 0

@pytest.mark.omni_model("tiny-wan")
def test_video(omni_perf):
    result = omni_perf.measure(width=64, height=64, num_inference_steps=2, num_frames=5,
                               guidance_scale=1.0)
    assert result.median_s > 0
"""


def test_plugin_runs_the_server_backend(pytester: pytest.Pytester, omni_cache: Path) -> None:
    pytester.makepyfile(test_served=PERF_TESTS)
    command = SERVE.replace("{python}", "python")  # the README's spelling
    args = ["-p", "no:cacheprovider", "--omni-backend=omni-server",
            f"--omni-server-command={command}", f"--omni-cache-dir={omni_cache}",
            f"--omni-baseline-dir={pytester.path / 'stored'}", "--omni-rounds=2",
            "--omni-warmup=1", "--omni-profile=eager,tea_cache", "-rs"]
    first = pytester.runpytest_subprocess(*args, "--omni-update-baselines")
    first.assert_outcomes(passed=2, skipped=2)
    first.stdout.fnmatch_lines(["*SKIPPED*tea_cache: the diffusers backend has no TeaCache*"])
    # Compared with what the first run stored, on two xdist workers at once.
    second = pytester.runpytest_subprocess(*args, "-n", "2")
    second.assert_outcomes(passed=2, skipped=2)
    assert (pytester.path / "stored" / "cpu").is_dir()
