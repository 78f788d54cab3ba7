"""Multi-image edit end to end: ``measure(images=[a, b])`` on the built-in
tiny-qwen-image-edit-plus (diffusers' ``QwenImageEditPlusPipeline``, Qwen-Image-Edit-2509's
layout) through the real diffusers engine and through the shipped server over real HTTP.

Cost: the pipeline VAE-encodes every input image at ~1 MP whatever its size
(``VAE_IMAGE_SIZE`` in pipeline_qwenimage_edit_plus.py, as in vLLM-Omni's copy of it), and
its transformer attends over those latents (~8k tokens for two images): one two-image
request at 64x64 and 2 steps takes ~4.4 s on the quiet 2-core CPU, one image ~1.7 s. So the
runs use 2 rounds, no warm-up and one label. Not 1 step: Qwen-Image's scheduler
(``shift_terminal`` 0.02) stretches a one-sigma schedule by 0/0, and the picture is NaN.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("httpx")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from served import HOST, shipped_server  # noqa: E402

from pytest_omni_perf.omni_wire import EDITS_PATH, decode_png, multipart  # noqa: E402

EDIT_PLUS_TESTS = """
import numpy as np
import pytest

def picture(seed, height, width):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)

@pytest.mark.omni_model("tiny-qwen-image-edit-plus")
def test_two_images(omni_perf):
    a, b = picture(0, 64, 64), picture(1, 48, 80)
    two = omni_perf.measure(prompt="the cat of picture 1 on the mat of picture 2",
                            images=[a, b], width=64, height=64, num_inference_steps=2,
                            label="two")
    assert two.frames[0].shape == (64, 64, 3)
"""

SERVE = "python -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"


@pytest.mark.parametrize("backend", ["diffusers", "omni-server"])
def test_two_image_edit_runs(pytester: pytest.Pytester, tiny_model_cache: Path,
                             backend: str) -> None:
    """Two input images reach QwenImageEditPlusPipeline as its ``image`` list: on the
    diffusers engine, and through the omni-server client, which sends each as an ``image``
    file part of POST /v1/images/edits to the shipped server."""
    pytester.makepyfile(test_plus=EDIT_PLUS_TESTS)
    result = pytester.runpytest_subprocess(
        f"--omni-server-command={SERVE}", "-p", "no:cacheprovider", f"--omni-backend={backend}",
        f"--omni-cache-dir={tiny_model_cache}", "--omni-rounds=2", "--omni-max-rounds=2",
        "--omni-warmup=0", "--omni-profile=eager", "--omni-update-baselines",
        "--omni-report-json=report.json")
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "report.json").read_text())
    requests = {r["label"]: r["measurement"]["request"] for r in report["results"]}
    assert [(i["width"], i["height"]) for i in requests["two"]["images"]] == [(64, 64), (80, 48)]
    stored = sorted((pytester.path / "baselines" / "cpu").glob("*test_two_images*/eager*"))
    assert [p.name.split("-")[0] for p in stored] == ["eager_two"]


def _png(seed: int, height: int, width: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(client: httpx.Client, fields: dict[str, object],
          files: list[tuple[str, str, bytes]]) -> httpx.Response:
    body, content_type = multipart(fields, files)
    return client.post(EDITS_PATH, content=body, headers={"Content-Type": content_type})


def test_edits_endpoint_takes_several_images_as_vllm_omni_does(tiny_model_cache: Path,
                                                              tmp_path: Path) -> None:
    """POST /v1/images/edits takes the input images as repeated ``image`` parts or as
    ``image[]`` parts (the OpenAI SDK's list name), as vLLM-Omni's ``edit_images``; both give
    the same picture. One image still edits; a body mixing the names is refused by name."""
    a, b = _png(0, 64, 64), _png(1, 48, 80)
    log = tmp_path / "server.log"
    with shipped_server("tiny-qwen-image-edit-plus", tiny_model_cache, log) as port, \
            httpx.Client(base_url=f"http://{HOST}:{port}", timeout=300, trust_env=False) as c:
        base = {"prompt": "the cat of picture 1 on the mat of picture 2",
                "num_inference_steps": 2, "seed": 0}
        mixed = _post(c, base, [("image", "a.png", a), ("image[]", "b.png", b)])
        assert mixed.status_code == 400
        assert mixed.json()["error"]["message"].startswith(
            "image, image[]: send every input image under one name")
        named = _post(c, base, [("image", "a.png", a), ("image", "b.png", b)])
        assert named.status_code == 200, named.text
        assert "from 2 input image(s)" in log.read_text()
        listed = _post(c, base, [("image[]", "a.png", a), ("image[]", "b.png", b)])
        assert listed.status_code == 200, listed.text
        two = decode_png(named.json()["data"][0]["b64_json"])
        assert two.shape == (64, 64, 3)  # size auto: the first input image's
        assert np.array_equal(two, decode_png(listed.json()["data"][0]["b64_json"]))
        one = _post(c, base, [("image", "a.png", a)])
        assert one.status_code == 200, one.text
        assert not np.array_equal(two, decode_png(one.json()["data"][0]["b64_json"]))
