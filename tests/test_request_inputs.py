"""Conditioning inputs of a request (``measure(image=..., images=[...], mask=, video=,
strength=)``): conversion, checks naming the field, the pixel digest in the request key."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_omni_perf.request import GenerationRequest, RequestError
from pytest_omni_perf.request_inputs import input_image, inputs_of


def _picture(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_same_pixels_are_the_same_input_whatever_their_source(tmp_path: Path) -> None:
    pixels = _picture(0)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).convert("RGBA").save(tmp_path / "a-alpha.png")
    from_array = input_image(pixels, "image")
    assert from_array == input_image(Image.fromarray(pixels), "image")
    assert from_array == input_image(str(tmp_path / "a.png"), "image")
    assert from_array == input_image(tmp_path / "a-alpha.png", "image")
    assert (from_array.width, from_array.height) == (32, 24)
    assert np.array_equal(from_array.pixels(), pixels)  # PNG keeps every pixel
    other = input_image(_picture(1), "image")
    assert other != from_array and other.digest != from_array.digest
    assert from_array.digest.startswith("sha256:") and len(from_array.digest) == 7 + 24


@pytest.mark.parametrize(("value", "message"), [
    ("missing.png", "request field image: no image file at 'missing.png'"),
    (np.zeros((8, 8, 3), dtype=np.float32), "request field image: expected uint8 pixels "
                                            "(0..255), got dtype float32*"),
    (np.zeros((8, 8), dtype=np.uint8), "request field image: expected shape (height, width, 3), "
                                       "got (8, 8)"),
    (np.zeros((8, 8, 4), dtype=np.uint8), "request field image: expected shape (height, width, "
                                          "3), got (8, 8, 4)"),
    (12, "request field image: expected an HxWx3 uint8 numpy array, a PIL image or a path to "
         "an image file, got int"),
])
def test_bad_image_names_the_field(value: object, message: str) -> None:
    with pytest.raises(RequestError) as info:
        input_image(value, "image")
    assert _matches(str(info.value), message), str(info.value)


def _matches(text: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(text, pattern.replace("[", "[[]"))


def test_not_an_image_file(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(RequestError, match=r"^request field images\[1\]: '.*notes.png' is not "
                                           r"an image Pillow can read"):
        inputs_of(images=[_picture(0), tmp_path / "notes.png"])


@pytest.mark.parametrize(("strength", "message"), [
    (float("nan"), "request field strength: expected a finite number in (0, 1], got nan"),
    (0.0, "request field strength: expected a finite number in (0, 1], got 0.0"),
    (1.5, "request field strength: expected a finite number in (0, 1], got 1.5"),
    (-0.2, "request field strength: expected a finite number in (0, 1], got -0.2"),
    ("0.5", "request field strength: expected a finite number in (0, 1], got *0.5*"),
])
def test_bad_strength_names_the_field(strength: object, message: str) -> None:
    with pytest.raises(RequestError) as info:
        GenerationRequest(strength=strength, **inputs_of(image=_picture(0)))  # type: ignore[arg-type]
    assert _matches(str(info.value), message), str(info.value)


def test_inputs_that_need_an_image() -> None:
    with pytest.raises(RequestError, match="^request field strength: .*give image= or video="):
        GenerationRequest(strength=0.5)
    with pytest.raises(RequestError, match="^request field mask: a mask needs an input image"):
        GenerationRequest(**inputs_of(mask=_picture(0)))
    assert GenerationRequest(strength=1.0, **inputs_of(image=_picture(0))).strength == 1.0


def test_request_json_and_key() -> None:
    plain = GenerationRequest()
    # Unset inputs are left out, so requests (and stored baselines) without inputs read as
    # before this block existed.
    assert set(plain.as_dict()) == {"prompt", "width", "height", "num_inference_steps",
                                    "num_frames", "seed", "guidance_scale", "negative_prompt"}
    one = GenerationRequest(**inputs_of(image=_picture(0)), strength=0.6)
    same = GenerationRequest(**inputs_of(images=[Image.fromarray(_picture(0))]), strength=0.6)
    two = GenerationRequest(**inputs_of(image=_picture(1)), strength=0.6)
    record = one.as_dict()
    assert record["images"] == [{"digest": one.images[0].digest, "width": 32, "height": 24}]
    assert record["strength"] == 0.6
    assert len(json.dumps(record)) < 400  # digests, never pixels
    assert one.key() == same.key() and one == same
    assert one.key() != two.key() and one.key() != plain.key()
    # What an engine worker receives: the pixels, pickled, rebuilt into an equal request.
    rebuilt = GenerationRequest(**pickle.loads(pickle.dumps(one.payload())))
    assert rebuilt == one and np.array_equal(rebuilt.images[0].pixels(), _picture(0))


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_request_key_tells_two_input_images_apart(standin_pytester: pytest.Pytester,
                                                  xdist: list[str]) -> None:
    """A reference profile is measured once per request and reused: the same pixels (from
    an array, then from a PNG file) reuse it; another picture is measured anew."""
    Image.fromarray(_picture(0)).save(standin_pytester.path / "a.png")
    np.save(standin_pytester.path / "a.npy", _picture(0))
    np.save(standin_pytester.path / "b.npy", _picture(1))
    standin_pytester.makepyfile("""
        import numpy as np

        def test_a(omni_perf):
            a = np.load("a.npy")
            omni_perf.measure(width=16, height=16, image=a, strength=0.5, label="array")
            omni_perf.measure(width=16, height=16, image="a.png", strength=0.5, label="file")
            omni_perf.measure(width=16, height=16, image=np.load("b.npy"), strength=0.5,
                              label="other")
        """)
    result = standin_pytester.runpytest_subprocess(*xdist, "--omni-profile=eager",
                                        "--omni-rounds=2", "--omni-update-baselines",
                                        "--omni-report-json=report.json",
                                        "--omni-report-html=report.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*baseline profile measured 0, reused 1*"])
    report = json.loads((standin_pytester.path / "report.json").read_text())
    requests = {r["label"]: r["measurement"]["request"] for r in report["results"]}
    assert requests["array"] == requests["file"] != requests["other"]
    assert requests["array"]["images"][0]["width"] == 32
    # The HTML report shows each request's input beside its output, named by its digest.
    page = (standin_pytester.path / "report.html").read_text()
    digest = requests["other"]["images"][0]["digest"]
    assert page.count('<div class="lab">request inputs</div>') == 3
    assert f"input image (32x24, {digest})" in page
    assert "16x16, 12 steps, 1 frame(s), seed 0, 1 input image(s), strength 0.5" in page


def test_measure_rejects_bad_inputs(standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile("""
        import numpy as np

        def test_missing(omni_perf):
            omni_perf.measure(width=16, height=16, image="nowhere.png")

        def test_dtype(omni_perf):
            omni_perf.measure(width=16, height=16, images=[np.zeros((8, 8, 3), np.float64)])

        def test_strength(omni_perf):
            omni_perf.measure(width=16, height=16, image=np.zeros((8, 8, 3), np.uint8),
                              strength=float("nan"))

        def test_both(omni_perf):
            omni_perf.measure(width=16, height=16, image="a.png", images=["a.png"])
        """)
    result = standin_pytester.runpytest("--omni-profile=eager", "--omni-rounds=2")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines_random([
        "E * request field image: no image file at 'nowhere.png'",
        "E * request field images[[]0[]]: expected uint8 pixels (0..255), got dtype float64*",
        "E * request field strength: expected a finite number in (0, 1], got nan",
        "E * request fields image and images: give one input image as image= or several *",
    ])


def test_omni_backend_prompt_carries_the_inputs() -> None:
    """vLLM-Omni takes inputs in the prompt dict's multi_modal_data: one image as itself,
    several as a list, the mask as mask_image (its edit_images route builds the same)."""
    from pytest_omni_perf.engines.omni_engine import prompt_of, sampling_fields

    assert prompt_of(GenerationRequest(prompt="a fox")) == "a fox"
    one = prompt_of(GenerationRequest(prompt="a fox", strength=0.4, **inputs_of(
        image=_picture(0), mask=_picture(1))))
    assert isinstance(one, dict) and one["prompt"] == "a fox"
    assert np.array_equal(np.asarray(one["multi_modal_data"]["image"]), _picture(0))
    assert np.array_equal(np.asarray(one["multi_modal_data"]["mask_image"]), _picture(1))
    two = prompt_of(GenerationRequest(**inputs_of(images=[_picture(0), _picture(1)])))
    assert isinstance(two, dict) and len(two["multi_modal_data"]["image"]) == 2
    assert sampling_fields(GenerationRequest(strength=0.4, **inputs_of(image=_picture(0))))[
        "strength"] == 0.4
    # Image to video: the first frame in multi_modal_data, the frame count a sampling field.
    i2v = GenerationRequest(num_frames=9, **inputs_of(image=_picture(2)))
    prompt = prompt_of(i2v)
    assert isinstance(prompt, dict)
    assert np.array_equal(np.asarray(prompt["multi_modal_data"]["image"]), _picture(2))
    assert sampling_fields(i2v)["num_frames"] == 9


def test_video_parts_send_one_input_reference_and_refuse_what_has_no_field() -> None:
    """POST /v1/videos carries one input image (input_reference, its PNG bytes untouched);
    a mask, strength, an input video or a second image has no field there: refused by name."""
    from pytest_omni_perf.omni_wire import INPUT_REFERENCE, video_parts

    i2v = GenerationRequest(num_frames=5, **inputs_of(image=_picture(0)))
    fields, files = video_parts(i2v)
    assert fields["num_frames"] == 5
    assert files == [(INPUT_REFERENCE, "input.png", i2v.images[0].png)]
    assert video_parts(GenerationRequest(num_frames=5))[1] == []
    refused = {
        "mask": GenerationRequest(num_frames=5, **inputs_of(image=_picture(0),
                                                            mask=_picture(1))),
        "strength": GenerationRequest(num_frames=5, strength=0.5,
                                      **inputs_of(image=_picture(0))),
        "images": GenerationRequest(num_frames=5,
                                    **inputs_of(images=[_picture(0), _picture(1)])),
        "video": GenerationRequest(num_frames=5, **inputs_of(video=[_picture(0)])),
    }
    for field, request in refused.items():
        with pytest.raises(ValueError, match=f"^request field {field}: "):
            video_parts(request)


def test_diffusers_pipeline_gets_one_image_as_itself_and_several_as_a_list() -> None:
    """QwenImageEditPlusPipeline (Qwen-Image-Edit-2509) takes ``image=[a, b]``, picture 1
    first; one image goes as itself, as its docstring and every one-image pipeline take it."""
    diffusers = pytest.importorskip("diffusers")
    from pytest_omni_perf.engines.diffusers_inputs import input_kwargs

    cls = diffusers.QwenImageEditPlusPipeline
    pipe = cls.__new__(cls)  # only __call__'s signature is read: no components needed
    two = input_kwargs(pipe, GenerationRequest(**inputs_of(images=[_picture(0), _picture(1)])))
    assert list(two) == ["image"] and isinstance(two["image"], list)
    assert [np.asarray(image).tolist() for image in two["image"]] == [
        _picture(0).tolist(), _picture(1).tolist()]
    one = input_kwargs(pipe, GenerationRequest(**inputs_of(image=_picture(2))))
    assert isinstance(one["image"], Image.Image)
    assert np.array_equal(np.asarray(one["image"]), _picture(2))
    # No max_area or _auto_resize here (FluxKontextPipeline's): nothing but the images.
    with pytest.raises(ValueError, match="takes no 'mask_image' argument"):
        input_kwargs(pipe, GenerationRequest(**inputs_of(image=_picture(0), mask=_picture(1))))


def test_diffusers_pipeline_refuses_more_images_than_it_takes() -> None:
    """A one-image pipeline would read a list as a batch and fail inside on the prompt's
    batch size; the request is refused first, in vLLM-Omni's words and with its limits (4 for
    QwenImageEditPlusPipeline, 1 for every other, vllm_omni/diffusion/model_metadata.py)."""
    diffusers = pytest.importorskip("diffusers")
    from pytest_omni_perf.engines.diffusers_inputs import input_kwargs

    kontext = diffusers.FluxKontextPipeline.__new__(diffusers.FluxKontextPipeline)
    with pytest.raises(ValueError, match="^FluxKontextPipeline: Received multiple input "
                       "images. Only a single image is supported by this model.$"):
        input_kwargs(kontext, GenerationRequest(**inputs_of(images=[_picture(0), _picture(1)])))
    plus = diffusers.QwenImageEditPlusPipeline.__new__(diffusers.QwenImageEditPlusPipeline)
    pictures = [_picture(i) for i in range(5)]
    four = input_kwargs(plus, GenerationRequest(**inputs_of(images=pictures[:4])))
    assert len(four["image"]) == 4
    with pytest.raises(ValueError, match="Received 5 input images. At most 4 images are"):
        input_kwargs(plus, GenerationRequest(**inputs_of(images=pictures)))


def test_edit_parts_send_each_image_as_an_image_part_in_order() -> None:
    """The omni-server and load clients send several input images as repeated ``image`` file
    parts (vLLM-Omni's ``edit_images`` takes ``image: list[UploadFile]``), PNG bytes
    untouched, picture 1 first."""
    from pytest_omni_perf.omni_wire import edit_parts

    request = GenerationRequest(prompt="a fox", width=64, height=48,
                                **inputs_of(images=[_picture(0), _picture(1, (48, 80))]))
    fields, files = edit_parts(request)
    assert fields["size"] == "64x48" and fields["prompt"] == "a fox"
    assert files == [("image", "image-0.png", request.images[0].png),
                     ("image", "image-1.png", request.images[1].png)]
