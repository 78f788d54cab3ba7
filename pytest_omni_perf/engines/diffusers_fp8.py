"""The ``fp8`` profile on the diffusers backend: torchao float8 dynamic-activation/weight
quantization, per row, of the transformer's Linear layers (vLLM-Omni's ``--quantization fp8``
is vLLM's W8A8 ``Fp8Config`` on the same layers; vllm_omni/diffusion/quantization/fp8.py).
Needs a CUDA GPU with SM >= 8.9 (``diffusers_options.FP8_MIN_SM``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ProfileUnsupported

if TYPE_CHECKING:
    import torch


def fp8_eligible(module: torch.nn.Module, _fqn: str = "") -> bool:
    """Whether torchao's per-row float8 config can take ``module``: a Linear layer with
    dimensions that are multiples of 16 (``torch._scaled_mm``'s rule) and bfloat16 weights
    (torchao 0.17 asserts "PerRow quantization only works for bfloat16 precision input
    weight"). Layers a model keeps in float32 (diffusers' ``_keep_in_fp32_modules``, e.g.
    WanTransformer3DModel's time embedder) stay unquantized, as in higher-precision serving."""
    import torch

    return isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 \
        and module.out_features % 16 == 0 and module.weight.dtype == torch.bfloat16


#: Floor of a row's absolute maximum when torchao computes a dynamic float8 activation scale.
#: Without it a row of zeros gets the scale 0 and quantizes to 0 / 0 = NaN on torchao's torch
#: path (``_choose_scale_float8`` then ``_quantize_affine_float8``, torchao 0.17): WanPipeline
#: pads its T5 prompt embeddings with zero rows to 512 tokens, so every medium-wan fp8 video
#: came out NaN (SSIM 0.0001 on an H100, results/h100/support/medium-wan-3.log). vLLM's
#: dynamic per-token fp8 kernels floor the scale at 1 / (448 * 512) (``min_scaling_factor`` in
#: csrc/quantization), which is this floor on the absolute maximum: 448 * scale = 1 / 512.
FP8_ACTIVATION_AMAX_FLOOR = 1.0 / 512


def quantize_fp8(transformer: torch.nn.Module, device: str) -> int:
    """torchao float8 dynamic-activation/weight, per-row, on the transformer's Linear layers
    that ``fp8_eligible`` accepts; returns how many were quantized, and refuses when none can
    be."""
    from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, PerRow,
                                      quantize_)

    count = sum(fp8_eligible(m) for m in transformer.modules())
    if count == 0:
        raise ProfileUnsupported("quantization=fp8: no Linear layer of the transformer is "
                                 "bfloat16 with dimensions divisible by 16")
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), activation_value_lb=FP8_ACTIVATION_AMAX_FLOOR),
        filter_fn=fp8_eligible, device=device)
    return count
