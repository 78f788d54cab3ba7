"""``python -m pytest_omni_perf.sweep``: the short form of the zero-code suite's command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_omni_perf.sweep import QUIET, parse, pytest_args, report_name

ROOT = Path(__file__).resolve().parents[1]


def test_arguments_map_one_to_one_and_extras_follow() -> None:
    assert pytest_args([
        "org/My Model", "--profile", "eager,vae_tiling", "--backend", "diffusers",
        "--json", "r.json", "--html", "r.html", "--ssim-budget", "0.9",
        "--request", "width=32,height=32", "--", "-x", "--omni-rounds=7", "--"]) == [
        *QUIET, "--pyargs", "pytest_omni_perf.suite", "--omni-model=org/My Model",
        "--omni-profile=eager,vae_tiling", "--omni-report-markdown=omni-support-My_Model.md",
        "--omni-backend=diffusers", "--omni-report-json=r.json", "--omni-report-html=r.html",
        "--omni-ssim-budget=0.9", "--omni-suite-request=width=32,height=32",
        "-x", "--omni-rounds=7", "--"]


def test_defaults_and_a_given_markdown_path() -> None:
    assert pytest_args(["tiny-flux"])[len(QUIET):] == [
        "--pyargs", "pytest_omni_perf.suite", "--omni-model=tiny-flux", "--omni-profile=all",
        "--omni-report-markdown=omni-support-tiny-flux.md"]
    options = parse(["/models/flux/", "--markdown", "out/table.md"])
    assert "--omni-report-markdown=out/table.md" in pytest_args(options)


@pytest.mark.parametrize(("model", "name"), [
    ("black-forest-labs/FLUX.1-dev", "omni-support-FLUX.1-dev.md"),
    ("/models/wan 2.1/", "omni-support-wan_2.1.md"),
    ("C:\\models\\flux", "omni-support-flux.md"),
    ("../..", "omni-support-model.md"),
    ("a:b*?c", "omni-support-a_b_c.md"),
])
def test_report_name_is_a_plain_file_name(model: str, name: str) -> None:
    assert report_name(model) == name


@pytest.mark.parametrize("argv", [[""], ["  "], []])
def test_a_missing_or_empty_model_is_a_usage_error(argv: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    assert "MODEL" in capsys.readouterr().err


def test_help_names_the_pytest_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    assert "pytest --pyargs pytest_omni_perf.suite --omni-model=MODEL --omni-profile=all" in text
    assert "omni-support-<model-name>.md" in text and "--omni-report-json" in text


def test_tiny_flux_end_to_end(tmp_path: Path, tiny_model_cache: Path) -> None:
    """The real diffusers engine on CPU through ``python -m``: exit status 0, the default
    Markdown file in the current folder, the recommendations printed by pytest and no
    warning caused by the short form itself. 128 px: tiny-flux's VAE tiles are 64 px, and
    smaller tiles (16-32 px at 32-64 px) keep SSIM 0.24-0.50 against eager, below
    vae_tiling's bound of 0.70, so the run would fail for the model's sake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", OMNI_PERF_CACHE_DIR=str(tiny_model_cache),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest_omni_perf.sweep", "tiny-flux",
         "--profile", "eager,vae_tiling", "--request", "width=128,height=128,num_inference_steps=2",
         "--", "-p", "no:cacheprovider", "-p", "no:randomly", "--omni-warmup=0"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    markdown = (tmp_path / "omni-support-tiny-flux.md").read_text(encoding="utf-8")
    assert "| VAE-Tiling | vae_tiling | supported |" in markdown
    pytest.LineMatcher(done.stdout.splitlines()).fnmatch_lines([
        "*omni-perf recommendation (speedup intervals wholly above 1 only)*",
        "tiny-flux [[]short[]] fastest lossless, CPU: *",
        "tiny-flux [[]short[]] fastest with SSIM >= 0.98, CPU: *",
        "*Markdown support table written to *omni-support-tiny-flux.md",
        "*2 passed*",
    ])
    assert "PytestAssertRewriteWarning" not in output
