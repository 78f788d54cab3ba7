"""The ``omni`` backend: vLLM-Omni offline, ``Omni(model, **kwargs)`` in a worker process.

The worker (``engines/worker.py``) builds an :class:`OmniRunner` with :func:`make_runner`.
vLLM-Omni spawns its own GPU workers, which re-import the worker's ``__main__``; that module
and this one do nothing at import time, so the spawn is safe.

Written against vLLM-Omni 0.26 and 0.30 (docs/vllm-omni-api.md). How its outputs are read
(the ``getattr``-only rules that hold for both releases) is ``omni_outputs``'; its public
helpers are re-exported here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import struct
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_omni_perf import builtin_models
from pytest_omni_perf.canonical import omni_kwargs
from pytest_omni_perf.engines.base import (
    EngineError, EngineSpec, GenerationOutput, GenerationRequest, ProfileUnsupported,
)
from pytest_omni_perf.engines.compile_cache import compile_cache_env
from pytest_omni_perf.engines.hosting import InProcessEngine, IsolatedEngine
from pytest_omni_perf.engines.omni_outputs import (
    output_frames as output_frames,
    output_metrics as output_metrics,
    pick_output as pick_output,
)
from pytest_omni_perf.engines.parent_death import guarded
from pytest_omni_perf.hardware import HardwareInfo, installed_versions

if TYPE_CHECKING:
    from pytest_omni_perf.capabilities import ModelCapabilities

FACTORY = "pytest_omni_perf.engines.omni_engine:make_runner"
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
_DISTRIBUTIONS = ("vllm-omni", "vllm", "torch", "diffusers", "transformers")


# -- pure parts (tested on CPU) ---------------------------------------------------------------

def resolve_model(model: str, cache_dir: str) -> str:
    """The folder of a built-in model (built on first use), else ``model`` unchanged."""
    if builtin_models.is_builtin(model):
        return str(builtin_models.ensure_model(model, Path(cache_dir) if cache_dir else None))
    return model


def folder_dtype(folder: str) -> str | None:
    """The floating dtype the folder's DiT weights were saved in, or None when unknown.

    vLLM-Omni runs in bfloat16 unless told otherwise, and fp32-saved weights then fail in
    its dummy run ("mat1 and mat2 must have the same dtype", seen with vLLM-Omni 0.26 on an
    H100), so the folder's own precision is the safe default. diffusers configs carry no
    ``torch_dtype``; the safetensors header does, and reading it needs no torch.
    """
    root = Path(folder)
    for component in ("transformer", "dit", "unet", "transformer_2"):
        config = root / component / "config.json"
        if config.is_file():
            try:
                declared = json.loads(config.read_text(encoding="utf-8")).get("torch_dtype")
            except (OSError, ValueError, AttributeError):
                declared = None
            if isinstance(declared, str) and declared.removeprefix("torch.") in \
                    _SAFETENSORS_DTYPES.values():
                return declared.removeprefix("torch.")
        for weights in sorted((root / component).glob("*.safetensors")):
            found = _safetensors_dtype(weights)
            if found is not None:
                return found
    return None


def _safetensors_dtype(path: Path) -> str | None:
    """The most common floating dtype in a safetensors file's header."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 2**20:  # not a sane header: do not read it
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None
    counts: dict[str, int] = {}
    for name, entry in header.items() if isinstance(header, dict) else ():
        if name != "__metadata__" and isinstance(entry, dict):
            dtype = _SAFETENSORS_DTYPES.get(str(entry.get("dtype")))
            if dtype is not None:
                counts[dtype] = counts.get(dtype, 0) + 1
    return max(counts, key=lambda d: counts[d]) if counts else None


def engine_kwargs(options: Mapping[str, Any], saved_dtype: str | None) -> dict[str, Any]:
    """``Omni(model, **kwargs)`` for a profile: its canonical kwargs plus a working dtype.

    A profile's explicit dtype wins; ``auto`` or none becomes the folder's saved dtype.
    """
    kwargs = omni_kwargs(options)
    if kwargs.get("dtype") in (None, "auto"):
        kwargs.pop("dtype", None)
        if saved_dtype is not None:
            kwargs["dtype"] = saved_dtype
    return kwargs


def sampling_fields(request: GenerationRequest,
                    known: Collection[str] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``OmniDiffusionSamplingParams`` for ``request``.

    guidance_scale (and every other optional field) is left out when the request has none,
    so that the pipeline's own default applies (vLLM-Omni tells "given" from "omitted" by
    None). ``known``: the installed class's field names (None: no check). A sampling field
    it lacks raises ProfileUnsupported naming it, except flow_shift, which vLLM-Omni 0.30's
    own server puts in ``extra_args`` (serving_video.py; the class has no such field);
    extra_body keys it lacks go to ``extra_args`` too, as its server does with a request's
    ``extra_params``.
    """
    fields: dict[str, Any] = {"height": request.height, "width": request.width,
                              "num_inference_steps": request.num_inference_steps,
                              "seed": request.seed}
    extra_args: dict[str, Any] = {}
    if request.num_frames is not None:
        fields["num_frames"] = request.num_frames
    for name in ("guidance_scale", "true_cfg_scale", "guidance_scale_2", "flow_shift", "fps"):
        if (value := getattr(request, name)) is None:
            continue
        if known is None or name in known:
            fields[name] = value
        elif name == "flow_shift":
            extra_args[name] = value
        else:
            raise ProfileUnsupported(f"request field {name}: OmniDiffusionSamplingParams of "
                                     f"the installed vLLM-Omni has no {name}")
    for key, value in request.extra_body.items():
        if known is None or key in known:
            fields[key] = value
        else:
            extra_args[key] = value
    if extra_args:
        fields["extra_args"] = extra_args
    if request.strength is not None:
        fields["strength"] = request.strength
    return fields


def prompt_of(request: GenerationRequest) -> str | dict[str, Any]:
    """The prompt as ``Omni.generate`` takes it: a dict when there is a negative prompt or
    an input. Inputs go in ``multi_modal_data`` as vLLM-Omni's own image-edit path builds it
    (``vllm_omni/entrypoints/openai/api_server.py`` ``edit_images``, commit 005fd8e:
    ``prompt["multi_modal_data"]["image"] = pil_images``, ``["mask_image"]`` one PIL image;
    one image as itself, several as a list; a video request's image (i2v) goes there too, as
    serving_video.py at 0131cb5 puts its ``input_reference``)."""
    if request.negative_prompt is None and not request.has_inputs:
        return request.prompt
    prompt: dict[str, Any] = {"prompt": request.prompt}
    if request.negative_prompt is not None:
        prompt["negative_prompt"] = request.negative_prompt
    if request.video:
        raise ProfileUnsupported("the omni backend does not pass an input video to vLLM-Omni "
                                 "yet (image= and images= it does)")
    if request.has_inputs:
        images = [item.pil() for item in request.images]
        data: dict[str, Any] = {"image": images[0] if len(images) == 1 else images}
        if request.mask is not None:
            data["mask_image"] = request.mask.pil()
        prompt["multi_modal_data"] = data
    return prompt


def capability_reason(capabilities: ModelCapabilities, options: Mapping[str, Any]
                      ) -> str | None:
    """Why vLLM-Omni would silently not apply ``options`` to this model (None: it would)."""
    from pytest_omni_perf.capabilities import unsupported_reason

    reason = unsupported_reason(options, capabilities)
    return None if reason is None else f"vLLM-Omni ({capabilities.pipeline_class}): {reason}"


def discover_capabilities(folder: str) -> tuple[ModelCapabilities | None, str]:
    """Capabilities of the folder's pipeline in vLLM-Omni, and a note on how that went.

    Never raises: a model discovery cannot read (a hub id, a pipeline vLLM-Omni's registry
    lacks, an API that moved) is run unchecked, and the note says so in the report.
    """
    from pytest_omni_perf.capabilities import discover, pipeline_class_of

    name = pipeline_class_of(folder)
    if name is None:
        return None, "capabilities not checked: no local model_index.json"
    try:
        return discover(name), f"capabilities of {name} checked"
    except Exception as exc:  # noqa: BLE001 - discovery is advisory
        return None, f"capabilities of {name} not checked: {type(exc).__name__}: {exc}"


# -- the runner (inside the worker process) ---------------------------------------------------

class OmniRunner:
    """One ``vllm_omni.Omni`` engine with one profile's options."""

    def __init__(self, model: str, options: Mapping[str, Any]) -> None:
        self.model = model
        self.options = dict(options)
        self._omni: Any = None
        self.applied: dict[str, Any] = {}
        self._phases: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        """Check the profile against the release and the model's capabilities, then start
        the engine."""
        from pytest_omni_perf.engines.omni_compat import installed_version, version_reason

        if (why := version_reason(self.options, installed_version())) is not None:
            raise ProfileUnsupported(why)
        began = time.perf_counter()
        from vllm_omni import Omni  # before discovery, which imports it too: phase (b)

        self._phases = {"imports_s": time.perf_counter() - began}
        capabilities, note = discover_capabilities(self.model)
        if capabilities is not None:
            reason = capability_reason(capabilities, self.options)
            if reason is not None:
                raise ProfileUnsupported(reason)
        kwargs = engine_kwargs(self.options, folder_dtype(self.model))
        started = time.perf_counter()
        self._omni = Omni(model=self.model, **kwargs)
        self.applied = {"omni_kwargs": json.loads(json.dumps(kwargs, default=str)),
                        "capabilities": note, "start_s": round(time.perf_counter() - started, 3)}
        if capabilities is not None:
            self.applied["pipeline"] = capabilities.pipeline_class
        return dict(self.applied)

    def startup_phases(self) -> dict[str, Any]:
        """The start-up phases this process sees apart: the import of vLLM-Omni. ``Omni(...)``
        loads, applies the options and warms up in one call (its time is ``applied``'s
        ``start_s``), so load, apply and compile are left unknown."""
        return dict(self._phases)

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Run one request; latency is ``Omni.generate`` as seen from this process."""
        if self._omni is None:
            raise EngineError("the vLLM-Omni engine is not running (closed after an error?)")
        from vllm_omni.inputs.data import OmniDiffusionSamplingParams

        # A dataclass in 0.26-0.30; None (no check) should a release make it something else.
        known = set(getattr(OmniDiffusionSamplingParams, "__dataclass_fields__", {})) or None
        params = OmniDiffusionSamplingParams(**sampling_fields(request, known))
        started = time.perf_counter()
        try:
            outputs = self._omni.generate(prompt_of(request), [params], use_tqdm=False)
        except BaseException:
            self.close()  # Omni shuts itself down on a failed generate: do not reuse it
            raise
        latency = time.perf_counter() - started
        output = pick_output(outputs)
        error = getattr(output, "error", None)
        if error:
            raise EngineError(f"vLLM-Omni reported an error for the request: {error}")
        return GenerationOutput(frames=output_frames(getattr(output, "images", None),
                                                     video=request.is_video),
                                engine_latency_s=latency, engine_metrics=output_metrics(output))

    def close(self) -> None:
        """Shut the engine and its GPU workers down. Safe to call twice."""
        omni, self._omni = self._omni, None
        if omni is not None:
            omni.close()

    def versions(self) -> dict[str, str]:
        """Installed versions of vLLM-Omni and what it runs on."""
        return installed_versions({dist: dist for dist in _DISTRIBUTIONS})


def make_runner(model: str, cache_dir: str, options: Mapping[str, Any]) -> OmniRunner:
    """Runs inside the worker: resolve a built-in model to its folder, then wrap it."""
    return OmniRunner(resolve_model(model, cache_dir), options)


# -- engine construction (in the pytest process) ----------------------------------------------

def create(spec: EngineSpec, hw: HardwareInfo) -> IsolatedEngine | InProcessEngine:
    """An ``omni`` engine for ``spec``; EngineError when vLLM-Omni cannot run here."""
    if importlib.util.find_spec("vllm_omni") is None:
        raise EngineError("--omni-backend=omni needs vLLM-Omni in this environment "
                          "(pip install 'pytest-omni-perf[vllm-omni]')")
    gpus = [g for g in hw.gpus if not spec.devices or g.index in spec.devices]
    if not gpus:
        raise EngineError("--omni-backend=omni needs a CUDA GPU and found none "
                          f"({hw.note}); use --omni-backend=diffusers on this machine")
    from pytest_omni_perf.engines.omni_options import refuse_unknown

    refuse_unknown(spec.options, online=False, cache_dir=spec.cache_dir)
    kwargs = {"model": spec.model, "cache_dir": spec.cache_dir, "options": dict(spec.options)}
    if spec.in_process:
        return InProcessEngine(spec, FACTORY, kwargs, device="cuda")
    # vLLM-Omni compiles through inductor too: keep its graphs across runs.
    env = {"TOKENIZERS_PARALLELISM": "false", **compile_cache_env(spec)}
    if builtin_models.is_builtin(spec.model):
        env["HF_HUB_OFFLINE"] = "1"  # a local folder: never let a loader reach for the hub
    return IsolatedEngine(spec, FACTORY, kwargs, env=env, device="cuda")


def capabilities_in_subprocess(folder: str, timeout_s: float
                               ) -> tuple[ModelCapabilities | None, str]:
    """:func:`discover_capabilities` in a child Python, keeping vLLM-Omni out of pytest."""
    from pytest_omni_perf.capabilities import ModelCapabilities

    code = ("import dataclasses, json, sys\n"
            "from pytest_omni_perf.engines.omni_engine import discover_capabilities\n"
            "caps, note = discover_capabilities(sys.argv[1])\n"
            "print(json.dumps({'caps': caps and dataclasses.asdict(caps), 'note': note}))\n")
    try:
        # guarded: a pytest killed meanwhile must not leave it running (parent_death).
        done = subprocess.run(guarded([sys.executable, "-c", code, folder]),
                              capture_output=True, text=True, timeout=timeout_s, check=False)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return None, f"capabilities not checked: discovery failed ({exc})"
    raw = answer.get("caps")
    if not isinstance(raw, dict):
        return None, str(answer.get("note"))
    fields = {f.name for f in dataclasses.fields(ModelCapabilities)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in raw.items() if k in fields}
    return ModelCapabilities(**values), str(answer.get("note"))
