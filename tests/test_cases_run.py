"""vLLM-Omni case files run as they are: the six files of tests/vllm_omni_cases through the
shipped server (pass, a violated bound, skips with their reasons, notes), and bad fields
rejected at collection with file, row and field named."""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

CASES = Path(__file__).parent / "vllm_omni_cases"
SERVER = ("--omni-server-command={python} -m pytest_omni_perf.serve {model} --omni "
          "--port {port} --enforce-eager")


def _tight_file(folder: Path) -> Path:
    """The qwen single-device row with the real model's name and bounds no load meets, and 6
    prompts: bounds are judged on intervals, which need 5 completed requests."""
    rows = json.loads((CASES / "test_qwen_image_vllm_omni.json").read_text())
    row = rows[0]
    row["test_name"] = "test_qwen_image_single_device_tight"
    row["server_params"]["model"] = "Qwen/Qwen-Image"
    row["benchmark_params"][0]["num-prompts"] = 6
    row["benchmark_params"][0]["baseline"] = {"latency_mean": 0.00001, "throughput_qps": 100000,
                                              "latency_p99": 3.5}
    path = folder / "test_tight.json"
    path.write_text(json.dumps([row], indent=2))
    return path


def test_six_case_files_through_the_shipped_server(pytester: pytest.Pytester) -> None:
    folder = pytester.mkdir("cases")
    files = [Path(shutil.copy(p, folder)) for p in sorted(CASES.glob("*.json"))]
    files.append(_tight_file(folder))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--strict-markers", SERVER,
        "--omni-cases=" + ",".join(str(f.relative_to(pytester.path)) for f in files),
        "--omni-cases-model=t2i=tiny-flux")
    # The qwen single-device row (4 prompts, a flat baseline) passed on point values; judged
    # on intervals it is INCONCLUSIVE: 4 completed requests give none.
    result.assert_outcomes(passed=8, failed=1, skipped=2, warnings=0)  # counted once
    assert result.parseoutcomes().get("inconclusive") == 1
    result.stdout.fnmatch_lines_random([
        # why it is inconclusive, in the summary rather than as a pytest warning
        "INCONCLUSIVE *test_qwen_image_single_device*: gate(s) inconclusive on the load's "
        "requests:",
        # a violated bound: file, row, entry, field, measured interval and bound
        "*cases/test_tight.json: row 0 (test_qwen_image_single_device_tight), "
        "benchmark_params?0? (512x512_steps20), concurrency 1, hardware 'cpu':",
        "*baseline.latency_mean: measured latency_mean * s [[]*] (95% CI, 6 requests), "
        "maximum 1e-05 s: the whole interval is above the maximum*",
        "*baseline.throughput_qps: measured throughput_qps * req/s [[]*] (95% CI, 6 requests), "
        "minimum 100000 req/s: the whole interval is below the minimum*",
        # a p99 under its bound cannot pass on 6 requests
        "*INCONCLUSIVE baseline.latency_p99: measured latency_p99 * s [[]*, open[]]*",
        # 4 requests decide nothing, and say so
        "*test_qwen_image_single_device?512x512_steps20? ?inconclusive? c=1: *4 ok / 0 failed",
        "    INCONCLUSIVE baseline.latency_mean: * (no interval: 4 requests, needs 5), "
        "maximum 3.5 s: only 4 requests completed, an interval needs at least 5; send at "
        "least 5 (num_prompts)",
        # the model override is said, in the header too
        "omni-perf: 7 case file(s) (--omni-cases), each row through its own `vllm serve "
        "--omni`; model served: t2i: tiny-flux",
        "*note: model tiny-flux served instead of the file's Qwen/Qwen-Image "
        "(--omni-cases-model)",
        # a sweep reported per level; a hardware-keyed baseline with no key here is noted
        "*test_boogu_image_single_device?512x512_steps28-c1? ?passed? c=1: * req/s*",
        "*test_boogu_image_single_device?512x512_steps28-c2? ?passed? c=2: * req/s*",
        "*note: baseline keyed by H100: no key for this machine (no GPU; hardware key "
        "'cpu'), its bounds are not applied",
        # memory the server did not report is a note, not a silent pass
        "*note: baseline.peak_memory_mb_mean: peak_memory_mb_mean was not measured here*",
        # videos at concurrency 2
        "*test_ltx2_baseline_eager?480x768_41f_steps20? ?passed? c=2: *3 ok / 0 failed",
        "*test_hunyuanvideo15_t2v_single_device?832x480_frames33_steps4? ?passed? c=2:*",
        # image to video: the random dataset's input image sent with every request
        "*test_wan22_i2v_single_device?832x480_frames81_steps4-c1? ?passed? c=1: "
        "*3 ok / 0 failed",
        "*test_wan22_i2v_single_device?832x480_frames81_steps4-c2? ?passed? c=2: "
        "*3 ok / 0 failed",
        # skips name what is missing
        "SKIPPED ?1? cases/test_hunyuan_image_tp2_cfgp2.json: requires 4 GPU(s), found none*",
    ])


def _collect(pytester: pytest.Pytester, rows: list[dict[str, Any]], *args: str
             ) -> pytest.RunResult:
    (pytester.path / "case.json").write_text(json.dumps(rows))
    return pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q",
                              "--omni-cases=case.json", *args)


def _row(**changes: Any) -> dict[str, Any]:
    entry = {"name": "e", "dataset": "random", "task": "t2i", "width": 64, "height": 64,
             "num-inference-steps": 2, "num-prompts": 2, "max-concurrency": 1}
    row: dict[str, Any] = {"test_name": "test_x", "server_type": "vllm-omni",
                           "server_params": {"model": "tiny-flux", "serve_args": {}},
                           "benchmark_params": [entry]}
    for key, value in changes.items():
        if key == "serve_args":
            row["server_params"]["serve_args"] = value
        elif key in ("mark",):
            row[key] = value
        else:
            entry[key.replace("_", "-")] = value
    return row


@pytest.mark.parametrize(("changes", "message"), [
    ({"num_inference_steps": 0},
     "*case.json: row 0 (test_x).benchmark_params[0] (e).num-inference-steps: "
     "expected a whole number >= 1, got 0"),
    ({"max_concurrency": [1, "2"]},
     "*row 0 (test_x).benchmark_params[0] (e).max-concurrency[1]: expected a whole number "
     ">= 1, got str '2'"),
    ({"baseline": {"latency_mean": [1.0, 2.0]}},
     "*benchmark_params[0] (e).baseline.latency_mean: a list of 2 needs a max-concurrency "
     "list of as many levels"),
    ({"baseline": {"H100": {"latency_mean": float("nan")}}},
     "*benchmark_params[0] (e).baseline.H100.latency_mean: expected a finite number > 0, "
     "got nan"),
    ({"serve_args": {"cfg-parallel-size": 3}},
     "*row 0 (test_x).server_params.serve_args.cfg-parallel-size: expected one of 1, 2, "
     "got 3"),
    ({"serve_args": {"enforce-eagr": True}},
     "*row 0 (test_x).server_params.serve_args.enforce-eagr: unknown option; did you mean "
     "enforce_eager?"),
    ({"serve_args": {"cache-backend": "cache_dit", "cache-config": {"max_warmup_step": 4}}},
     "*serve_args.cache-config.max_warmup_step: not a cache_dit setting*"),
    ({"mark": [{"hardware_marks": {"res": {"cuda": "H100"}, "num_cards": 1}},
               {"hardware_marks": {"res": {"cuda": "H100"}, "num_cards": 2}}]},
     "*row 0 (test_x).mark[1]: a second hardware_marks (one row, one cards_<n> mark)"),
])
def test_bad_fields_name_file_row_and_field(pytester: pytest.Pytester,
                                            changes: dict[str, Any], message: str) -> None:
    result = _collect(pytester, [_row(**changes)])
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*" + glob.escape(message.lstrip("*")).replace(
        glob.escape("*"), "*")])


def test_marks_select_as_their_ci_does(pytester: pytest.Pytester) -> None:
    for path in CASES.glob("*.json"):
        shutil.copy(path, pytester.path)
    names = ",".join(p.name for p in sorted(CASES.glob("*.json")))
    selected = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers",
                                  "--collect-only", "-q", f"--omni-cases={names}",
                                  "-m", "H100 and cards_1")
    assert sorted(line.split("::")[1] for line in selected.outlines if "::" in line) == [
        "test_boogu_image_cache_dit_single_device[512x512_steps28_cache_dit]",
        "test_hunyuanvideo15_t2v_single_device[832x480_frames33_steps4]",
        "test_ltx2_baseline_eager[256x256_145f_steps6]",
        "test_ltx2_baseline_eager[480x768_41f_steps20]",
        "test_wan22_i2v_single_device[832x480_frames81_steps4-c1]",
        "test_wan22_i2v_single_device[832x480_frames81_steps4-c2]"]
    everything, _ = pytester.inline_genitems("-p", "no:cacheprovider",
                                             f"--omni-cases={names}")
    for item in everything:
        cards = [m.name for m in item.iter_markers() if m.name.startswith("cards_")]
        assert len(set(cards)) <= 1, (item.name, cards)
    by_name = {item.name: item for item in everything}
    hunyuan = by_name["test_hunyuan_image_tp2_cfgp2[1024x1024_steps8]"]
    assert {"cuda", "H100", "cards_4", "diffusion", "local_model"} <= \
        {m.name for m in hunyuan.iter_markers()}
    video = by_name["test_hunyuanvideo15_t2v_single_device[832x480_frames33_steps4]"]
    assert {"cuda", "H100", "B200", "cards_1"} <= {m.name for m in video.iter_markers()}


def test_missing_case_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--omni-cases=nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--omni-cases: no case file 'nope.json'*"])


def test_ini_key_reads_paths_beside_the_ini_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "edit.json").write_text(json.dumps([_row(task="ti2i")]))
    pytester.makeini("[pytest]\nomni_cases = edit.json\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*task 'ti2i' needs image inputs (the case reader makes "
                                 "input images for i2v and i2i only yet)*"])


@pytest.mark.parametrize(("changes", "skip"), [
    ({"num_input_images": 2},
     "*num-input-images 2: POST /v1/videos takes one input image (input_reference)"),
    ({"backend": "v1/images/generations"},
     "*backend 'v1/images/generations': the load client drives v1/videos for i2v only"),
])
def test_i2v_entries_the_load_client_cannot_send_skip(pytester: pytest.Pytester,
                                                      changes: dict[str, Any], skip: str
                                                      ) -> None:
    (pytester.path / "case.json").write_text(json.dumps([_row(
        task="i2v", num_frames=5, **changes)]))
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--omni-cases=case.json")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([skip])


def test_i2v_requests_carry_the_random_datasets_image() -> None:
    from pytest_omni_perf.case_items import request_of
    from pytest_omni_perf.cases.reader import read_case_file

    [one, two] = read_case_file(CASES / "test_wan22_i2v_vllm_omni.json")
    assert (one.task, one.input_images, one.concurrency, two.concurrency) == ("i2v", 1, 1, 2)
    request = request_of(one, "a prompt", one.steps)
    [image] = request.images
    assert (image.width, image.height, image.pixels().min()) == (512, 512, 255)
    assert request.is_video and request.num_frames == 5


def _edit_row(name: str, model: str, images: int | None) -> dict[str, Any]:
    """An i2i row as vLLM-Omni's Qwen-Image-Edit rows are written (tests/dfx/perf/tests/
    test_qwen_image_edit_vllm_omni.json @ b876e2a, test_qwen_image_edit_2509_vllm_omni.json
    @ 25b8f51: task i2i, no backend, random dataset, negative prompt, num-input-images 2 for
    2509), at a CPU size and with a built-in edit model in the Qwen model's place."""
    entry: dict[str, Any] = {
        "name": "64x64_steps2_i2i", "dataset": "random", "task": "i2i", "width": 64,
        "height": 64, "num-inference-steps": 2, "num-prompts": 5, "max-concurrency": 1,
        "warmup-requests": 0, "enable-negative-prompt": True,
        "baseline": {"latency_mean": 600, "throughput_qps": 0.001}}
    if images is not None:
        entry["num-input-images"] = images
    return {"test_name": name, "server_type": "vllm-omni",
            "server_params": {"model": model, "serve_args": {}}, "benchmark_params": [entry]}


def test_i2i_rows_send_their_input_images_to_the_edits_endpoint(
        pytester: pytest.Pytester, tiny_model_cache: Path) -> None:
    """An i2i row runs through the shipped server's /v1/images/edits with the random
    dataset's white picture(s): one for Flux-Kontext, two for the two-image edit model; two
    for Kontext fail every request with vLLM-Omni's 400, named in the failure."""
    rows = [_edit_row("test_edit", "tiny-flux-kontext", None),
            _edit_row("test_edit_2509", "tiny-qwen-image-edit-plus", 2),
            _edit_row("test_edit_too_many", "tiny-flux-kontext", 2)]
    (pytester.path / "edit.json").write_text(json.dumps(rows))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", "--omni-cases=edit.json", SERVER,
        f"--omni-cache-dir={tiny_model_cache}", "--omni-report-json=report.json",
        "--omni-report-markdown=support.md")
    result.assert_outcomes(passed=2, failed=1)
    # The support table has rows for measure() results only: an empty page says why (the
    # GPU case run wrote headings and no table, results/h100/cases/cases.md).
    assert ("No profile was measured or skipped by a test of this run, so the table has no "
            "rows; its 3 load result(s) are in the JSON and HTML reports.") in \
        (pytester.path / "support.md").read_text()
    result.stdout.fnmatch_lines_random([
        "*test_edit_too_many?64x64_steps2_i2i? FAILED*",
        "*edit.json: row 2 (test_edit_too_many), benchmark_params?0? (64x64_steps2_i2i), "
        "concurrency 1: 5 of 5 requests failed; first: HTTP 400: Received multiple input "
        "images. Only a single image is supported by this model."])
    cases = {case["nodeid"].split("::")[-1]: case for case in
             json.loads((pytester.path / "report.json").read_text())["cases"]}
    for name in ("test_edit[64x64_steps2_i2i]", "test_edit_2509[64x64_steps2_i2i]"):
        assert cases[name]["measured"]["completed"] == 5, cases[name]
        assert cases[name]["verdict"] == "pass"


def test_options_the_shipped_server_lacks_skip_naming_them(pytester: pytest.Pytester) -> None:
    row = _row()
    row["server_params"]["serve_args"] = {"max_num_seqs": 2,
                                          "enable-diffusion-pipeline-profiler": True}
    (pytester.path / "case.json").write_text(json.dumps([row]))
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--omni-cases=case.json",
                                SERVER)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*serve_args: pass-through option(s) max_num_seqs: the "
                                 "shipped server (pytest_omni_perf.serve, the diffusers "
                                 "engine) takes no such option; they pass through to a vllm "
                                 "serve --omni command only"])
