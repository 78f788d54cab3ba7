"""Bad input to the shipped server, kind by kind, over real HTTP: every field a client sends
is either served exactly as asked (200) or refused at once (400) with the field named and
its allowed range; never a 500, never a silently changed value.

The oracle below states the allowed ranges independently of the server's request models
(vLLM-Omni's ranges: steps 1..200, guidance 0..20; the tiny models' pipelines: sizes in
steps of 16, Wan's 4k+1 frames).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("av")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from served import HOST, shipped_server  # noqa: E402

from pytest_omni_perf.omni_wire import decode_mp4, decode_png, multipart  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
MAX_SEED = 2**64 - 1


@contextmanager
def _client(model: str, cache: Path, logs: Path) -> Iterator[httpx.Client]:
    """An HTTP client of the shipped server serving ``model``, for one module's tests."""
    with shipped_server(model, cache, logs / f"{model}.log") as port, \
            httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def flux(tiny_model_cache: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[httpx.Client]:
    with _client("tiny-flux", tiny_model_cache, tmp_path_factory.mktemp("logs")) as client:
        yield client


@pytest.fixture(scope="module")
def wan(tiny_model_cache: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[httpx.Client]:
    with _client("tiny-wan", tiny_model_cache, tmp_path_factory.mktemp("logs")) as client:
        yield client


# -- the oracle -------------------------------------------------------------------------
def _int(value: Any, low: int, high: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer() and low <= value <= high
    if isinstance(value, str):  # a decimal integer, as JSON forms and query strings spell it
        return re.fullmatch(r"\s*[+-]?\d+(\.0*)?\s*", value) is not None \
            and low <= int(float(value)) <= high
    return isinstance(value, int) and low <= value <= high


def _float(value: Any, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        number = float(value)
    except ValueError:
        return False
    return math.isfinite(number) and low <= number <= high


def _side(value: int) -> bool:
    return 16 <= value <= 4096 and value % 16 == 0


def image_ok(fields: dict[str, Any]) -> bool:
    size = fields["size"]
    parts = size.split("x") if isinstance(size, str) else []
    return (isinstance(fields["prompt"], str) and fields["prompt"] != ""
            and len(parts) == 2 and all(p.isdigit() for p in parts)
            and all(_side(int(p)) for p in parts)
            and _int(fields["num_inference_steps"], 1, 200)
            and _float(fields["guidance_scale"], 0, 20)
            and _int(fields["seed"], 0, MAX_SEED) and _int(fields["n"], 1, 1)
            and fields["response_format"] == "b64_json")


def video_ok(fields: dict[str, str]) -> bool:
    return (_int(fields["width"], 16, 4096) and _side(int(fields["width"]))
            and _int(fields["height"], 16, 4096) and _side(int(fields["height"]))
            and _int(fields["num_frames"], 1, 10**9) and (int(fields["num_frames"]) - 1) % 4 == 0
            and _float(fields["fps"], 0.01, 1000) and _int(fields["num_inference_steps"], 1, 200)
            and _int(fields["seed"], 0, MAX_SEED))


def refused_with_the_field(answer: httpx.Response, fields: dict[str, Any]) -> None:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    param = error["param"]
    assert param in fields, error  # names a field that was sent
    assert error["message"].startswith(f"{param}: "), error


# -- strategies: cheap valid values (tiny outputs), and every kind of bad one ---------------
BAD_TEXT = st.sampled_from(["", "x", "two", "nan", "inf", "-inf", "1e400", "0x10"])
BAD_FORM = BAD_TEXT.filter(bool)  # an empty form field means "not sent": the default
BAD_NUMBER: st.SearchStrategy[Any] = st.sampled_from([math.nan, math.inf, -math.inf, True, False, None, [], {}])
SIZE = st.one_of(
    st.tuples(st.integers(-20, 70), st.integers(-20, 70)).map(lambda s: f"{s[0]}x{s[1]}"),
    st.sampled_from(["0x0", "7x7", "16x16", "32x16", "16X32", "16x", "x16", "16*16", "",
                     "16x16x16", " 16x16", "99999999999999999999x16", "16x16 "]),
    st.integers(), BAD_NUMBER)


@SETTINGS
@given(size=SIZE,
       steps=st.one_of(st.integers(-2, 2), st.sampled_from([201, 10**30, 1.0, 1.5]),
                       BAD_TEXT, BAD_NUMBER),
       guidance=st.one_of(st.floats(-1, 21), BAD_TEXT, BAD_NUMBER),
       seed=st.one_of(st.integers(-2**65, 2**65), st.sampled_from([0, MAX_SEED, MAX_SEED + 1]),
                      BAD_TEXT),
       n=st.one_of(st.integers(-1, 3), BAD_NUMBER),
       response_format=st.sampled_from(["b64_json", "url", "", None]),
       prompt=st.one_of(st.just("a fox"), st.sampled_from(["", None, 5, ["a"]])))
def test_image_fields(flux: httpx.Client, size: Any, steps: Any, guidance: Any, seed: Any,
                      n: Any, response_format: Any, prompt: Any) -> None:
    fields = {"prompt": prompt, "size": size, "num_inference_steps": steps,
              "guidance_scale": guidance, "seed": seed, "n": n,
              "response_format": response_format}
    # Python's json writes NaN and Infinity as many clients do; the server must refuse them.
    answer = flux.post("/v1/images/generations", content=json.dumps(fields).encode(),
                       headers={"Content-Type": "application/json"})
    if not image_ok(fields):
        refused_with_the_field(answer, fields)
        return
    assert answer.status_code == 200, answer.text
    frame = decode_png(answer.json()["data"][0]["b64_json"])
    width, height = (int(p) for p in size.split("x"))
    assert frame.shape == (height, width, 3)  # exactly the size asked for
    assert answer.json()["size"] == f"{width}x{height}"


@SETTINGS
@given(width=st.one_of(st.sampled_from([16, 32, 0, 7, 60, -16, 4112]), BAD_FORM),
       height=st.sampled_from([16, 8, 0]),
       frames=st.one_of(st.sampled_from([1, 5, 0, -1, 2, 4]), BAD_FORM),
       fps=st.one_of(st.sampled_from([1, 16, 0.5, 0, -1, 1e6, 0.001]), BAD_FORM),
       steps=st.sampled_from([1, 0, 201]),
       seed=st.sampled_from([0, -1, MAX_SEED + 1]))
def test_video_form_fields(wan: httpx.Client, width: Any, height: Any, frames: Any,
                           fps: Any, steps: Any, seed: Any) -> None:
    fields = {"prompt": "waves", "width": str(width), "height": str(height),
              "num_frames": str(frames), "fps": str(fps), "num_inference_steps": str(steps),
              "seed": str(seed), "guidance_scale": "1.0"}
    body, content_type = multipart(fields)
    answer = wan.post("/v1/videos/sync", content=body, headers={"Content-Type": content_type})
    if not video_ok(fields):
        refused_with_the_field(answer, fields)
        return
    assert answer.status_code == 200, answer.text
    video = decode_mp4(answer.content)
    assert len(video) == int(frames) and video[0].shape == (int(height), int(width), 3)


# -- the handed case (F6), each as its own test -----------------------------------------------
@pytest.mark.parametrize(("size", "range_text"), [
    ("0x0", "width 0 is not a size this model renders unchanged (allowed: 16..4096 in steps "
            "of 16)"),
    ("7x7", "width 7 is not a size this model renders unchanged"),
    ("64x8000", "height 8000 is not a size this model renders unchanged"),
])
def test_image_size_out_of_range_is_a_400(flux: httpx.Client, size: str,
                                          range_text: str) -> None:
    answer = flux.post("/v1/images/generations", json={"prompt": "a fox", "size": size,
                                                        "num_inference_steps": 2})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "size"
    assert range_text in answer.json()["error"]["message"]


@pytest.mark.parametrize(("field", "value", "text"), [
    # The limit once (a newcomer read "greater than or equal to 1, allowed >= 1").
    ("num_frames", "0", "num_frames: out of range, allowed >= 1 (got '0')"),
    ("num_frames", "4", "num_frames: this model renders 4k+1 frames"),
    ("fps", "nan", "fps: Input should be a finite number, allowed 0.01..1000.0 (got 'nan')"),
    ("fps", "0", "fps: out of range, allowed 0.01..1000.0 (got '0')"),
])
def test_video_job_fields_out_of_range_are_a_400_at_once(wan: httpx.Client, field: str,
                                                         value: str, text: str) -> None:
    fields = {"prompt": "waves", "width": "64", "height": "64", "num_frames": "5",
              "num_inference_steps": "2", field: value}
    body, content_type = multipart(fields)
    began = time.monotonic()
    answer = wan.post("/v1/videos", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400, answer.text  # no job was created to fail later
    assert text in answer.json()["error"]["message"]
    assert time.monotonic() - began < 30


def test_each_endpoint_refuses_the_other_kind_of_model(flux: httpx.Client,
                                                       wan: httpx.Client) -> None:
    body, content_type = multipart({"prompt": "x", "num_frames": 5})
    answer = flux.post("/v1/videos", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400
    assert "this model makes images: use POST /v1/images/generations" in answer.text
    answer = wan.post("/v1/images/generations", json={"prompt": "x", "size": "16x16"})
    assert answer.status_code == 400 and "this model makes videos" in answer.text


def test_json_body_kinds(flux: httpx.Client) -> None:
    for body, text in [(b"[1, 2]", "the JSON body must be an object"),
                       (b"\xff\xfe", "invalid JSON body"), (b"", "the JSON body must be an object"),
                       (b"{}", "prompt: Field required"),
                       (json.dumps({"prompt": "x", "size": "16x16",
                                    "guidance_scale": 1e400}).encode(), "guidance_scale")]:
        answer = flux.post("/v1/images/generations", content=body,
                           headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and text in answer.text, (body, answer.text)
