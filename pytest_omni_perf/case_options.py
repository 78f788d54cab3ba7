"""The values of ``--omni-cases`` and ``--omni-cases-model`` (and their ini keys), parsed
where options are read (``config.read_config``); what the files hold is ``cases.reader``'s."""

from __future__ import annotations

from pathlib import Path


def case_paths(given: str, base: Path) -> tuple[Path, ...]:
    """Comma-separated case files, each taken relative to ``base`` and resolved; raises
    FileNotFoundError naming the first that is not a file."""
    paths = []
    for part in given.split(","):
        if part.strip():
            path = (base / Path(part.strip()).expanduser()).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no case file {part.strip()!r} ({path})")
            paths.append(path)
    return tuple(paths)


def parse_model_override(text: str) -> dict[str, str]:
    """``--omni-cases-model``: ``NAME`` (every task) or ``t2i=NAME,t2v=NAME``; ValueError."""
    text = text.strip()
    if "=" not in text:
        if not text:
            raise ValueError("expected a model name or TASK=NAME pairs")
        return {"*": text}
    pairs: dict[str, str] = {}
    for part in text.split(","):
        task, eq, model = (p.strip() for p in part.partition("="))
        if not eq or not task or not model:
            raise ValueError(f"expected TASK=NAME, got {part!r}")
        pairs[task] = model
    return pairs
