"""Sampling fields of a request (fps, true_cfg_scale, guidance_scale_2, flow_shift,
negative_prompt, extra_body): checked where they enter, honoured by each backend that can,
and a skip naming the field where it cannot."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.engines import omni_engine as oe
from pytest_omni_perf.engines.base import GenerationRequest, ProfileUnsupported, RequestError
from pytest_omni_perf.engines.diffusers_sampling import sampling_kwargs
from pytest_omni_perf.omni_wire import image_payload, unsent_fields, video_fields

VIDEO = {"num_frames": 5}


@pytest.mark.parametrize(("fields", "message"), [
    ({"fps": 8}, "request field fps: 8 frames per second asked of an image request"),
    ({**VIDEO, "fps": 0}, "request field fps: expected a whole number >= 1, got 0"),
    ({**VIDEO, "fps": 8.5}, "request field fps: expected a whole number >= 1, got 8.5"),
    ({"true_cfg_scale": -1.0}, "request field true_cfg_scale: expected a finite number >= 0"),
    ({"guidance_scale_2": float("nan")}, "request field guidance_scale_2: expected a finite"),
    ({"flow_shift": 0.0}, "request field flow_shift: expected a finite number > 0, got 0"),
    ({"flow_shift": True}, "request field flow_shift: expected a finite number > 0, got bool True"),
    ({"extra_body": ["a"]}, "request field extra_body: expected a mapping"),
    ({"extra_body": {"seed": 3}}, "request field extra_body.seed: seed is a request field of "
                                  "its own; pass seed=... instead"),
    ({"extra_body": {"size": "8x8"}}, "request field extra_body.size: the request body's"),
    ({"extra_body": {"x": float("inf")}}, "request field extra_body.x: not a JSON value"),
    ({"extra_body": {"x": object()}}, "request field extra_body.x: not a JSON value"),
])
def test_bad_sampling_fields_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as info:
        GenerationRequest(**fields)
    assert str(info.value).startswith(message)


def test_unset_fields_stay_out_of_the_stored_request() -> None:
    # Stored baselines compare their request dict with as_dict(): one recorded before these
    # fields existed must still match a request that sets none of them.
    assert set(GenerationRequest().as_dict()) == {
        "prompt", "width", "height", "num_inference_steps", "num_frames", "seed",
        "guidance_scale", "negative_prompt"}
    shifted = GenerationRequest(flow_shift=2.0, extra_body={"b": [1], "a": {"c": None}})
    assert shifted.as_dict()["flow_shift"] == 2.0
    assert shifted.key() == GenerationRequest(flow_shift=2.0,
                                              extra_body={"a": {"c": None}, "b": [1]}).key()
    assert shifted.key() != GenerationRequest(flow_shift=2.5, extra_body=shifted.extra_body).key()
    hash(shifted)  # requests stay usable as set members


class _Pipe:
    """A pipeline signature only (sampling_kwargs reads nothing else)."""

    transformer_2 = None

    def __call__(self, prompt: str, true_cfg_scale: float = 1.0,
                 guidance_scale_2: float | None = None, attention_kwargs: Any = None,
                 output_type: str = "pil") -> None: ...


def _call_args(request: GenerationRequest, pipe: Any = None) -> dict[str, Any]:
    pipe = pipe or _Pipe()
    return sampling_kwargs(pipe, request, inspect.signature(pipe.__call__).parameters)


def test_diffusers_passes_what_call_takes_and_skips_the_rest_by_name() -> None:
    assert _call_args(GenerationRequest(true_cfg_scale=4.0, extra_body={
        "attention_kwargs": {"scale": 1.0}})) == {"true_cfg_scale": 4.0,
                                                  "attention_kwargs": {"scale": 1.0}}
    with pytest.raises(ProfileUnsupported, match=r"extra_body\.sigmas: _Pipe.__call__ takes "
                                                  "no sigmas"):
        _call_args(GenerationRequest(extra_body={"sigmas": [1.0]}))
    with pytest.raises(ProfileUnsupported, match=r"extra_body\.output_type: the diffusers "
                                                  "backend sets output_type itself"):
        _call_args(GenerationRequest(extra_body={"output_type": "pil"}))
    with pytest.raises(ProfileUnsupported, match="guidance_scale_2: _Pipe of this model has "
                                                  "one transformer"):
        _call_args(GenerationRequest(guidance_scale_2=3.0))
    two = _Pipe()
    two.transformer_2 = object()  # type: ignore[assignment]
    assert _call_args(GenerationRequest(guidance_scale_2=3.0), two) == {"guidance_scale_2": 3.0}
    # fps only labels frames here: left out of a __call__ without it, never a skip.
    assert _call_args(GenerationRequest(num_frames=5, fps=8)) == {}


def test_omni_sampling_params_and_extra_args() -> None:
    known = {"height", "width", "num_inference_steps", "seed", "num_frames", "fps",
             "guidance_scale", "true_cfg_scale", "guidance_scale_2", "extra_args", "sigmas"}
    request = GenerationRequest(num_frames=5, fps=8, true_cfg_scale=4.0, guidance_scale_2=2.0,
                                flow_shift=5.0, extra_body={"sigmas": [1.0], "sample_solver":
                                                            "euler"})
    fields = oe.sampling_fields(request, known)
    assert fields["fps"] == 8 and fields["true_cfg_scale"] == 4.0
    assert fields["guidance_scale_2"] == 2.0 and fields["sigmas"] == [1.0]
    # vLLM-Omni 0.30's server puts flow_shift in extra_args (its class has no such field).
    assert fields["extra_args"] == {"flow_shift": 5.0, "sample_solver": "euler"}
    with pytest.raises(ProfileUnsupported, match="request field true_cfg_scale: "
                                                  "OmniDiffusionSamplingParams of the "
                                                  "installed vLLM-Omni has no true_cfg_scale"):
        oe.sampling_fields(GenerationRequest(true_cfg_scale=4.0), known - {"true_cfg_scale"})


def test_wire_bodies_carry_the_fields() -> None:
    image = GenerationRequest(true_cfg_scale=4.0, flow_shift=3.0, negative_prompt="blur",
                              extra_body={"output_format": "png"})
    body = image_payload(image)
    assert {k: body[k] for k in ("true_cfg_scale", "flow_shift", "negative_prompt",
                                 "output_format")} == {"true_cfg_scale": 4.0, "flow_shift": 3.0,
                                                       "negative_prompt": "blur",
                                                       "output_format": "png"}
    assert unsent_fields(GenerationRequest(guidance_scale_2=1.0)) == ["guidance_scale_2"]
    video = GenerationRequest(num_frames=5, fps=8, guidance_scale_2=2.0,
                              extra_body={"lora": {"name": "x"}, "generate_sound": False})
    form = video_fields(video, fps=16)
    assert form["fps"] == 8 and form["guidance_scale_2"] == 2.0
    assert form["lora"] == '{"name": "x"}' and form["generate_sound"] == "false"
    assert unsent_fields(video) == []


PERF = '''
import numpy as np
import pytest

def test_true_cfg(omni_perf):
    plain = omni_perf.measure(width=64, height=64, num_inference_steps=2, label="plain")
    cfg = omni_perf.measure(width=64, height=64, num_inference_steps=2, true_cfg_scale=4.0,
                            negative_prompt="blurry", label="cfg")
    assert not np.array_equal(plain.frames[0], cfg.frames[0])

def test_guidance_2(omni_perf):
    omni_perf.measure(width=64, height=64, num_inference_steps=2, guidance_scale_2=3.0)

def test_flux_flow_shift(omni_perf):
    omni_perf.measure(width=64, height=64, num_inference_steps=2, flow_shift=3.0)

def test_unknown_extra(omni_perf):
    omni_perf.measure(width=64, height=64, num_inference_steps=2,
                      extra_body={"no_such_arg": 1})

@pytest.mark.omni_model("tiny-wan")
def test_wan_flow_shift(omni_perf):
    video = dict(width=64, height=64, num_inference_steps=2, num_frames=5, guidance_scale=1.0,
                 fps=8)
    first = omni_perf.measure(**video, label="a")
    shifted = omni_perf.measure(**video, flow_shift=9.0, label="shifted")
    again = omni_perf.measure(**video, label="b")
    assert not np.array_equal(first.frames[0], shifted.frames[0])
    # The shift held for its request only: the reused engine's next request is unshifted.
    assert all(np.array_equal(x, y) for x, y in zip(first.frames, again.frames))
'''
SERVE = "python -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"


@pytest.mark.parametrize("backend", ["diffusers", "omni-server"])
def test_backends_honour_or_skip_naming_the_field(pytester: pytest.Pytester,
                                                  tiny_model_cache: Path, backend: str) -> None:
    pytester.makepyfile(test_sampling=PERF)
    args = ["-p", "no:cacheprovider", f"--omni-backend={backend}",
            f"--omni-cache-dir={tiny_model_cache}", "--omni-profile=eager", "--omni-rounds=2",
            "--omni-warmup=0", "--omni-update-baselines", "-rs",
            f"--omni-baseline-dir={pytester.path / 'stored'}"]
    if backend == "omni-server":
        args.append(f"--omni-server-command={SERVE}")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2, skipped=3)
    result.stdout.fnmatch_lines_random([
        "SKIPPED*request field guidance_scale_2*",
        "SKIPPED*flow_shift*",
        "SKIPPED*no_such_arg*",
    ])
    if backend == "diffusers":
        result.stdout.fnmatch_lines_random([
            "SKIPPED*request field guidance_scale_2: FluxPipeline of this model has one "
            "transformer*",
            "SKIPPED*request field flow_shift: FlowMatchEulerDiscreteScheduler of this model "
            "has no static flow shift*",
            "SKIPPED*request field extra_body.no_such_arg: FluxPipeline.__call__ takes no "
            "no_such_arg*"])
    else:
        result.stdout.fnmatch_lines_random([
            "SKIPPED*request field guidance_scale_2: vLLM-Omni's POST /v1/images/generations "
            "has no such field*",
            "SKIPPED*this model's pipeline does not take flow_shift*",
            "SKIPPED*this model's pipeline does not take no_such_arg*"])
