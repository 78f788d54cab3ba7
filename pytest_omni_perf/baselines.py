"""The baseline store: ``<root>/<hardware-key>/<test-slug>/<profile>/``.

A baseline folder holds ``metrics.json`` (what the caller records, plus ``schema_version``,
``hardware_key`` and ``frames``) and the output as lossless PNGs ``frame_000.png``, ... (one
for an image, several for a video). JSON and PNG only: baselines are committed and read on
other machines, so loading one must never run code (no pickle). POSIX only.

Writes are atomic without locks: ``save`` builds the complete set in a hidden sibling folder
and swaps it in with ``renameat2(RENAME_EXCHANGE)``, so the name always points at one
complete set, even while several xdist workers save the same baseline (the last swap wins).
``load`` reads every file through one directory descriptor, so all come from one set; if a
save deletes that set mid-read, it sees the name now points elsewhere and reads again. Where
the system lacks ``RENAME_EXCHANGE`` (macOS, NFS) the swap falls back to two renames, and a
reader arriving between them finds no baseline for that instant (never a mixed set).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import io
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.escape import path_component
from pytest_omni_perf.png import encode_png

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SCHEMA_VERSION: int = 1
METRICS = "metrics.json"
_RESERVED = ("schema_version", "hardware_key", "frames")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk with its CRC
_READ_ATTEMPTS = 50  # a save swapping the set mid-read restarts it; only a save loop hits 50

_SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class BaselineError(Exception):
    """Base class of every error of the baseline store."""


class CorruptBaseline(BaselineError):
    """A stored baseline exists but cannot be used.

    ``str(exc)`` names the folder, the file and what is wrong; the caller appends how to
    recreate it (the exact command that re-records this baseline).
    """

    def __init__(self, folder: Path, filename: str, problem: str) -> None:
        self.folder = folder
        self.filename = filename
        self.problem = problem
        super().__init__(f"broken baseline in {folder}: {problem}")


class _SetReplaced(Exception):
    """The set being read was swapped out by a concurrent save: read again."""


@dataclass(frozen=True)
class StoredBaseline:
    """A baseline as loaded: its folder, ``metrics.json`` and its frames (HxWx3 uint8)."""

    path: Path
    metrics: dict[str, Any]
    frames: list[npt.NDArray[np.uint8]]


class BaselineStore:
    """Stored baselines of one hardware key under ``root``."""

    def __init__(self, root: Path, hardware_key: str) -> None:
        if not _SAFE_KEY.fullmatch(hardware_key) or ".." in hardware_key:
            raise ValueError(f"hardware key {hardware_key!r} is not a safe folder name")
        self.root = Path(root)
        self.hardware_key = hardware_key

    def folder(self, nodeid: str, profile: str) -> Path:
        """The folder of one baseline; always inside ``root/hardware_key``."""
        base = self.root / self.hardware_key
        path = base / path_component(nodeid) / path_component(profile)
        # Slugs are single safe components, so this holds; checked without `assert` (which
        # -O strips) because --omni-update-baselines must never write outside the store.
        abs_base = os.path.abspath(base)
        if os.path.commonpath([abs_base, os.path.abspath(path)]) != abs_base:
            raise AssertionError(f"baseline folder {path} escapes {base}")
        return path

    def load(self, nodeid: str, profile: str) -> StoredBaseline | None:
        """The stored baseline, or None when there is none.

        Raises CorruptBaseline when it exists but is broken; never changes any file.
        """
        folder = self.folder(nodeid, profile)
        for _ in range(_READ_ATTEMPTS):
            try:
                dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                return None
            try:
                metrics, frame_bytes = self._read_set(folder, dir_fd)
            except _SetReplaced:
                continue
            finally:
                os.close(dir_fd)
            frames = [_decode_png(data, name, folder) for name, data in frame_bytes]
            for (name, _), frame in zip(frame_bytes, frames):
                if frame.shape != frames[0].shape:
                    raise CorruptBaseline(folder, name, f"{name} has shape {frame.shape} but "
                                          f"frame_000.png has {frames[0].shape}")
            return StoredBaseline(path=folder, metrics=metrics, frames=frames)
        raise BaselineError(f"baseline {folder} was replaced {_READ_ATTEMPTS} times while "
                            "being read; is something re-recording it in a loop?")

    def save(self, nodeid: str, profile: str, metrics: Mapping[str, Any],
             frames: Sequence[npt.NDArray[np.uint8]]) -> Path:
        """Store a baseline atomically, replacing any previous one; return its folder.

        Adds ``schema_version``, ``hardware_key`` and ``frames`` (the count) to the metrics;
        passing one of them with another value is a ValueError. nan/inf are written as
        ``null`` (JSON has no such numbers); numpy values become plain numbers and lists.
        Frames must be HxWx3 uint8 arrays of one size (ValueError otherwise).
        """
        document = self._document(metrics, len(frames))
        _check_frames(frames)
        dest = self.folder(nodeid, profile)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp) so the folder gets the umask's permissions, not 0700.
        tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:12]}"
        os.mkdir(tmp)
        leftovers = [tmp]
        try:
            for index, frame in enumerate(frames):
                _write_png(tmp / f"frame_{index:03d}.png", frame)
            _write_file(tmp / METRICS, document.encode("utf-8"))
            _fsync_dir(tmp)
            leftovers = _swap_in(tmp, dest)
            _fsync_dir(dest.parent)
        finally:
            for path in leftovers:
                shutil.rmtree(path, ignore_errors=True)
        return dest

    def other_hardware_keys(self, nodeid: str, profile: str) -> list[str]:
        """Other hardware keys under ``root`` that have this baseline, sorted."""
        relative = Path(path_component(nodeid), path_component(profile), METRICS)
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.name for e in entries
                      if e.name != self.hardware_key and not e.name.startswith(".")
                      and e.is_dir() and (Path(e.path) / relative).is_file())

    def _document(self, metrics: Mapping[str, Any], frame_count: int) -> str:
        data = _jsonable(metrics, "")
        if not isinstance(data, dict):
            raise TypeError(f"metrics must be a mapping, not {type(metrics).__name__}")
        ours = {"schema_version": SCHEMA_VERSION, "hardware_key": self.hardware_key,
                "frames": frame_count}
        for key, value in ours.items():
            if key in data and data[key] != value:
                raise ValueError(f"metrics[{key!r}] = {data[key]!r}, but the store writes "
                                 f"{value!r} there; rename that key")
        data.update(ours)
        return json.dumps(data, sort_keys=True, indent=1, allow_nan=False) + "\n"

    def _read_set(self, folder: Path, dir_fd: int) -> tuple[dict[str, Any],
                                                            list[tuple[str, bytes]]]:
        """metrics.json (validated) and the raw frame files, all from one directory."""
        raw = _read_at(dir_fd, METRICS, folder)
        if raw is None:
            raise CorruptBaseline(folder, METRICS, f"{METRICS} is missing")
        metrics = _parse_metrics(raw, folder, self.hardware_key)
        count: int = metrics["frames"]
        frame_bytes = []
        for index in range(count):
            name = f"frame_{index:03d}.png"
            data = _read_at(dir_fd, name, folder)
            if data is None:
                raise CorruptBaseline(folder, name,
                                      f"{METRICS} lists {count} frames but {name} is missing")
            frame_bytes.append((name, data))
        return metrics, frame_bytes


def _read_at(dir_fd: int, name: str, folder: Path) -> bytes | None:
    """A file's bytes, or None when it is truly missing from the baseline."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        # Missing for real only if `folder` still names the directory we hold; otherwise
        # a save swapped it out and is deleting the old set under us.
        try:
            current = os.path.samestat(os.stat(folder), os.fstat(dir_fd))
        except FileNotFoundError:
            current = False
        if not current:
            raise _SetReplaced from None
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read()


def _parse_metrics(raw: bytes, folder: Path, hardware_key: str) -> dict[str, Any]:
    def broken(problem: str) -> CorruptBaseline:
        return CorruptBaseline(folder, METRICS, f"{METRICS}: {problem}")

    try:
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise broken(f"not valid JSON at line {exc.lineno} column {exc.colno} "
                     f"({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise broken(f"not UTF-8 text ({exc})") from exc
    except RecursionError:  # json's parser recurses into nested arrays and objects
        raise broken("not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise broken(f"the top level is a {type(data).__name__}, expected an object")
    version, stored_key, count = (data.get(k) for k in _RESERVED)
    if type(version) is not int or version < 1:
        raise broken(f"schema_version is {version!r}, expected an integer >= 1")
    if version > SCHEMA_VERSION:
        raise broken(f"schema_version {version} is newer than this plugin understands "
                     f"({SCHEMA_VERSION}); upgrade pytest-omni-perf")
    if stored_key != hardware_key:
        raise broken(f"hardware_key {stored_key!r} but the folder is {hardware_key!r}")
    if type(count) is not int or count < 1:
        raise broken(f"frames is {count!r}, expected the number of frame files (>= 1)")
    return data


def _jsonable(value: object, where: str) -> object:
    """``value`` as plain JSON types; nan/inf become None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"metrics{where}: key {key!r} is not a string")
        return {key: _jsonable(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    # numpy scalars and arrays, recognised without importing numpy.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _jsonable(tolist(), where)
    raise TypeError(f"metrics{where}: a {type(value).__name__} is not JSON-serializable")


def _check_frames(frames: Sequence[npt.NDArray[np.uint8]]) -> None:
    import numpy as np

    if len(frames) == 0:
        raise ValueError("a baseline needs at least one frame")
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            kind = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame {index} is {kind}, expected a uint8 numpy array")
        if frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
            raise ValueError(f"frame {index} has shape {frame.shape}, expected (H, W, 3)")
        if frame.shape != frames[0].shape:
            raise ValueError(f"frame {index} has shape {frame.shape} but frame 0 has "
                             f"{frames[0].shape}; the frames of a video share one size")


def _write_png(path: Path, frame: npt.NDArray[np.uint8]) -> None:
    _write_file(path, encode_png(frame))


def _decode_png(data: bytes, name: str, folder: Path) -> npt.NDArray[np.uint8]:
    import numpy as np
    from PIL import Image

    # Checked by hand because Pillow loads truncated files silently wherever some other
    # code has set ImageFile.LOAD_TRUNCATED_IMAGES.
    if not (data.startswith(_PNG_SIGNATURE) and data.endswith(_PNG_END)):
        raise CorruptBaseline(folder, name, f"{name}: truncated or not a PNG")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            mode = image.mode
            array = np.array(image)
    except Exception as exc:  # Pillow's decoders raise many types on malformed data
        raise CorruptBaseline(folder, name, f"{name}: truncated or not a PNG ({exc})") from exc
    if mode != "RGB":
        raise CorruptBaseline(folder, name, f"{name}: mode {mode}, expected RGB")
    return array


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    """Make new entries and renames in ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(tmp: Path, dest: Path) -> list[Path]:
    """Put the complete folder ``tmp`` at ``dest``; return the folders left to remove."""
    asides: list[Path] = []
    while True:
        try:
            os.rename(tmp, dest)  # only succeeds where dest is absent: the first save
            return asides
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        try:
            if _exchange(tmp, dest):
                return [tmp, *asides]  # tmp now holds the previous set
            aside = tmp.with_name(f"{tmp.name}-old{len(asides)}")
            os.rename(dest, aside)
            asides.append(aside)
        except FileNotFoundError:
            pass  # another writer (without the exchange) moved dest aside just now


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without it (macOS)
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories; False where the OS or file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
