"""The zero-code suite (``--pyargs pytest_omni_perf.suite``): its support-table row in
Markdown and JSON, and the best profile per budget at the end of the terminal summary."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

SUITE = ["--pyargs", "pytest_omni_perf.suite", "-p", "no:cacheprovider", "-rs",
         "--omni-suite-request=width=32,height=32,num_inference_steps=2", "--omni-warmup=0",
         "--omni-report-markdown=support.md", "--omni-report-json=report.json"]
# vLLM-Omni's own table (docs/user_guide/diffusion/parallelism_acceleration.md), by column
# names only: the row must read as one of its rows.
VLLM_OMNI_IMAGE_COLUMNS = ["Model", "Model Identifier", "Ulysses-SP", "Ring-SP",
                           "CFG-Parallel", "Tensor-Parallel", "VAE-Patch-Parallel"]
VLLM_OMNI_VIDEO_COLUMNS = ["Model", "Model Identifier", "Ulysses-SP", "Ring-Attention",
                           "Tensor-Parallel", "HSDP"]


def cells(line: str) -> list[str]:
    """The cells of one Markdown table line."""
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def marks(markdown: str, model: str) -> dict[str, str]:
    """Column name -> mark of ``model``'s row in the vLLM-Omni-layout table."""
    lines = markdown.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Model | Model Identifier"))
    row = next(line for line in lines[header:] if line.startswith(f"| **{model}**"))
    return dict(zip(cells(lines[header]), cells(row)))


def details(markdown: str) -> dict[str, list[str]]:
    """Profile -> cells of its first detail line."""
    found: dict[str, list[str]] = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and len(cells(line)) == 9:
            found.setdefault(cells(line)[1], cells(line))
    return found


def test_stand_in_row_and_recommendations(standin_pytester: pytest.Pytester,
                                          tiny_model_cache: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic timings: cache_dit 2x faster and exact, fewer_steps faster still but
    outside the SSIM budget, vae_slicing no faster (its interval reaches 1), tea_cache
    unsupported by the model, usp2 not runnable on a CPU machine."""
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(tiny_model_cache))
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.01")
    monkeypatch.setenv("STANDIN_DELAY_FEWER_STEPS", "0.005")
    monkeypatch.setenv("STANDIN_NOISE_FEWER_STEPS", "80")
    monkeypatch.setenv("STANDIN_UNSUPPORTED_TEA_CACHE", "1")
    result = standin_pytester.runpytest_subprocess(
        *SUITE, "-p", "conftest", "--omni-rounds=6", "--omni-max-rounds=6",
        "--omni-profile=eager,cache_dit,fewer_steps,vae_slicing,tea_cache,usp2",
        "--omni-ssim-budget=0.95", "--omni-report-html=report.html")
    result.stdout.fnmatch_lines([
        "*omni-perf recommendation (speedup intervals wholly above 1 only)*",
        "tiny-flux [[]short[]] fastest lossless, CPU: none: no speedup interval lies wholly "
        # vae_slicing does the same work: its estimate reads 0.99x or 1.0x.
        "above 1 (vae_slicing *x [[]0.*-1.*[]] vs eager*",
        "tiny-flux [[]short[]] fastest with SSIM >= 0.95, CPU: cache_dit *x "
        "[[]1.*-2.*95%[]] vs eager, SSIM 1.0000*",
    ])
    markdown = (standin_pytester.path / "support.md").read_text(encoding="utf-8")
    row = marks(markdown, "tiny-flux")
    assert list(row)[:3] == ["Model", "Model Identifier", "torch.compile"]
    assert {k: row[k] for k in ("Cache-DiT", "VAE-Slicing", "Fewer-Steps", "TeaCache",
                                "Ulysses-SP", "FP8")} == {
        "Cache-DiT": "✅", "VAE-Slicing": "✅", "Fewer-Steps": "✅", "TeaCache": "❌",
        "Ulysses-SP": "⚠️", "FP8": ""}
    rows = details(markdown)
    assert rows["tea_cache"][2:] == ["unsupported by the model", "-", "-", "-", "-", "-",
                                     "stand-in: tea_cache is unsupported on purpose"]
    assert rows["usp2"][2] == "not runnable here" and "requires 2 GPU(s)" in rows["usp2"][8]
    assert rows["cache_dit"][2:4] == ["supported", "short"]
    assert 1.5 < float(rows["cache_dit"][4].split("x")[0]) < 2.5 and rows["cache_dit"][6] == "1.0000"
    document = json.loads((standin_pytester.path / "report.json").read_text())
    support = {e["profile"]: e for e in document["support"]["tiny-flux"]}
    assert support["tea_cache"]["status"] == "unsupported by the model"
    assert support["cache_dit"]["measured"][0]["low"] > 1
    html = (standin_pytester.path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Support table</h2>" in html and "stand-in: tea_cache is unsupported" in html
    chosen = {r["branch"]: r["profile"] for r in document["recommendations"]}
    assert chosen["fastest with SSIM >= 0.95, CPU"] == "cache_dit"
    assert chosen["fastest lossless, CPU"] is None


def test_tiny_flux_on_the_diffusers_engine(pytester: pytest.Pytester, tiny_model_cache: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The real engine on CPU: VAE slicing measured (it has no speedup bound, so the outcome
    does not hang on a shared machine's timings), TeaCache and Ulysses not runnable here
    (the diffusers backend has no TeaCache; no second GPU), each with the plugin's reason."""
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(tiny_model_cache))
    result = pytester.runpytest_subprocess(
        *SUITE, "--omni-rounds=5", "--omni-max-rounds=5", "--omni-model=tiny-flux",
        "--omni-backend=diffusers", "--omni-profile=eager,vae_slicing,tea_cache,usp2")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines([
        "*omni-perf recommendation*",
        "tiny-flux [[]short[]] fastest lossless, CPU: *vae_slicing *x*vs eager*",
        "tiny-flux [[]short[]] fastest with SSIM >= 0.98, CPU: *vae_slicing*",
        "*Markdown support table written to *support.md",
    ])
    markdown = (pytester.path / "support.md").read_text(encoding="utf-8")
    assert "### ImageGen" in markdown
    row = marks(markdown, "tiny-flux")
    assert [c for c in VLLM_OMNI_IMAGE_COLUMNS if c not in row] == []
    assert (row["VAE-Slicing"], row["TeaCache"], row["Ulysses-SP"], row["Cache-DiT"]) \
        == ("✅", "⚠️", "⚠️", "")
    rows = details(markdown)
    assert "the diffusers backend has no TeaCache" in rows["tea_cache"][8]
    assert rows["vae_slicing"][2:4] == ["supported", "short"]
    assert rows["vae_slicing"][6] == "1.0000"  # SSIM: slicing a batch of one changes nothing
    assert rows["vae_slicing"][7].endswith(" s")  # cold start
    # The first run of a model has no stored baselines: noted, not failed. The note offers
    # the record command, unless this machine was busy in most rounds: a loaded run must
    # not become the baseline, so the note then withdraws it.
    noted = [line for line in result.stdout.lines if fnmatch.fnmatch(
        line, "*no stored run of pytest_omni_perf.suite::test_support?vae_slicing? @ short*")]
    assert noted and all(fnmatch.fnmatch(line, "*record one with: *pytest --pyargs*")
                         or line.endswith("do not refresh the baseline from this run)")
                         for line in noted), noted


def test_tiny_wan_row_under_xdist(standin_pytester: pytest.Pytester, tiny_model_cache: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A video model gets vLLM-Omni's VideoGen layout; skips on xdist workers reach the
    controller's table (their reports carry profile, model and reason)."""
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(tiny_model_cache))
    result = standin_pytester.runpytest_subprocess(
        *SUITE, "-p", "conftest", "-n", "2", "--omni-rounds=5", "--omni-model=tiny-wan",
        "--omni-suite-request=width=32,height=32,num_inference_steps=2,num_frames=5",
        "--omni-profile=eager,vae_slicing,usp2,hsdp2,fp8")
    result.assert_outcomes(passed=2, skipped=3)
    markdown = (standin_pytester.path / "support.md").read_text(encoding="utf-8")
    assert "### VideoGen" in markdown
    row = marks(markdown, "tiny-wan")
    assert [c for c in VLLM_OMNI_VIDEO_COLUMNS if c not in row] == []
    assert (row["VAE-Slicing"], row["Ulysses-SP"], row["HSDP"], row["FP8"]) == \
        ("✅", "⚠️", "⚠️", "⚠️")
    rows = details(markdown)
    assert rows["fp8"][8].startswith("requires a GPU with SM &gt;= 8.9")


def test_suite_is_collected_only_when_named(pytester: pytest.Pytester) -> None:
    """``--pyargs pytest_omni_perf`` (the package) collects no test: only the module named
    explicitly is, so the repository's own ``pytest tests`` never measures anything."""
    result = pytester.runpytest_subprocess("--pyargs", "pytest_omni_perf", "--collect-only",
                                           "-q", "-p", "no:cacheprovider")
    assert "test_support" not in result.stdout.str()


def test_image_to_video_model_gets_an_input_image(pytester: pytest.Pytester,
                                                  tiny_model_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that makes its output from an image (Wan image to video) gets a computed
    input picture: on an H100 every tiny-wan-i2v/medium-wan-i2v row failed with
    "WanImageToVideoPipeline needs an input image" before (results/h100/support/)."""
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(tiny_model_cache))
    result = pytester.runpytest_subprocess(
        *SUITE, "--omni-rounds=3", "--omni-max-rounds=3", "--omni-model=tiny-wan-i2v",
        "--omni-backend=diffusers", "--omni-profile=eager,vae_slicing",
        "--omni-suite-request=width=32,height=32,num_inference_steps=2,num_frames=5")
    result.assert_outcomes(passed=2)
    rows = details((pytester.path / "support.md").read_text(encoding="utf-8"))
    assert rows["vae_slicing"][2:4] == ["supported", "short"]
