"""vLLM-Omni's nightly perf case files (``tests/dfx/perf/tests/*.json``) read into checked entries.

A file is a JSON list of rows; each row names a server (``server_params``: ``model`` and
``serve_args``) and a list of ``benchmark_params`` entries (request shape, load, baseline).
One ``CaseEntry`` is made per row, entry and concurrency level. Every field is checked here,
where it enters, and a bad one raises ``CaseError`` naming the file, the row and the field.
What the plugin cannot run yet (ti2i/ti2v inputs, audio, other datasets, fields it does not
know) is not an error: the entry carries a ``skip`` reason that names it.

A row's ``benchmark_params`` may be ``{"$ref": FILE}`` and any field ``<key>-inline`` (file
content written out, ``<key>`` given its path), as vLLM-Omni's runner reads them
(``cases.includes``). ``serve_args`` are split into canonical options
(``canonical.CANONICAL_OPTIONS``, by field name or by their ``vllm serve`` flag) and the
rest, pass-through options kept as written (``passthrough``).
Stdlib only at import time.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_omni_perf import canonical, passthrough
from pytest_omni_perf.cases.bounds import check_baseline
from pytest_omni_perf.cases.includes import resolve_inline, resolve_ref
from pytest_omni_perf.cases.marks import MarkError, read_marks
from pytest_omni_perf.numeric import Range


class CaseError(ValueError):
    """A case file is malformed; the message names the file, the row and the field."""


RUNNABLE_TASKS = ("t2i", "t2v", "i2v", "i2i")
_NO_IMAGES = "image inputs (the case reader makes input images for i2v and i2i only yet)"
_MISSING_BY_TASK = {
    "ti2i": _NO_IMAGES, "ti2v": _NO_IMAGES, "edit": _NO_IMAGES,
    "t2a": "audio outputs (the load client handles images and videos only)",
    "t2s": "audio outputs (the load client handles images and videos only)",
    "tts": "audio outputs (the load client handles images and videos only)",
}
# The endpoint the load client uses per task, as the case files' "backend" spells it. i2i
# rows (Qwen-Image-Edit, -2509, -2511 in vLLM-Omni's tests/dfx/perf/tests) name no backend;
# their edits go to POST /v1/images/edits, several input images as repeated image parts.
_ENDPOINTS = {"t2i": "v1/images/generations", "t2v": "v1/videos", "i2v": "v1/videos",
              "i2i": "v1/images/edits"}
IMAGE_TASKS = ("i2v", "i2i")
"""Runnable tasks whose requests carry input images (``num-input-images``, default 1, as
vLLM-Omni's benchmark client attaches ``max(1, n)`` to its random dataset's requests)."""
_ROW_KEYS = frozenset({"test_name", "description", "server_type", "server_params",
                       "benchmark_params", "mark"})
_ENTRY_KEYS = frozenset({
    "name", "dataset", "task", "backend", "width", "height", "num-inference-steps",
    "num-frames", "fps", "num-prompts", "max-concurrency", "request-rate", "warmup-requests",
    "warmup-concurrency", "warmup-num-inference-steps", "enable-negative-prompt", "seed",
    "extra-body", "random-request-config", "num-input-images", "baseline"})
# random-request-config spells the request fields with underscores.
_RANDOM_CONFIG_KEYS = {"width": "width", "height": "height", "num_inference_steps":
                       "num-inference-steps", "num_frames": "num-frames", "fps": "fps"}
_WHOLE_POSITIVE = Range(1, whole=True)
_WHOLE = Range(0, whole=True)
NEGATIVE_PROMPT = "blurry, low quality, distorted"
"""Sent when an entry sets enable-negative-prompt (the case files give no text of their own)."""


@dataclasses.dataclass(frozen=True)
class CaseEntry:
    """One test item: a row's server, one benchmark_params entry, one concurrency level."""

    source: Path
    row: int
    """0-based index of the row in the file."""
    test_name: str
    entry: str
    """The entry's ``name``."""
    entry_index: int
    item_name: str
    """``test_name[entry]``, or ``test_name[entry-c<n>]`` for a level of a concurrency list."""
    server_type: str
    model: str
    options: Mapping[str, Any]
    """Canonical options (``OmniDiffusionConfig`` field names) from ``serve_args``."""
    passthrough: Mapping[str, Any]
    """serve_args outside the canonical set, keys and values as the file writes them."""
    marks: tuple[str, ...]
    """Plain marks, platform marks (cuda, npu, rocm) and SKU marks (H100, A3, ...)."""
    cards: int | None
    """``num_cards`` of the row's hardware_marks."""
    task: str
    dataset: str
    width: int
    height: int
    steps: int
    num_frames: int | None
    fps: int | None
    seed: int
    negative_prompt: bool
    extra_body: Mapping[str, Any]
    input_images: int
    """Input images per request (``num-input-images``; 0 for tasks that take none)."""
    num_prompts: int
    concurrency: int
    level: int | None
    """Index of ``concurrency`` in a max-concurrency list (None for a single number)."""
    request_rate: float | None
    """Requests per second (Poisson arrivals); None sends them as fast as concurrency allows."""
    warmup_requests: int
    warmup_concurrency: int
    warmup_steps: int
    baseline: Mapping[str, Any]
    skip: str | None = None

    @property
    def where(self) -> str:
        """``FILE: row R (test_name), benchmark_params[J] (entry)`` for messages."""
        return (f"{self.source}: row {self.row} ({self.test_name}), "
                f"benchmark_params[{self.entry_index}] ({self.entry})")

    @property
    def is_video(self) -> bool:
        return self.task.endswith("v")


def read_case_file(path: Path) -> list[CaseEntry]:
    """Every entry of a case file, checked; CaseError naming file, row and field."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(f"{path}: cannot read the case file ({exc})") from None
    except ValueError as exc:
        raise CaseError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise CaseError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    entries: list[CaseEntry] = []
    names: set[str] = set()
    for index, row in enumerate(rows):
        for entry in _row_entries(path, index, row):
            if entry.item_name in names:
                raise CaseError(f"{entry.where}: the name {entry.item_name!r} is used twice "
                                "in this file")
            names.add(entry.item_name)
            entries.append(entry)
    return entries


def _row_entries(path: Path, index: int, row: object) -> list[CaseEntry]:
    where = f"{path}: row {index}"
    if not isinstance(row, dict):
        raise CaseError(f"{where}: expected an object, got {type(row).__name__}")
    name = _text(row, "test_name", where)
    where = f"{where} ({name})"
    resolve_ref(row, where, path.parent, CaseError)
    resolve_inline(row, where, CaseError)
    server_type = _text(row, "server_type", where, default="vllm-omni")
    params = row.get("server_params")
    if not isinstance(params, dict):
        raise CaseError(f"{where}.server_params: expected an object with model and serve_args")
    model = _text(params, "model", f"{where}.server_params")
    raw_args = params.get("serve_args", {})
    if not isinstance(raw_args, dict):
        raise CaseError(f"{where}.server_params.serve_args: expected an object, got "
                        f"{type(raw_args).__name__}")
    options, passthrough = split_serve_args(raw_args, f"{where}.server_params.serve_args")
    try:
        marks, cards = read_marks(row.get("mark"), f"{where}.mark")
    except MarkError as exc:
        raise CaseError(str(exc)) from None
    bench = row.get("benchmark_params")
    if not isinstance(bench, list) or not bench:
        raise CaseError(f"{where}.benchmark_params: expected a non-empty list of entries")
    row_skip = None
    if server_type != "vllm-omni":
        row_skip = f"server_type {server_type!r}: only 'vllm-omni' rows are run"
    elif unknown := sorted(set(row) - _ROW_KEYS):
        row_skip = f"row field(s) {', '.join(unknown)} not understood by the case reader yet"
    common = {"source": path, "row": index, "test_name": name, "server_type": server_type,
              "model": model, "options": options, "passthrough": passthrough,
              "marks": marks, "cards": cards}
    entries = []
    for j, raw in enumerate(bench):
        for entry in _entries(raw, f"{where}.benchmark_params[{j}]", j, common):
            entries.append(dataclasses.replace(entry, skip=row_skip or entry.skip))
    return entries


def split_serve_args(raw: Mapping[str, Any], where: str
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``serve_args`` as (canonical options, the rest as written); CaseError for a canonical
    option of the wrong type or value, naming the key as the file spells it."""
    aliases = canonical.spellings()
    options: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    rest: dict[str, Any] = {}
    for key, value in raw.items():
        name = aliases.get(key)
        if name is None:
            if (why := passthrough.name_problem(key, canonical.CANONICAL_OPTIONS)) is not None:
                raise CaseError(f"{where}.{key}: {why}")
            rest[key] = value
            continue
        if name == "cache_config" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise CaseError(f"{where}.{key}: not valid JSON ({exc})") from None
        if name in options:
            raise CaseError(f"{where}.{key}: the same option as {spelled[name]!r}")
        options[name], spelled[name] = value, key
    for problem in canonical.validate_options(options):
        field, _, why = problem.partition(": ")
        head, dot, tail = field.partition(".")
        raise CaseError(f"{where}.{spelled.get(head, head)}{dot}{tail}: {why}")
    return options, rest


def _entries(raw: object, where: str, index: int, common: Mapping[str, Any]
             ) -> list[CaseEntry]:
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: expected an object, got {type(raw).__name__}")
    name = _text(raw, "name", where)
    where = f"{where} ({name})"
    fields = dict(raw)
    skip = None
    configs = fields.pop("random-request-config", None)
    if configs is not None:
        if not isinstance(configs, list) or not configs or \
                not all(isinstance(c, dict) for c in configs):
            raise CaseError(f"{where}.random-request-config: expected a list of objects")
        if len(configs) > 1:
            skip = "random-request-config with several weighted shapes: not run yet"
        for key, value in configs[0].items():
            if key in _RANDOM_CONFIG_KEYS:
                fields.setdefault(_RANDOM_CONFIG_KEYS[key], value)
            elif key != "weight":
                skip = skip or f"random-request-config field {key!r} not understood yet"
    if unknown := sorted(set(fields) - _ENTRY_KEYS):
        skip = skip or f"benchmark_params field(s) {', '.join(unknown)} not understood yet"
    task = _text(fields, "task", where)
    dataset = _text(fields, "dataset", where, default="random")
    if task not in RUNNABLE_TASKS:
        missing = _MISSING_BY_TASK.get(task, "a task the case reader does not know")
        skip = f"task {task!r} needs {missing}"
    elif (endpoint := fields.get("backend")) is not None and \
            endpoint != _ENDPOINTS[task]:
        skip = skip or (f"backend {endpoint!r}: the load client drives {_ENDPOINTS[task]} "
                        f"for {task} only")
    elif dataset != "random":
        skip = skip or f"dataset {dataset!r}: only 'random' prompts are generated yet"
    # vLLM-Omni's client attaches input images to image tasks only; others ignore the field.
    inputs = max(1, _number(fields, "num-input-images", where, _WHOLE, 1) or 0) \
        if task in IMAGE_TASKS else 0
    if inputs > 1 and task == "i2v":
        skip = skip or (f"num-input-images {inputs}: POST /v1/videos takes one input image "
                        "(input_reference)")

    def whole(key: str, default: int | None, rule: Range = _WHOLE_POSITIVE) -> int | None:
        return _number(fields, key, where, rule, default)

    steps = whole("num-inference-steps", None)
    width, height = whole("width", None), whole("height", None)
    for key, value in (("width", width), ("height", height), ("num-inference-steps", steps)):
        if value is None:
            raise CaseError(f"{where}.{key}: missing (the request needs it)")
    frames = whole("num-frames", None)
    if task in ("t2v", "i2v") and frames is None:
        raise CaseError(f"{where}.num-frames: missing (a {task} request needs it)")
    extra = fields.get("extra-body", {})
    if not isinstance(extra, dict):
        raise CaseError(f"{where}.extra-body: expected an object of request fields")
    negative = fields.get("enable-negative-prompt", False)
    if not isinstance(negative, bool):
        raise CaseError(f"{where}.enable-negative-prompt: expected true or false, got "
                        f"{negative!r}")
    levels = _concurrency(fields.get("max-concurrency", 1), f"{where}.max-concurrency")
    rate = fields.get("request-rate")
    if rate in (None, "inf") or (isinstance(rate, float) and rate == float("inf")):
        rate = None
    else:
        rate = Range(0, low_open=True).check(rate, f"{where}.request-rate", CaseError)
    baseline = check_baseline(fields.get("baseline", {}), f"{where}.baseline",
                              len(levels) if isinstance(fields.get("max-concurrency"), list)
                              else None, CaseError)
    assert steps is not None and width is not None and height is not None
    made = []
    for level, concurrency in enumerate(levels):
        swept = len(levels) > 1 or isinstance(fields.get("max-concurrency"), list)
        made.append(CaseEntry(
            **common, entry=name, entry_index=index,
            item_name=f"{common['test_name']}[{name}{f'-c{concurrency}' if swept else ''}]",
            task=task, dataset=dataset, width=width, height=height, steps=steps,
            num_frames=frames, fps=whole("fps", None), seed=int(whole("seed", 0, _WHOLE) or 0),
            negative_prompt=negative, extra_body=dict(extra), input_images=inputs,
            num_prompts=int(whole("num-prompts", 10) or 10), concurrency=concurrency,
            level=level if swept else None, request_rate=rate,
            warmup_requests=int(whole("warmup-requests", 1, _WHOLE) or 0),
            warmup_concurrency=int(whole("warmup-concurrency", 1) or 1),
            warmup_steps=int(whole("warmup-num-inference-steps", steps) or steps),
            baseline=baseline, skip=skip))
    return made


def _concurrency(raw: object, where: str) -> list[int]:
    listed = raw if isinstance(raw, list) else [raw]
    if not listed:
        raise CaseError(f"{where}: an empty list")
    return [int(_WHOLE_POSITIVE.check(v, f"{where}[{k}]" if isinstance(raw, list) else where,
                                      CaseError)) for k, v in enumerate(listed)]


def _text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise CaseError(f"{where}.{key}: expected a non-empty string, got {value!r}"[:300])
    return value


def _number(raw: Mapping[str, Any], key: str, where: str, rule: Range,
            default: int | None) -> int | None:
    if key not in raw:
        return default
    return int(rule.check(raw[key], f"{where}.{key}", CaseError))


def model_for(entry: CaseEntry, override: Mapping[str, str]) -> str:
    """The model to serve: the override for the entry's task (or ``*``), else the file's."""
    return override.get(entry.task) or override.get("*") or entry.model


def passthrough_argv(args: Mapping[str, Any]) -> list[str]:
    """Non-canonical serve_args as flags, keys kept as written (``passthrough.argv``)."""
    return passthrough.argv(args, keep_spelling=True)
