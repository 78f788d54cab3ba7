"""Every user string is safe in every format it reaches.

Test ids, labels, profile and model names, notes and messages go through each report writer
with arbitrary Unicode and control characters; the JSON parses and gives them back, the HTML
has exactly the markup of the same page with plain names, the JUnit XML parses and keeps the
text, shell lines split back into their argv, paths stay inside their folder, Markdown cells
stay one cell and terminal lines stay one line without escape sequences.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _pytest.junitxml import bin_xml_escape
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_reports import WHEN, result

from pytest_omni_perf.baselines import BaselineStore
from pytest_omni_perf.engines.base import EngineSpec
from pytest_omni_perf.engines.compile_cache import compile_cache_dir
from pytest_omni_perf.profiles import Profile
from pytest_omni_perf.report import html_report, json_report, terminal
from pytest_omni_perf.escape import (
    markdown_cell, path_component, shell_line, terminal_text, visible_controls, xml_text,
)
from pytest_omni_perf.report.listing import format_profiles
from pytest_omni_perf.state import SessionState, launch_environment, pytest_launcher

SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

NASTY = ["<script>alert(1)</script>", "a\x00b", "\x1b[2J\x1b[31mred", "x\ny\r\nz", "|a|b|",
         "&amp;\"'<>", "]]>", "--><!--", "\u2028\u2029", "\x7f\x85\x9f", "\ufffe\uffff",
         "`rm -rf ~`", "$(id)", "; ls", "'", "\\", "../../etc", "..", ".", "-n", "",
         "\U0001f600 café", "\t\x0b\x0c"]
texts = st.one_of(st.text(), st.sampled_from(NASTY),
                  st.text(st.characters(max_codepoint=0x9f)))  # mostly controls and ASCII
# Node ids from file names may carry lone surrogates (os.fsdecode's surrogateescape).
with_surrogates = st.one_of(texts, st.text(st.characters(categories=["Cs", "Cc", "L"])))

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def user_result(nodeid: str, profile: str, label: str, note: str) -> dict[str, Any]:
    made = result(nodeid, profile, [0.1, 0.11, 0.12], speedup=1.5, ssim=0.99, label=label,
                  violations=("speedup",))
    made["violations"][0]["message"] = note
    made["notes"] = [note]
    made["measurement"]["model"] = note
    made["measurement"]["applied"] = {note: note}
    made["stored_path"] = note
    return made


def document(results: list[dict[str, Any]]) -> dict[str, Any]:
    return json_report.build_document(
        results, hardware={"summary": "cpu"}, backend=("diffusers", "test"),
        run={"model": results[0]["measurement"]["model"]}, session={}, created=WHEN)


# -- JSON --------------------------------------------------------------------------------------
@SETTINGS
@given(nodeid=with_surrogates, profile=texts, label=texts, note=with_surrogates)
def test_json_report_round_trips(tmp_path: Path, nodeid: str, profile: str, label: str,
                                 note: str) -> None:
    path = tmp_path / "r.json"
    json_report.write_json(path, document([user_result(nodeid, profile, label, note)]))
    raw = path.read_bytes()
    assert raw.isascii()
    loaded = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    got = loaded["results"][0]
    assert (got["nodeid"], got["profile"], got["label"]) == (nodeid, profile, label)
    assert got["notes"] == [note] and got["measurement"]["applied"] == {note: note}
    assert loaded["run"]["model"] == note


# -- HTML --------------------------------------------------------------------------------------
class Markup(html.parser.HTMLParser):
    """The tag structure of a page (tags and attribute names) and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, ...]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, *sorted(name for name, _ in attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(("/" + tag,))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.tags.append(("<!--", data))


def markup(page: str) -> Markup:
    parser = Markup()
    parser.feed(page)
    parser.close()
    return parser


@SETTINGS
@given(nodeid=with_surrogates, profile=texts, label=texts, note=with_surrogates)
@example(nodeid="t.py::test_a[<b>]", profile="<img src=x onerror=alert(1)>",
         label="</td></tr></table><script>", note="<!-- -->&lt;")
@example(nodeid="", profile="vae_tiling", label="", note="")
def test_html_report_has_no_injected_markup(tmp_path: Path, nodeid: str, profile: str,
                                            label: str, note: str) -> None:
    # Plain names give the reference structure; the user's names must give the same one.
    # A profile that names a method of the guide adds the support table's section (found by
    # hypothesis: 'vae_tiling'), so a name that cannot hold markup is its own reference.
    plain_profile = profile if re.fullmatch(r"[A-Za-z0-9_]+", profile) else "p"
    plain = markup(html_report.render_html(
        document([user_result("t.py::test_x", plain_profile, "l" if label else "", "n")]),
        tmp_path))
    page = html_report.render_html(document([user_result(nodeid, profile, label, note)]),
                                   tmp_path)
    parsed = markup(page)
    assert parsed.tags == plain.tags
    text = "".join(parsed.text)
    for value in (nodeid, profile, note):
        assert visible_controls(value) in text
    assert not CONTROL.search(page)


# -- JUnit XML ---------------------------------------------------------------------------------
def junit_xml(properties: list[tuple[str, object]]) -> bytes:
    """Properties serialized exactly as pytest's junitxml does."""
    node = ET.Element("properties")
    for name, value in properties:
        node.append(ET.Element("property", name=str(name), value=bin_xml_escape(value)))
    return ET.tostring(node, encoding="utf-8")


@SETTINGS
@given(profile=with_surrogates, label=with_surrogates)
def test_junit_properties_parse_and_keep_the_text(profile: str, label: str) -> None:
    made = result("t.py::test_a", profile, [0.1, 0.2, 0.3], label=label)
    properties = json_report.junit_properties(made)
    parsed = ET.fromstring(junit_xml(properties))
    names = [p.get("name") for p in parsed]
    shown = profile + (f"@{label}" if label else "")
    assert names == [xml_text(f"omni_perf.{shown}.{k}") for k in (
        "median_s", "cold_start_s", "rounds", "peak_memory_gib", "memory_kind", "verdict")]
    assert all(visible_controls(shown) in str(name) for name in names)


def test_junit_file_of_a_real_run_parses(standin_pytester: pytest.Pytester) -> None:
    nasty = "\x1b[31m<&>\"'\x00|\n\ud83d"[:-1]  # no surrogate: pytest writes ids as UTF-8
    standin_pytester.makepyfile(test_perf=f"""
        import pytest

        @pytest.mark.parametrize("x", [1], ids=[{nasty!r}])
        def test_image(omni_perf, x):
            omni_perf.measure(width=16, height=16, num_inference_steps=1, label={nasty!r})
        """)
    report = standin_pytester.path / "junit.xml"
    run = standin_pytester.runpytest("--omni-rounds=2", "--omni-warmup=0", "--omni-profile=eager",
                                     f"--omni-baseline-dir={standin_pytester.path / 'bl'}",
                                     "--omni-update-baselines", f"--junitxml={report}")
    run.assert_outcomes(passed=1)
    names = [p.get("name") for p in ET.parse(report).getroot().iter("property")]
    assert f"omni_perf.eager@{visible_controls(nasty)}.median_s" in names
    summary = run.stdout.str()
    assert "\x1b[31m" not in summary.split("omni-perf summary")[1]


# -- shell, paths, Markdown, terminal ---------------------------------------------------------
def _is_path(text: str) -> bool:
    """Whether a path can hold ``text`` (a lone surrogate outside U+DC80-U+DCFF, which
    surrogateescape gives for undecodable bytes, names no file)."""
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return True


@SETTINGS
@given(nodeid=with_surrogates.filter(lambda t: "\x00" not in t), profile=texts,
       model=texts.filter(lambda t: "\x00" not in t), backend=st.sampled_from(["auto", "omni"]),
       folder=st.none() | with_surrogates.filter(lambda t: "\x00" not in t and _is_path(t)))
def test_refresh_command_splits_back(nodeid: str, profile: str, model: str,
                                     backend: str, folder: str | None) -> None:
    # folder None: the default baselines/ beside the ini file, which the command leaves out.
    baseline_dir = Path("/repo/baselines") if folder is None else Path("/elsewhere", folder)
    owner = SimpleNamespace(
        perf=SimpleNamespace(backend=backend, server_urls={}, baseline_dir=baseline_dir),
        pytest_config=SimpleNamespace(inipath=Path("/repo/pytest.ini"), rootpath=Path("/repo")))
    line = SessionState.refresh_command(owner, nodeid, profile, model)  # type: ignore[arg-type]
    argv = shlex.split(line)
    # How this run was started (test_printed_command.py), then the test's own words.
    launcher = shlex.split(launch_environment()) + pytest_launcher()
    assert argv[:len(launcher)] == launcher
    argv = argv[len(launcher) - 1:]  # from "pytest" on
    assert argv[:4] == ["pytest", nodeid, f"--omni-profile={profile}", "--omni-update-baselines"]
    assert argv == shlex.split(shell_line(argv))
    given_dir = [a for a in argv[4:] if a.startswith("--omni-baseline-dir=")]
    default = baseline_dir.resolve() == Path("/repo/baselines").resolve()
    assert given_dir == ([] if default else [f"--omni-baseline-dir={baseline_dir}"])


@SETTINGS
@given(name=with_surrogates, other=with_surrogates)
def test_paths_stay_inside_their_folder(tmp_path: Path, name: str, other: str) -> None:
    component = path_component(name)
    assert component not in ("", ".", "..") and "/" not in component and "\x00" not in component
    assert len(component.encode()) <= 255 and component.isascii()
    assert (path_component(name) == path_component(other)) == (name == other) or len(name) > 100
    root = os.path.realpath(tmp_path)
    folder = BaselineStore(tmp_path, "cpu").folder(name, other)
    assert os.path.realpath(folder).startswith(root + os.sep)
    cache = compile_cache_dir(EngineSpec(model=name, profile_name=other, options={},
                                         backend="diffusers", cache_dir=str(tmp_path)))
    assert cache.parent == tmp_path / "compile" and cache.name == path_component(name)


def split_row(row: str) -> list[str]:
    """Cells of a GitHub-flavoured Markdown table row (a ``\\|`` is not a separator)."""
    return [c for c in re.split(r"(?<!\\)(?:\\\\)*\|", row.strip())][1:-1]


@SETTINGS
@given(cells=st.lists(texts, min_size=1, max_size=4))
def test_markdown_cells_stay_one_cell(cells: list[str]) -> None:
    row = "| " + " | ".join(markdown_cell(c) for c in cells) + " |"
    assert "\n" not in row and "\r" not in row and not CONTROL.search(row)
    assert len(re.findall(r"(?<!\\)\|", row.replace("\\\\", ""))) == len(cells) + 1
    assert "<" not in row.replace("<br>", "")


@SETTINGS
@given(nodeid=with_surrogates, profile=texts, label=texts, note=texts)
def test_terminal_summary_lines_are_single_lines(nodeid: str, profile: str, label: str,
                                                 note: str) -> None:
    lines: list[str] = []
    writer = SimpleNamespace(write_sep=lambda sep, title: lines.append(title),
                             write_line=lines.append)
    terminal.write_summary(writer, [user_result(nodeid, profile, label, note)])
    assert len(lines) == 5  # title, models and legend, header, one row, one note
    for line in lines:
        assert not CONTROL.search(line) and "\n" not in line and "\r" not in line
    assert terminal_text(profile) in lines[3]


def test_profile_listing_shows_no_escape_sequences() -> None:
    listing = format_profiles({"p": Profile("p", {}, description="\x1b[2Jgone\nfake line",
                                            source="\x1b]0;title\x07.toml")})
    assert "\x1b" not in listing and "\x07" not in listing
    assert "\\x1b[2Jgone\\x0afake line" in listing
