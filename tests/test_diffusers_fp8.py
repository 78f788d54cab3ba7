"""Which Linear layers the fp8 profile quantizes (``diffusers_fp8.fp8_eligible``).

On an H100 the fp8 profile of medium-wan failed to start with torchao's "PerRow quantization
only works for bfloat16 precision input weight" (results/h100/support/medium-wan-2.log): Wan
keeps its time embedder in float32 (diffusers' ``_keep_in_fp32_modules``) inside a bfloat16
model. The filter is checked here on CPU; torchao's float8 kernels need SM >= 8.9.
"""

from __future__ import annotations

import pytest
import torch

from pytest_omni_perf.engines.diffusers_fp8 import (FP8_ACTIVATION_AMAX_FLOOR, fp8_eligible,
                                                   quantize_fp8)


def test_only_bfloat16_linear_layers_with_dimensions_of_16_qualify() -> None:
    model = torch.nn.ModuleDict({
        "attn": torch.nn.Linear(32, 64).to(torch.bfloat16),
        "time_embedder": torch.nn.Linear(32, 64),  # kept in float32, as Wan keeps it
        "odd": torch.nn.Linear(30, 64).to(torch.bfloat16),
        "norm": torch.nn.LayerNorm(32).to(torch.bfloat16),
    })
    assert {name for name, m in model.items() if fp8_eligible(m)} == {"attn"}


def test_a_row_of_zeros_quantizes_to_zeros_not_nan() -> None:
    """WanPipeline pads its prompt embeddings with zero rows; torchao's torch path gave those
    rows the scale 0 and the values 0 / 0 = NaN, and every medium-wan fp8 video was NaN on an
    H100 (SSIM 0.0001). The floor keeps the row finite, as vLLM's fp8 kernels do."""
    quant = pytest.importorskip("torchao.quantization.quant_primitives")
    rows = torch.tensor([[0.5, -2.0, 1.0, 0.25], [0.0, 0.0, 0.0, 0.0]], dtype=torch.bfloat16)

    def quantized(floor: float | None) -> torch.Tensor:
        scale = quant._choose_scale_float8(rows, block_size=[1, 4], hp_value_lb=floor)
        return quant._quantize_affine_float8(rows, scale).to(torch.float32)

    assert torch.isnan(quantized(None)[1]).all()  # what the medium-wan run hit
    floored = quantized(FP8_ACTIVATION_AMAX_FLOOR)
    assert torch.equal(floored[1], torch.zeros(4))
    assert torch.equal(floored[0], quantized(None)[0])  # rows above the floor are unchanged


def test_quantize_fp8_passes_the_floor_to_torchao(monkeypatch: pytest.MonkeyPatch) -> None:
    ao = pytest.importorskip("torchao.quantization")
    seen: list[object] = []
    monkeypatch.setattr(ao, "quantize_", lambda model, config, **_: seen.append(config))
    transformer = torch.nn.Sequential(torch.nn.Linear(32, 64).to(torch.bfloat16))
    assert quantize_fp8(transformer, "cpu") == 1
    assert [c.activation_value_lb for c in seen] == [FP8_ACTIVATION_AMAX_FLOOR]
