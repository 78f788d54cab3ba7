"""Image edit end to end: ``measure(image=...)`` on the real diffusers engine with the
built-in tiny-flux-kontext, through the shipped server's ``POST /v1/images/edits`` over real
HTTP, and bad edit requests refused with the field named."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("httpx")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from served import HOST, shipped_server  # noqa: E402

from pytest_omni_perf.omni_wire import EDITS_PATH, decode_png, multipart  # noqa: E402

EDIT_TESTS = """
import numpy as np
import pytest

def picture(seed):
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)

@pytest.mark.omni_model("tiny-flux-kontext")
def test_edit(omni_perf):
    result = omni_perf.measure(prompt="a fox", image=picture(0), width=64, height=48,
                               num_inference_steps=3, label="one")
    assert result.frames[0].shape == (48, 64, 3)
    other = omni_perf.measure(prompt="a fox", image=picture(1), width=64, height=48,
                              num_inference_steps=3, label="other")
    # Another input image, another output: the input reached the pipeline.
    assert not np.array_equal(result.frames[0], other.frames[0])

@pytest.mark.omni_model("tiny-flux")
def test_text_model_refuses_an_image(omni_perf):
    omni_perf.measure(prompt="a fox", image=picture(0), width=64, height=64,
                      num_inference_steps=3)
"""


SERVE = "python -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"


def _args(cache: Path, backend: str) -> list[str]:
    return [f"--omni-server-command={SERVE}", "-p", "no:cacheprovider", f"--omni-backend={backend}", f"--omni-cache-dir={cache}",
            "--omni-rounds=2", "--omni-max-rounds=2", "--omni-warmup=0",
            "--omni-profile=eager", "--omni-update-baselines",
            "--omni-report-json=report.json"]


REFUSED = {
    "diffusers": "*FluxPipeline takes no 'image' argument, but the request gives images: it "
                 "is not a model that takes this input*",
    "omni-server": "*server answered HTTP 400 to POST /v1/images/edits: *this model's "
                   "pipeline takes no input image: use POST /v1/images/generations*",
}


@pytest.mark.parametrize("backend", ["diffusers", "omni-server"])
def test_edit_runs(pytester: pytest.Pytester, tiny_model_cache: Path, backend: str) -> None:
    pytester.makepyfile(test_edit=EDIT_TESTS)
    result = pytester.runpytest_subprocess(*_args(tiny_model_cache, backend))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([REFUSED[backend]])
    stored = sorted((pytester.path / "baselines" / "cpu").glob("*test_edit*/eager*"))
    assert [p.name.split("-")[0] for p in stored] == ["eager_one", "eager_other"]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(client: httpx.Client, fields: dict[str, object],
          files: list[tuple[str, str, bytes]]) -> httpx.Response:
    body, content_type = multipart(fields, files)
    return client.post(EDITS_PATH, content=body, headers={"Content-Type": content_type})


def test_edits_endpoint_over_http(tiny_model_cache: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first, second = (_png(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in "ab")
    log = tmp_path / "server.log"
    with shipped_server("tiny-flux-kontext", tiny_model_cache, log) as port, \
            httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120, trust_env=False) as c:
        base = {"prompt": "a fox", "num_inference_steps": 2, "seed": 0}
        # One image, size "auto" (the default): the output has the input's size.
        answer = _post(c, base, [("image", "a.png", first)])
        assert answer.status_code == 200, answer.text
        assert decode_png(answer.json()["data"][0]["b64_json"]).shape == (48, 64, 3)
        sized = _post(c, {**base, "size": "32x32"}, [("image", "a.png", first)])
        assert sized.status_code == 200, sized.text
        image = Image.open(io.BytesIO(base64.b64decode(sized.json()["data"][0]["b64_json"])))
        assert image.size == (32, 32)
        # Flux-Kontext edits one image: two are refused before decoding, with vLLM-Omni's
        # 400 and words (a 500 from deep inside the pipeline until the server knew the limit).
        two = _post(c, base, [("image", "a.png", first), ("image", "b.png", second)])
        assert two.status_code == 400, two.text
        assert two.json()["error"]["message"] == ("Received multiple input images. Only a "
                                                  "single image is supported by this model.")
        assert "from 2 input image(s)" not in log.read_text()
        # Bad edits, each refused with the field named.
        none = _post(c, base, [])
        assert none.status_code == 422
        assert none.json()["error"]["message"] == "Field 'image' or 'url' is required"
        strength = _post(c, {**base, "strength": "1.5"}, [("image", "a.png", first)])
        assert strength.status_code == 400
        assert strength.json()["error"]["message"].startswith("strength: ")
        nan = _post(c, {**base, "strength": "nan"}, [("image", "a.png", first)])
        assert nan.status_code == 400 and "strength" in nan.json()["error"]["message"]
        garbage = _post(c, base, [("image", "a.png", b"not a picture")])
        assert garbage.status_code == 400
        assert garbage.json()["error"]["message"].startswith(
            "request field image[0]: not an image Pillow can read")
        odd = _post(c, base, [("image", "a.png", _png(np.zeros((50, 50, 3), np.uint8)))])
        assert odd.status_code == 400
        assert "size auto (the input image's 50x50)" in odd.json()["error"]["message"]


def test_text_model_has_no_edits(tiny_model_cache: Path, tmp_path: Path) -> None:
    with shipped_server("tiny-flux", tiny_model_cache, tmp_path / "server.log") as port, \
            httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120, trust_env=False) as c:
        answer = _post(c, {"prompt": "a fox"}, [("image", "a.png", _png(
            np.zeros((32, 32, 3), np.uint8)))])
        assert answer.status_code == 400
        assert "takes no input image: use POST /v1/images/generations" in \
            answer.json()["error"]["message"]
