"""``$ref`` and ``*-inline`` fields of vLLM-Omni case files, laid out as
tests/dfx/perf/tests/test_hunyuan_image3_prefix_caching.json (vllm-project/vllm-omni at
54c891c) lays them out: benchmark_params in ../fixtures/*.json, the deploy config inline in
serve_args."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_omni_perf.cases.reader import CaseError, read_case_file

DEPLOY = {"pipeline": "hunyuan_image3_dit", "async_chunk": False,
          "stages": [{"stage_id": 0, "devices": "0,1,2,3", "max_num_seqs": 1,
                      "parallel_config": {"tensor_parallel_size": 4}}]}
ENTRY = {"name": "e32", "dataset": "random", "task": "t2i", "width": 32, "height": 32,
         "num-inference-steps": 2, "num-prompts": 2, "max-concurrency": 1,
         "warmup-requests": 1}
SERVER = ("--omni-server-command={python} -m pytest_omni_perf.serve {model} --omni "
          "--port {port} --enforce-eager")


def _layout(root: Path, serve_args: dict[str, Any], params: Any = None) -> Path:
    (root / "fixtures").mkdir(exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    (root / "fixtures" / "params.json").write_text(json.dumps(
        params if params is not None else [ENTRY, {**ENTRY, "name": "e48", "width": 48}]))
    row = {"test_name": "test_ref", "server_type": "vllm-omni",
           "server_params": {"model": "tiny-flux", "serve_args": serve_args},
           "benchmark_params": {"$ref": "../fixtures/params.json"}}
    case = root / "tests" / "case.json"
    case.write_text(json.dumps([row]))
    return case


def test_ref_and_inline_are_resolved(tmp_path: Path) -> None:
    case = _layout(tmp_path, {"enable-diffusion-pipeline-profiler": True,
                              "deploy-config-inline": {"type": "yaml", "content": DEPLOY}})
    entries = read_case_file(case)
    assert [e.item_name for e in entries] == ["test_ref[e32]", "test_ref[e48]"]
    deploy = Path(entries[0].passthrough["deploy-config"])
    assert deploy.suffix == ".yaml" and yaml.safe_load(deploy.read_text()) == DEPLOY
    assert "deploy-config-inline" not in entries[0].passthrough
    # The same content gives the same file, so rows asking for one server still share it.
    assert read_case_file(case)[1].passthrough["deploy-config"] == str(deploy)


def test_jsonl_inline_writes_one_line_per_item(tmp_path: Path) -> None:
    lines = [{"prompt": "a fox"}, {"prompt": "a cat"}]
    case = _layout(tmp_path, {}, [{**ENTRY, "dataset-path-inline": {"type": "jsonl",
                                                                   "content": lines}}])
    entry = read_case_file(case)[0]
    # dataset-path is not a field the reader runs yet: the entry says so instead of failing.
    assert entry.skip == "benchmark_params field(s) dataset-path not understood yet"
    written = json.loads((tmp_path / "fixtures" / "params.json").read_text())
    assert written[0]["dataset-path-inline"]["content"] == lines  # the source stays as is


@pytest.mark.parametrize(("serve_args", "params", "message"), [
    ({}, "missing", r"row 0 \(test_ref\)\.benchmark_params\.\$ref: cannot read "
                    r"'\.\./fixtures/params\.json' \(.*params\.json\): No such file"),
    ({}, {"name": "e"}, r"benchmark_params\.\$ref: '\.\./fixtures/params\.json' \(.*\) holds "
                        r"dict, expected a list of benchmark_params entries"),
    ({"deploy-config-inline": {"type": "toml", "content": {}}}, None,
     r"row 0 \(test_ref\)\.server_params\.serve_args\.deploy-config-inline: expected "
     r"\{\"type\": \"yaml\" or \"jsonl\", \"content\": \.\.\.\}, got "),
    ({"deploy-config": "a.yaml", "deploy-config-inline": {"type": "yaml", "content": {}}},
     None, r"serve_args\.deploy-config-inline: 'deploy-config' is given too; give one of "
           r"them"),
])
def test_bad_includes_name_the_field(tmp_path: Path, serve_args: dict[str, Any],
                                     params: Any, message: str) -> None:
    case = _layout(tmp_path, serve_args, None if params in (None, "missing") else params)
    if params == "missing":
        (tmp_path / "fixtures" / "params.json").unlink()
    with pytest.raises(CaseError, match=message):
        read_case_file(case)


def test_ref_entries_run_and_inline_options_skip_on_the_shipped_server(
        pytester: pytest.Pytester) -> None:
    case = _layout(pytester.path, {"enable-diffusion-pipeline-profiler": True})
    inline = _layout(pytester.mkdir("other"),
                     {"deploy-config-inline": {"type": "yaml", "content": DEPLOY}})
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", SERVER,
        f"--omni-cases={case.relative_to(pytester.path)},{inline.relative_to(pytester.path)}")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines_random([
        "*test_ref?e32? ?passed? c=1: * req/s*2 ok / 0 failed",
        "*test_ref?e48? ?passed? c=1: * req/s*2 ok / 0 failed",
        "SKIPPED ?2? other/tests/case.json:1: serve_args: pass-through option(s) deploy-config: "
        "the shipped server (pytest_omni_perf.serve, the diffusers engine) takes no such "
        "option*"])
