"""What a case file takes from elsewhere, resolved before its rows are read, as vLLM-Omni's
own runner resolves it (``tests/dfx/perf/scripts/run_diffusion_benchmark.py``:
``_resolve_refs`` and ``_process_inline_fields``, vllm-project/vllm-omni at 06bd054):

- ``"benchmark_params": {"$ref": "../fixtures/params.json"}``: the list of entries lives in
  that JSON file, relative to the case file's folder (test_hunyuan_image3_prefix_caching.json
  at 54c891c).
- ``"<key>-inline": {"type": "yaml" | "jsonl", "content": ...}``, at any depth: the content
  is written to a file and ``<key>`` gets its path, so ``"deploy-config-inline"`` in
  serve_args becomes ``--deploy-config FILE`` (the same file's rows).

Inline files are named by a hash of their content in one folder under the system's
temporary directory, so every process (xdist workers too) passes the same path and rows
asking for the same server still share it. YAML is written as JSON, which YAML parsers
read as the same document, so no YAML library is needed. Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

INLINE_SUFFIX = "-inline"
INLINE_TYPES = ("yaml", "jsonl")


def inline_folder() -> Path:
    """Where inline files are written."""
    return Path(tempfile.gettempdir()) / "pytest-omni-perf-inline"


def resolve_ref(row: dict[str, Any], where: str, base: Path,
                error: Callable[[str], Exception]) -> None:
    """Replace ``benchmark_params: {"$ref": PATH}`` in ``row`` by the list PATH holds."""
    params = row.get("benchmark_params")
    if not isinstance(params, dict) or "$ref" not in params:
        return
    where = f"{where}.benchmark_params.$ref"
    ref = params["$ref"]
    if not isinstance(ref, str) or not ref.strip() or len(params) > 1:
        raise error(f"{where}: expected {{\"$ref\": \"FILE.json\"}} and nothing beside it")
    path = (base / ref).resolve()
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{where}: cannot read {ref!r} ({path}): "
                    f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise error(f"{where}: {ref!r} ({path}) is not valid JSON ({exc})") from None
    if not isinstance(loaded, list):
        raise error(f"{where}: {ref!r} ({path}) holds {type(loaded).__name__}, expected a "
                    "list of benchmark_params entries")
    row["benchmark_params"] = loaded


def write_inline(value: Any, where: str, error: Callable[[str], Exception]) -> str:
    """Write one ``-inline`` field's content to its file; its path."""
    if not isinstance(value, dict) or value.get("type") not in INLINE_TYPES \
            or "content" not in value:
        raise error(f"{where}: expected {{\"type\": \"yaml\" or \"jsonl\", \"content\": ...}}, "
                    f"got {json.dumps(value)[:200]}")
    content = value["content"]
    if value["type"] == "jsonl":
        items = content if isinstance(content, list) else [content]
        text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    else:
        text = json.dumps(content, ensure_ascii=False, indent=2) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    key = where.rsplit(".", 1)[-1][:-len(INLINE_SUFFIX)]
    path = inline_folder() / f"{key}_{digest}.{value['type']}"
    if not path.is_file():
        from pytest_omni_perf.atomic_files import write_atomic

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)
        except OSError as exc:
            raise error(f"{where}: cannot write its file {path} ({exc})") from None
    return str(path)


def resolve_inline(node: Any, where: str, error: Callable[[str], Exception]) -> None:
    """Turn every ``<key>-inline`` field under ``node`` into ``<key>: FILE``, in place."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            resolve_inline(item, f"{where}[{index}]", error)
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        here = f"{where}.{key}"
        if not key.endswith(INLINE_SUFFIX) or key == INLINE_SUFFIX:
            resolve_inline(node[key], here, error)
            continue
        base = key[:-len(INLINE_SUFFIX)]
        if base in node:
            raise error(f"{here}: {base!r} is given too; give one of them")
        node[base] = write_inline(node.pop(key), here, error)
