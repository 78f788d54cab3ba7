"""Which Linear layers the fp8 profile quantizes (``diffusers_options.fp8_eligible``).

On an H100 the fp8 profile of medium-wan failed to start with torchao's "PerRow quantization
only works for bfloat16 precision input weight" (results/h100/support/medium-wan-2.log): Wan
keeps its time embedder in float32 (diffusers' ``_keep_in_fp32_modules``) inside a bfloat16
model. The filter is checked here on CPU; torchao's float8 kernels need SM >= 8.9.
"""

from __future__ import annotations

import torch

from pytest_omni_perf.engines.diffusers_options import fp8_eligible


def test_only_bfloat16_linear_layers_with_dimensions_of_16_qualify() -> None:
    model = torch.nn.ModuleDict({
        "attn": torch.nn.Linear(32, 64).to(torch.bfloat16),
        "time_embedder": torch.nn.Linear(32, 64),  # kept in float32, as Wan keeps it
        "odd": torch.nn.Linear(30, 64).to(torch.bfloat16),
        "norm": torch.nn.LayerNorm(32).to(torch.bfloat16),
    })
    assert {name for name, m in model.items() if fp8_eligible(m)} == {"attn"}
