"""A request's sampling fields on a diffusers pipeline: ``__call__`` keyword arguments
(true_cfg_scale, guidance_scale_2, fps, extra_body) where the pipeline takes them, and a
per-request flow shift through its scheduler. What a pipeline cannot take raises
``ProfileUnsupported`` naming the field, so the test skips instead of measuring a request
that silently dropped it. Stdlib only at import time.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from .base import GenerationRequest, ProfileUnsupported

# Keyword arguments that decide what is measured and compared; extra_body may not replace
# them (the shipped server refuses them as request fields too).
FIXED_CALL_ARGS = frozenset({"output_type", "generator", "return_dict", "latents",
                              "callback_on_step_end"})


def sampling_kwargs(pipe: Any, request: GenerationRequest,
                    params: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    """``pipe(...)`` keyword arguments for the request's sampling fields (true_cfg_scale,
    guidance_scale_2, fps, extra_body): only those its ``__call__`` takes (``params``, from
    ``inspect.signature``). flow_shift is not among them: ``request_scheduler`` applies it.

    ProfileUnsupported names a field the pipeline cannot take (the test skips), except fps,
    which on this backend only labels the frames this engine returns (a server encodes
    them at that rate): passed when ``__call__`` takes it, else recorded and left out.
    """
    name = type(pipe).__name__
    kwargs: dict[str, Any] = {}
    for field in ("true_cfg_scale", "guidance_scale_2", "fps"):
        value = getattr(request, field)
        if value is None:
            continue
        if field == "guidance_scale_2" and getattr(pipe, "transformer_2", None) is None:
            # Wan's __call__ takes it but uses it only with a second (high-noise) transformer.
            raise ProfileUnsupported(f"request field guidance_scale_2: {name} of this model "
                                     "has one transformer, so it would be ignored")
        if field in params:
            kwargs[field] = value
        elif field != "fps":
            raise ProfileUnsupported(f"request field {field}: {name}.__call__ takes no "
                                     f"{field} (the diffusers backend passes it only to "
                                     "pipelines that take it)")
    for key, value in request.extra_body.items():
        if key in FIXED_CALL_ARGS:
            raise ProfileUnsupported(f"request field extra_body.{key}: the diffusers backend "
                                     f"sets {key} itself (it decides what is measured)")
        if key not in params:
            raise ProfileUnsupported(f"request field extra_body.{key}: {name}.__call__ takes "
                                     f"no {key}")
        kwargs[key] = value
    return kwargs


def shifted_scheduler(pipe: Any, shift: float, field: str) -> Any:
    """A copy of ``pipe.scheduler`` with a static flow shift of ``shift``; ProfileUnsupported
    naming ``field`` when the scheduler shifts dynamically (Flux) or not at all."""
    sched = pipe.scheduler
    config = sched.config
    if "flow_shift" in config and config.get("use_flow_sigmas", True):
        return type(sched).from_config(config, flow_shift=float(shift))
    if "shift" in config and not config.get("use_dynamic_shifting", False):
        return type(sched).from_config(config, shift=float(shift))
    raise ProfileUnsupported(f"{field}: {type(sched).__name__} of this model has no static "
                             "flow shift (it shifts dynamically or not at all)")


@contextlib.contextmanager
def request_scheduler(pipe: Any, request: GenerationRequest) -> Iterator[None]:
    """The request's flow_shift in force for one call: the scheduler is swapped for a shifted
    copy and put back after, so a reused engine's next request runs unshifted."""
    if request.flow_shift is None:
        yield
        return
    shifted = shifted_scheduler(pipe, request.flow_shift, "request field flow_shift")
    original, pipe.scheduler = pipe.scheduler, shifted
    try:
        yield
    finally:
        pipe.scheduler = original
