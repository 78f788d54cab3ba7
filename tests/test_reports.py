"""The JSON, HTML, JUnit and pytest-benchmark reports: writers on synthetic results, then
real pytest runs through the plugin (serial and xdist), then the page in headless Chromium."""

from __future__ import annotations

import base64
import datetime
import io
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.report import benchmark_export as bench
from pytest_omni_perf.report import html_report, images, json_report

WHEN = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.timezone.utc)


def measurement(profile: str, samples: list[float], peak: int, frames: int = 1) -> dict[str, Any]:
    ordered = sorted(samples)
    latency = {"n": len(samples), "median": ordered[len(samples) // 2], "p90": ordered[-1],
               "mean": sum(samples) / len(samples), "stdev": 0.001, "min": ordered[0],
               "max": ordered[-1], "samples": samples}
    return {"profile": profile, "model": "tiny-flux", "backend": "diffusers",
            "request": {"width": 32, "height": 32, "num_inference_steps": 2, "seed": 0,
                        "num_frames": frames if frames > 1 else None},
            "samples_s": samples, "latency": latency, "engine_latency": latency,
            "memory": {"kind": "rss", "peak_bytes": peak, "samples": 3}, "start_s": 1.5,
            "first_request_s": 0.5, "cold_start_s": 2.0, "engine_reused": False,
            "applied": {}, "engine_metrics": {}, "interleaved_with": None,
            "output_shape": [32, 32, 3], "output_frames": frames}


def result(nodeid: str, profile: str, samples: list[float], *, speedup: float | None = None,
           ssim: float | None = None, peak: int = 2**30, violations: tuple[str, ...] = (),
           label: str = "", frames: int = 1) -> dict[str, Any]:
    base = None if speedup is None else measurement("eager", [0.2, 0.21, 0.22], 2**30)
    quality = None if ssim is None else {
        "ssim_mean": ssim, "ssim_min": ssim - 0.01, "psnr_mean": float("inf"),
        "per_frame_ssim": [ssim] * frames, "worst_frame": 0}
    return {"nodeid": nodeid, "profile": profile, "label": label,
            "bounds": {"min_speedup": 1.2, "min_ssim": 0.9},
            "measurement": measurement(profile, samples, peak, frames), "baseline": base,
            "speedup": speedup, "quality": quality, "stored_quality": None, "regression": None,
            "memory_ratio": None, "stored_path": None,
            "violations": [{"metric": m, "message": f"{m} <broke>"} for m in violations],
            "notes": [], "verdict": "fail" if violations else "pass", "fingerprint": {},
            "outcome": "failed" if violations else "passed"}


RESULTS = [
    result("t.py::test_a[eager]", "eager", [0.2, 0.21, 0.22]),
    result("t.py::test_a[cache_dit]", "cache_dit", [0.1, 0.11, 0.12], speedup=1.9, ssim=0.999),
    result("t.py::test_a[fp8]", "fp8", [0.3, 0.31, 0.33], speedup=0.7, ssim=0.95,
           peak=3 * 2**29, violations=("speedup",)),
    result("t.py::test_v[cache_dit]", "cache_dit", [0.5, 0.52, 0.55, 0.6], speedup=1.5,
           ssim=0.99, label="long", frames=9),
]


def strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# -- JSON --------------------------------------------------------------------------------------
def test_json_document_follows_the_schema(tmp_path: Path) -> None:
    document = json_report.build_document(
        RESULTS, hardware={"summary": "no GPU", "key": "cpu", "gpus": []},
        backend=("diffusers", "auto: no vllm_omni"), run={"model": "tiny-flux"},
        session=json_report.session_facts({"gw0": {"engine_starts": 2},
                                           "gw1": {"engine_starts": 3}}), created=WHEN)
    path = tmp_path / "deep" / "report.json"
    json_report.write_json(path, document)
    loaded = strict_json(path.read_text())  # infinite PSNR must not leak as "Infinity"
    assert list(loaded) == ["schema_version", "created", "pytest_omni_perf", "hardware",
                            "backend", "run", "session", "results", "totals", "skipped", "loads",
                            "cases", "support", "recommendations"]
    # One support row per measured model, one entry per method of the guide (support.py).
    assert {e["status"] for row in loaded["support"].values() for e in row} >= {"not measured"}
    assert loaded["schema_version"] == 1 and loaded["created"] == "2026-11-26T12:00:00+00:00"
    assert loaded["backend"] == {"name": "diffusers", "why": "auto: no vllm_omni"}
    assert loaded["session"]["engine_starts"] == 5
    assert loaded["results"][1]["quality"]["psnr_mean"] is None
    assert loaded["results"][2]["violations"][0]["metric"] == "speedup"
    assert loaded["totals"] == {"results": 4, "tests": 4, "passed": 3, "failed": 1,
                                "inconclusive": 0,
                                "violations": 1, "outcomes": {"failed": 1, "passed": 3}}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left


def test_engine_supplied_numpy_values_still_give_strict_json(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "r.json"
    json_report.write_json(path, {"m": {"a": np.float32(0.5), "b": np.array([1.0, np.nan]),
                                        "c": object}})
    assert strict_json(path.read_text()) == {"m": {"a": 0.5, "b": [1.0, None],
                                                   "c": "<class 'object'>"}}


def test_atomic_write_keeps_the_old_report_when_writing_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        json_report.write_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_junit_properties_are_flat_scalars() -> None:
    props = dict(json_report.junit_properties(RESULTS[1]))
    assert props["omni_perf.cache_dit.median_s"] == 0.11
    assert props["omni_perf.cache_dit.speedup"] == 1.9
    assert props["omni_perf.cache_dit.ssim"] == 0.999
    assert props["omni_perf.cache_dit.peak_memory_gib"] == 1.0
    assert props["omni_perf.cache_dit.verdict"] == "pass"
    assert "omni_perf.eager.speedup" not in dict(json_report.junit_properties(RESULTS[0]))
    assert dict(json_report.junit_properties(RESULTS[3]))["omni_perf.cache_dit@long.ssim"]


# -- pytest-benchmark export -------------------------------------------------------------------
def test_benchmark_stats_match_hand_computed_quartiles() -> None:
    even = bench.benchmark_stats([9, 1, 2, 3, 4, 5, 6, 7, 8, 100])
    assert (even["q1"], even["q3"], even["iqr"], even["median"]) == (3, 8, 5, 5.5)
    assert (even["ld15iqr"], even["hd15iqr"], even["iqr_outliers"]) == (1, 9, 1)
    assert even["outliers"] == "1;1" and even["ops"] == 10 / 145 and even["rounds"] == 10
    odd = bench.benchmark_stats([1, 2, 3, 4, 5, 6, 7])  # pytest-benchmark's method 3
    assert (odd["q1"], odd["q3"]) == (2.25, 5.75)
    one = bench.benchmark_stats([0.5])
    assert (one["stddev"], one["q1"], one["hd15iqr"], one["iterations"]) == (0, 0.5, 0.5, 1)


def test_benchmark_stats_equal_pytest_benchmarks_own() -> None:
    stats = pytest.importorskip("pytest_benchmark.stats", reason="pytest-benchmark not installed")
    import random

    rng = random.Random(7)
    for n in range(1, 30):
        data = [round(rng.lognormvariate(-3, 0.5), 3) for _ in range(n)]  # ties included
        theirs = stats.Stats()
        for value in data:
            theirs.update(value)
        ours = bench.benchmark_stats(data)
        for key, value in theirs.as_dict().items():
            if isinstance(value, str):  # e.g. "outliers": "1;0"
                assert ours[key] == value, (n, key)
            else:
                assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-15), (n, key)


def test_benchmark_document_layout() -> None:
    doc = bench.benchmark_document(RESULTS, machine=bench.machine_info(),
                                   commit={"id": "abc"}, warmup=1, created=WHEN)
    assert list(doc) == ["machine_info", "commit_info", "benchmarks", "datetime", "version"]
    first = doc["benchmarks"][1]
    assert list(first) == ["group", "name", "fullname", "params", "param", "extra_info",
                           "options", "stats"]
    assert (first["group"], first["name"], first["param"]) == (
        "t.py::test_a", "test_a[cache_dit]", "cache_dit")
    assert first["extra_info"]["speedup"] == 1.9 and first["extra_info"]["ssim"] == 0.999
    assert first["stats"]["data"] == [0.1, 0.11, 0.12]
    labelled = doc["benchmarks"][3]
    assert labelled["name"] == "test_v[cache_dit]@long" and labelled["group"] == "t.py::test_v@long"


def test_pytest_benchmark_compare_reads_two_exports(tmp_path: Path) -> None:
    tool = shutil.which("pytest-benchmark")
    if tool is None:
        pytest.skip("the pytest-benchmark command is not on PATH (pip install pytest-benchmark)")
    for name, scale in (("0001_a.json", 1.0), ("0002_b.json", 1.3)):
        results = [{**r, "measurement": {**r["measurement"], "samples_s": [
            s * scale for s in r["measurement"]["samples_s"]]}} for r in RESULTS]
        doc = bench.benchmark_document(results, machine=bench.machine_info(),
                                       commit=bench.commit_info(tmp_path), warmup=1)
        json_report.write_json(tmp_path / name, doc)
    done = subprocess.run([tool, "compare", "0001_a.json", "0002_b.json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "benchmark 't.py::test_a': 6 tests" in done.stdout
    assert re.search(r"test_a\[cache_dit\] \(0002_b\)\s+130\.0000", done.stdout), done.stdout


# -- HTML pieces -------------------------------------------------------------------------------
def test_html_page_from_synthetic_results(tmp_path: Path) -> None:
    page = html_report.render_html(
        {"results": [{**RESULTS[0], "nodeid": "t.py::test_<a>"}, *RESULTS[1:]],
         "totals": json_report.totals(RESULTS)}, tmp_path)
    assert "test_&lt;a&gt;" in page and "<a>" not in page.replace("<a href", "")
    assert re.search(r'<ul class="viol"><li><b>speedup</b>: speedup &lt;broke&gt;</li></ul>',
                     page)
    assert page.count('<figure class="chart"><svg') == 3  # two tests' charts + a video curve
    chart = html_report.speed_quality_svg(RESULTS[:3])
    assert chart.count('fill-opacity="0.55"') == 2  # cache_dit and fp8; eager is the ring
    radii = [float(r) for r in re.findall(r'r="([\d.]+)" fill="#[0-9a-f]+" fill-opacity', chart)]
    assert len(radii) == 2 and radii[1] > radii[0]  # fp8 peaks higher: a bigger marker
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # Counted as the terminal counts (test functions x profiles), singular where one.
    assert "of 4 results: 3 tests x 3 profiles; 1 violation</p>" in page


def test_html_card_says_why_a_regression_only_warns(tmp_path: Path) -> None:
    reference = {**RESULTS[0], "latency_ratio": {"estimate": 1.3, "low": 1.2, "high": 1.4,
                                                 "confidence": 0.95, "rounds": 10},
                 "notes": ["latency_regression (warning only: absolute latency of a reference "
                           "profile varies between hosts): 1.30x the stored median ..."]}
    page = html_report.render_html({"results": [reference], "totals": json_report.totals(
        [reference])}, tmp_path)
    assert "1.300x [1.200, 1.400]" in page and "a warning only, the test does not fail: absolute " \
        "latency of a reference profile varies between hosts" in page
    assert "of 1 result: 1 test x 1 profile; 0 violations</p>" in page


def test_html_alone_leaves_no_image_folder(standin_pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.01")  # a real speedup, so it passes
    standin_pytester.makepyfile(test_perf=PERF_TESTS)
    standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0", "-k", "test_image",
        "--omni-profile=eager,cache_dit", "--omni-update-baselines",
        "--omni-report-html=out/report.html").assert_outcomes(passed=2)
    out = standin_pytester.path / "out"
    assert embedded_pngs((out / "report.html").read_text())  # the images are in the page
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


def test_thumbnails_and_frame_choice() -> None:
    import numpy as np

    assert images.shown_frames(1) == [0]
    assert images.shown_frames(81, worst=40) == [0, 27, 40, 53, 80]
    big = np.zeros((600, 300, 3), np.uint8)
    assert images.thumbnail(big).shape == (256, 128, 3)
    assert images.thumbnail(big[:20, :10]).shape == (20, 10, 3)  # never enlarged
    png = images.png_bytes(images.thumbnail(big))
    assert images.data_uri(png).startswith("data:image/png;base64,iVBORw0KGgo")


# -- through the plugin ------------------------------------------------------------------------
PERF_TESTS = """
def test_image(omni_perf):
    omni_perf.measure(width=48, height=32, num_inference_steps=2)

def test_two_requests(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2, label="small")
    omni_perf.measure(width=48, height=48, num_inference_steps=2, label="large")

def test_video(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2, num_frames=9)
"""


def run_plugin(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_perf=PERF_TESTS)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=3", "--omni-warmup=1",
        "--omni-profile=eager,cache_dit", "--omni-update-baselines",
        "--omni-report-json=out/report.json", "--omni-report-html=out/report.html",
        "--omni-report-benchmark=out/bench.json", "--junitxml=out/junit.xml", *args)


def embedded_pngs(page: str) -> list[tuple[int, int]]:
    from PIL import Image

    sizes = []
    for data in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            image.load()
            sizes.append(image.size)
    return sizes


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_reports_through_the_plugin(standin_pytester: pytest.Pytester, xdist: list[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.01")
    monkeypatch.setenv("STANDIN_NOISE_CACHE_DIT", "4")
    run = run_plugin(standin_pytester, *xdist)
    run.assert_outcomes(passed=6)
    out = standin_pytester.path / "out"
    run.stdout.fnmatch_lines([f"omni-perf: JSON report written to {out / 'report.json'}"])
    document = strict_json((out / "report.json").read_text())
    keys = Counter((r["nodeid"], r["profile"], r["label"]) for r in document["results"])
    expected = {(f"test_perf.py::{t}[{p}]", p, label) for p in ("eager", "cache_dit")
                for t, label in (("test_image", ""), ("test_two_requests", "small"),
                                 ("test_two_requests", "large"), ("test_video", ""))}
    assert set(keys) == expected and set(keys.values()) == {1}  # each result exactly once
    assert document["totals"]["results"] == 8 and document["totals"]["outcomes"] == {"passed": 8}
    processes = document["session"]["processes"]
    assert set(processes) == ({"gw0", "gw1"} if xdist else {"main"})
    assert document["session"]["engine_starts"] == sum(
        p["engine_starts"] for p in processes.values()) >= 2

    page = (out / "report.html").read_text()
    sizes = embedded_pngs(page)
    shown = {(r["profile"], r["nodeid"].split("::")[1].split("[")[0], r["label"]):
             r["images"]["frames"] for r in document["results"]}
    assert shown[("eager", "test_image", "")] == [0]
    assert shown[("eager", "test_video", "")] == [0, 3, 5, 8]  # evenly spaced, ends included
    # The reference profile shows its output; cache_dit baseline, output and heat map.
    assert len(sizes) == sum(len(f) * (1 if p == "eager" else 3) for (p, _, _), f in shown.items())
    assert (48, 32) in sizes and (48, 48) in sizes and (32, 32) in sizes
    assert "report.html.assets" not in page and "file:" not in page

    tree = ET.parse(out / "junit.xml")
    props = {p.get("name"): p.get("value") for p in tree.iter("property")}
    assert props["omni_perf.cache_dit@large.verdict"] == "pass"
    assert float(props["omni_perf.cache_dit.speedup"] or 0) > 1.0  # 0.02 s eager vs 0.01 s
    exported = strict_json((out / "bench.json").read_text())
    assert len(exported["benchmarks"]) == 8
    assert all(b["stats"]["rounds"] >= 3 for b in exported["benchmarks"])  # adaptive: 3 or more


# -- in a real browser -------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
IMG_PROBE = """<script>window.addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'img-probe';
  out.textContent = JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth]));
  document.body.appendChild(out);});</script></body>"""


def chromium_exe() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if (exe := shutil.which(name)) is not None:
            return exe
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a fresh profile and nothing that reaches the network."""
    return subprocess.run([chromium_exe(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=60)


def test_html_report_renders_in_chromium(standin_pytester: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    chromium_exe()  # skip before the pytest run when there is no browser
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.01")
    monkeypatch.setenv("STANDIN_NOISE_CACHE_DIT", "80")  # breaks the SSIM gate: red on the page
    run_plugin(standin_pytester).assert_outcomes(passed=3, failed=3)
    page = standin_pytester.path / "out" / "report.html"
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", IMG_PROBE))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(),
                   profile=tmp_path / "p1")
    found = re.search(r'<pre id="img-probe">(.*?)</pre>', dom.stdout)
    assert found, dom.stderr[-2000:]
    decoded = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(decoded) == page.read_text().count("<img ") >= 28
    assert all(done and width > 0 for done, width in decoded), decoded

    shot = tmp_path / "shot.png"
    chromium("--window-size=1280,2000", f"--screenshot={shot}", page.as_uri(),
             profile=tmp_path / "p2")
    with Image.open(shot) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    assert rgb.shape == (2000, 1280, 3)
    assert rgb.mean(axis=-1).std() > 20  # not a blank page
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert red.sum() > 100  # the failed gate shows in red
    if os.environ.get("OMNI_PERF_KEEP_SCREENSHOT"):  # to look at it by eye
        shutil.copy(shot, os.environ["OMNI_PERF_KEEP_SCREENSHOT"])
