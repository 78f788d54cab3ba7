"""One escaping function per output format, for every user string the plugin writes.

Test ids, labels, profile and model names, notes and messages are user input: they may hold
any Unicode, control characters (an ANSI escape, a NUL, a form feed) and, in ids built from
file names, lone surrogates. Each writer passes them through the function of its format:

===============  =========================================================================
``json_document``  strict JSON (RFC 8259): ASCII only, non-finite numbers as ``null``
``html_text``      HTML text and attribute values: markup escaped, controls made visible
``xml_text``       XML 1.0 text and attribute values (JUnit properties): characters XML
                   cannot carry made visible; ElementTree escapes the markup itself
``shell_line``     a POSIX shell command line users copy (``shlex.split`` gives the argv back)
``path_component`` one file or folder name, always inside its parent folder
``markdown_cell``  one cell of a GitHub-flavoured Markdown table
``terminal_text``  a line on the terminal: no escape sequences, no line breaks
===============  =========================================================================

"Made visible" means written as Python writes it in a string (``\\x1b``, ``\\udc80``), so a
reader sees that the character was there and which one it was. Stdlib only.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import shlex
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

# C0 and C1 controls but tab, newline and carriage return; DEL; lone surrogates; and the
# two noncharacters XML 1.0 excludes (U+FFFE, U+FFFF).
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_CONTROLS_AND_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible_controls(text: str, *, breaks: bool = False) -> str:
    """``text`` with control characters (and line breaks when ``breaks``) written as
    ``\\xNN``/``\\uNNNN``."""
    return (_CONTROLS_AND_BREAKS if breaks else _CONTROLS).sub(_visible, text)


# -- JSON ------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist())
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)


def json_document(value: Any, indent: int | None = 2) -> str:
    """``value`` as strict JSON text: ASCII only (so lone surrogates and controls travel as
    ``\\uXXXX`` escapes and ``json.loads`` gives every string back unchanged), NaN and
    infinities as ``null``, keys as strings, numpy values as numbers, other objects as
    their ``str``."""
    return json.dumps(_plain(value), indent=indent, ensure_ascii=True, allow_nan=False)


# -- HTML and XML ------------------------------------------------------------------------------
def html_text(text: object) -> str:
    """``text`` (``str()`` of it) safe in HTML text and in quoted attribute values."""
    return visible_controls(html.escape(str(text), quote=True))


def xml_text(text: object) -> str:
    """``text`` (``str()`` of it) made of characters XML 1.0 can carry, for ElementTree
    (which escapes ``&<>"`` itself) and for pytest's JUnit properties, whose names pytest
    writes unescaped."""
    return visible_controls(str(text))


# -- shell -------------------------------------------------------------------------------------
def shell_line(argv: Iterable[str]) -> str:
    """A command line for a POSIX shell; ``shlex.split`` of it is ``argv`` again."""
    return shlex.join(argv)


# -- paths -------------------------------------------------------------------------------------
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_DOT_RUN = re.compile(r"\.{2,}")
_LOOKS_HASHED = re.compile(r"-[0-9a-f]{12}$")
_SLUG_MAX = 100
_HASH_LEN = 12  # 48 bits: ids sharing a truncated prefix stay apart with room to spare


def path_component(name: str) -> str:
    """A safe, readable, deterministic file or folder name for a test id, profile, label or
    model name.

    Keeps ``[A-Za-z0-9._-]``, folds accents to ASCII, maps every other run of characters
    to ``_``, and never yields ``..``, a leading ``.`` or ``-``, a path separator or an
    empty name. Whenever that mapping lost anything (or the name could clash on a
    case-insensitive file system), it appends ``-`` and 12 hex digits of the name's sha256,
    so distinct names get distinct components; names over 100 characters are cut before
    the suffix.
    """
    folded = "".join(c for c in unicodedata.normalize("NFKD", name)
                     if not unicodedata.combining(c))
    readable = _DOT_RUN.sub("_", _UNSAFE_RUN.sub("_", folded)).strip("._-")
    readable = readable[:_SLUG_MAX] or "_"
    lossy = (readable != name
             # Uppercase names get the suffix so that "A" and "a" stay apart on macOS.
             or readable != readable.lower()
             # A safe name that already looks suffixed could equal another name's slug.
             or _LOOKS_HASHED.search(readable) is not None)
    if not lossy:
        return readable
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{readable}-{digest[:_HASH_LEN]}"


# -- Markdown and terminal ---------------------------------------------------------------------
_MARKDOWN_SPECIAL = str.maketrans({"\\": "\\\\", "|": "\\|", "<": "&lt;", ">": "&gt;",
                                   "&": "&amp;", "`": "\\`"})


def markdown_cell(text: object) -> str:
    """``text`` as one GitHub-flavoured Markdown table cell: pipes and backslashes escaped,
    line breaks as ``<br>``, inline HTML neutralised, controls made visible."""
    escaped = str(text).translate(_MARKDOWN_SPECIAL)
    escaped = re.sub(r"\r\n|[\r\n\u2028\u2029]", "<br>", escaped)
    return visible_controls(escaped, breaks=True)


def terminal_text(text: object) -> str:
    """``text`` for one terminal line: escape sequences and line breaks made visible."""
    return visible_controls(str(text), breaks=True)
