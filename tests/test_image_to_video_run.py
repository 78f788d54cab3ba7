"""Image to video end to end: ``measure(image=..., num_frames=...)`` on the built-in
tiny-wan-i2v through the real diffusers engine and through the shipped server's
``POST /v1/videos`` over real HTTP (the image as its ``input_reference`` file part), and the
mistakes users make refused with the field named: an image given to a text-to-video model,
no image given to an image-to-video one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("httpx")
pytest.importorskip("av")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from served import HOST, shipped_server  # noqa: E402

from pytest_omni_perf.omni_wire import (  # noqa: E402
    INPUT_REFERENCE, VIDEOS_PATH, VIDEOS_SYNC_PATH, decode_mp4, multipart,
)

I2V_TESTS = """
import numpy as np
import pytest

def picture(seed):
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)

@pytest.mark.omni_model("tiny-wan-i2v")
def test_i2v(omni_perf):
    result = omni_perf.measure(prompt="a fox", image=picture(0), width=32, height=32,
                               num_frames=5, num_inference_steps=2, label="one")
    assert len(result.frames) == 5 and result.frames[0].shape == (32, 32, 3)

@pytest.mark.omni_model("tiny-wan")
def test_text_to_video_model_refuses_an_image(omni_perf):
    omni_perf.measure(prompt="a fox", image=picture(0), width=32, height=32, num_frames=5,
                      num_inference_steps=2)

@pytest.mark.omni_model("tiny-wan-i2v")
def test_i2v_model_without_an_image(omni_perf):
    omni_perf.measure(prompt="a fox", width=32, height=32, num_frames=5,
                      num_inference_steps=2)
"""

SERVE = "python -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"

REFUSED = {
    "diffusers": [
        "*WanPipeline takes no 'image' argument, but the request gives images: it is not a "
        "model that takes this input*",
        "*WanImageToVideoPipeline needs an input image (request field images is empty): it "
        "makes its output from one; give measure(image=...)*"],
    "omni-server": [
        "*server answered HTTP 400 to POST /v1/videos: input_reference: this model's pipeline "
        "takes no input image (it makes videos from text); send no input_reference*",
        "*server answered HTTP 400 to POST /v1/videos: input_reference is required: this "
        "model makes videos from an input image (image to video); send it as a file part*"],
}


@pytest.mark.parametrize("backend", ["diffusers", "omni-server"])
def test_image_to_video_runs(pytester: pytest.Pytester, tiny_model_cache: Path,
                             backend: str) -> None:
    pytester.makepyfile(test_i2v=I2V_TESTS)
    result = pytester.runpytest_subprocess(
        f"--omni-server-command={SERVE}", "-p", "no:cacheprovider", f"--omni-backend={backend}",
        f"--omni-cache-dir={tiny_model_cache}", "--omni-rounds=2", "--omni-max-rounds=2",
        "--omni-warmup=0", "--omni-profile=eager", "--omni-update-baselines",
        "--omni-report-json=report.json")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random(REFUSED[backend])
    report = json.loads((pytester.path / "report.json").read_text())
    [measured] = [r for r in report["results"] if r["nodeid"].endswith("test_i2v[eager]")]
    request = measured["measurement"]["request"]
    # The input image is part of the request the baseline keeps (by its pixel digest).
    assert request["num_frames"] == 5 and request["images"][0]["width"] == 32
    assert request["images"][0]["digest"].startswith("sha256:")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(client: httpx.Client, path: str, fields: dict[str, object],
          files: list[tuple[str, str, bytes]]) -> httpx.Response:
    body, content_type = multipart(fields, files)
    return client.post(path, content=body, headers={"Content-Type": content_type})


def test_videos_endpoints_take_an_input_reference(tiny_model_cache: Path, tmp_path: Path
                                                  ) -> None:
    rng = np.random.default_rng(0)
    picture = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    log = tmp_path / "server.log"
    base = {"prompt": "a fox", "width": 32, "height": 32, "num_frames": 5,
            "num_inference_steps": 2, "seed": 0}
    reference = [(INPUT_REFERENCE, "in.png", picture)]
    with shipped_server("tiny-wan-i2v", tiny_model_cache, log) as port, \
            httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120, trust_env=False) as c:
        sync = _post(c, VIDEOS_SYNC_PATH, base, reference)
        assert sync.status_code == 200, sync.text
        assert len(decode_mp4(sync.content)) == 5
        assert "video 5 frames from 1 input image(s) 32x32" in log.read_text()
        job = _post(c, VIDEOS_PATH, base, reference)
        assert job.status_code == 200, job.text
        assert job.json()["status"] in ("queued", "in_progress", "completed")
        # Mistakes, each refused with the field named.
        answers = {
            "none": _post(c, VIDEOS_SYNC_PATH, base, []),
            "two": _post(c, VIDEOS_SYNC_PATH, base, reference * 2),
            "garbage": _post(c, VIDEOS_SYNC_PATH, base, [(INPUT_REFERENCE, "x.png", b"no")]),
            "other part": _post(c, VIDEOS_PATH, base, [("image", "in.png", picture)]),
            "url": _post(c, VIDEOS_PATH, {**base, "image_reference": '{"image_url": "x"}'},
                         []),
        }
        messages = {k: (v.status_code, v.json()["error"]["message"]) for k, v in answers.items()}
    assert messages == {
        "none": (400, "input_reference is required: this model makes videos from an input "
                      "image (image to video); send it as a file part"),
        "two": (400, "input_reference: one input image per request, got 2"),
        "garbage": (400, messages["garbage"][1]),
        "other part": (400, "file part 'image': POST /v1/videos takes its input image as "
                            "'input_reference'"),
        "url": (400, "image_reference: this server does not fetch images; send the input "
                     "image as an 'input_reference' file part"),
    }
    assert messages["garbage"][1].startswith(
        "request field input_reference: not an image Pillow can read")


def test_text_to_video_model_refuses_an_input_reference(tiny_model_cache: Path,
                                                         tmp_path: Path) -> None:
    picture = _png(np.zeros((32, 32, 3), np.uint8))
    with shipped_server("tiny-wan", tiny_model_cache, tmp_path / "server.log") as port, \
            httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120, trust_env=False) as c:
        answer = _post(c, VIDEOS_SYNC_PATH, {"prompt": "a fox", "num_frames": 5},
                       [(INPUT_REFERENCE, "in.png", picture)])
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "input_reference: this model's pipeline takes no input image (it makes videos from "
        "text); send no input_reference")
