"""The on-disk cache both workflows prepare their records through.

An entry is a folder ``<cache_dir>/<kind>/<key>``: ``key`` hashes what the entry is made from (the
source files' names and content, see :func:`files_digest`, and the settings). It is built in a
temporary folder beside it, named after the building process (``.<key>.tmp-<pid>@<host>-<random>``),
and renamed into place when complete, so an interrupted run never leaves half an entry; two runs
racing for one entry both end with the same complete one, and a temporary folder left by a killed run
is removed by the next one. ``entry.json``, written last, holds the key and each file's size and
CRC-32. An entry that does not match it, that its loader cannot read, or whose float arrays hold NaN
or infinity (:func:`check_finite`) is reported in one warning line, removed and built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")
ENTRY_FILE = "entry.json"
ENTRY_FORMAT = 1
CONTENT_FIELD = "files"  # key fields of this name hold a files_digest(); see _report_superseded
STALE_AFTER_S = 24 * 3600  # a temporary folder whose owner cannot be checked is removed after this
_CHUNK = 1 << 24
_TMP_NAME = re.compile(r"^\.(?P<name>[^.]+)\.tmp-(?P<pid>\d+)@(?P<host>.+)-[a-z0-9_]+$")
_LEGACY_TMP_NAME = re.compile(r"^\.[0-9a-f]{20}\.[a-z0-9_]{8}$")  # before the owner was in the name
# what a loader raises on a damaged entry (truncated or garbled arrays, JSON, zip archives)
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


def key_of(payload: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description."""
    text = json.dumps({"entry_format": ENTRY_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _read_small(path: Path) -> bytes:
    """A small file's bytes, through ``os.read`` (a fifth faster than ``Path.read_bytes`` on 14,500 files)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        chunks = [os.read(fd, os.fstat(fd).st_size + 1)]
        while chunks[-1]:
            chunks.append(os.read(fd, _CHUNK))
    finally:
        os.close(fd)
    return b"".join(chunks)


def files_digest(paths: Iterable[Path]) -> str:
    """A digest of the names, sizes and CRC-32 of the content of ``paths`` (record files; missing ones
    marked), hashed together with BLAKE2b.

    The part of a cache key that notices any edit to the files, including one that keeps their size
    and modification time (``touch -r``, ``cp -p``, ``rsync -a``). On the 14,500 files of PhysioNet
    2017 (180 MB, in the page cache) it takes about 0.15 s, most of it opening and reading them
    (CRC-32 runs at 8 GB/s here, BLAKE2b of the content at 1.7 GB/s).
    """
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        try:
            data = _read_small(p)
        except OSError:
            h.update(f"{p.name}:-;".encode())
            continue
        h.update(f"{p.name}:{len(data)}:{zlib.crc32(data)};".encode())
    return h.hexdigest()


def crc32(path: Path) -> int:
    """CRC-32 of a file, read in chunks."""
    crc = 0
    for chunk in _chunks(path):
        crc = zlib.crc32(chunk, crc)
    return crc


class CorruptEntryError(RuntimeError):
    """A cache entry that cannot be used: files that do not match its ``entry.json``, or bad content."""


def check_finite(name: str, values: np.ndarray) -> None:
    """Raise CorruptEntryError if the entry's array ``name`` holds NaN or infinity.

    One vectorised sum (a NaN or infinity makes it non-finite) and, only when it is not finite, the
    exact element-wise test, so a sum that merely overflows is not taken for damage.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(values)) or np.isfinite(values).all():
            return
    raise CorruptEntryError(f"{name} holds NaN or infinite values")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load_arrays(path: Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the entry's ``.npz`` file ``path``, read now; CorruptEntryError naming
    the file when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in names}
    except LOAD_ERRORS as err:
        raise CorruptEntryError(f"{path.name} unreadable ({type(err).__name__}: {_one_line(err)})") from None


def _check(path: Path) -> dict[str, Any]:
    """The entry's ``info`` after checking ``entry.json`` and every listed file's size and CRC-32."""
    try:
        entry = json.loads((path / ENTRY_FILE).read_text())
        listed = [(name, int(size), int(crc)) for name, (size, crc) in entry["files"].items()]
        info = entry["info"]
        if not isinstance(info, dict) or any(Path(name).name != name for name, _, _ in listed):
            raise TypeError("unexpected layout")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CorruptEntryError(f"{ENTRY_FILE} unreadable ({type(err).__name__}: {_one_line(err)})") from None
    for name, size, crc in listed:
        f = path / name
        if not f.is_file():
            raise CorruptEntryError(f"{name} is missing")
        if f.stat().st_size != size:
            raise CorruptEntryError(f"{name} has {f.stat().st_size} bytes, {ENTRY_FILE} says {size}")
        if crc32(f) != crc:
            raise CorruptEntryError(f"{name} does not match its checksum")
    return info


# -- temporary build folders ---------------------------------------------------------------------
def make_build_dir(parent: Path, name: str) -> Path:
    """A new temporary folder in ``parent`` for building ``name``, named after this process."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}@{socket.gethostname()}-", dir=parent))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    return True


def _is_stale(path: Path) -> bool:
    """A build folder of a process of this host that is gone, or one older than STALE_AFTER_S whose
    owner cannot be checked (another host, another system, no owner in its name)."""
    match = _TMP_NAME.match(path.name)
    if match and os.name == "posix" and match["host"] == socket.gethostname():
        return not pid_alive(int(match["pid"]))
    if match or _LEGACY_TMP_NAME.match(path.name):
        try:
            return time.time() - path.stat().st_mtime > STALE_AFTER_S
        except OSError:
            return False
    return False


def remove_stale_builds(parent: Path, prefix: str = ".") -> None:
    """Remove the temporary build folders (names starting with ``prefix``) in ``parent`` that killed
    runs left behind."""
    for path in parent.glob(f"{prefix}*"):
        if path.is_dir() and _is_stale(path):
            log.info("removing %s, left by a run that stopped while building it", path)
            shutil.rmtree(path, ignore_errors=True)


# -- entries -------------------------------------------------------------------------------------
def _without_content(value: Any) -> Any:
    """``value`` (a key) without its CONTENT_FIELD digests, at any depth."""
    if isinstance(value, dict):
        return {k: _without_content(v) for k, v in value.items() if k != CONTENT_FIELD}
    if isinstance(value, list | tuple):
        return [_without_content(v) for v in value]
    return value


def _report_superseded(kind_dir: Path, key: dict[str, Any]) -> None:
    """Log the entries made from the same files and settings but other file content: the files changed."""
    ours = _without_content(json.loads(json.dumps(key, default=str)))
    for entry_file in kind_dir.glob(f"*/{ENTRY_FILE}"):
        try:
            theirs = json.loads(entry_file.read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _without_content(theirs) == ours:
            log.info(
                "the source files' content differs from when cache entry %s was built (same names and "
                "settings); preparing a new entry",
                entry_file.parent,
            )


def _discard(target: Path, err: BaseException) -> None:
    log.warning("cache entry %s is damaged (%s); removing it and preparing it again", target, _one_line(err))
    shutil.rmtree(target, ignore_errors=True)


def _build(target: Path, key: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build the entry in a temporary folder and rename it into place; the entry's ``info``."""
    tmp = make_build_dir(target.parent, target.name)
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        info = build(tmp)
        files = {p.name: (p.stat().st_size, crc32(p)) for p in sorted(tmp.iterdir()) if p.is_file()}
        entry = {"format": ENTRY_FORMAT, "key": key, "files": files, "info": info}
        (tmp / ENTRY_FILE).write_text(json.dumps(entry, indent=1, default=str))
        os.replace(tmp, target)  # atomic on one filesystem; fails if another run got there first
    except OSError:
        if not (target / ENTRY_FILE).is_file():
            raise
        info = _check(target)  # the other run's entry
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def cached(
    cache_dir: Path | str | None,
    kind: str,
    key: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    load: Callable[[Path, dict[str, Any]], T],
) -> tuple[T, Path | None]:
    """The entry for ``key`` loaded with ``load(folder, info)``; built first with ``build(folder) →
    info`` when absent or damaged. ``load`` raises CorruptEntryError (or one of LOAD_ERRORS) for
    content it cannot use; a freshly built entry that fails so is removed and the error raised.
    Without ``cache_dir`` the entry is built in a temporary folder that is removed after loading
    (``load`` must then copy what it keeps)."""
    if cache_dir is None:
        tmp_root = Path(tempfile.gettempdir())
        remove_stale_builds(tmp_root, prefix=".ecg_lab-")
        tmp = make_build_dir(tmp_root, f"ecg_lab-{kind}")
        try:
            return load(tmp, build(tmp)), None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    target = Path(cache_dir) / kind / key_of(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target.parent)
    if (target / ENTRY_FILE).is_file():
        try:
            loaded = load(target, _check(target))
            log.info("%s from cache %s", kind, target)
            return loaded, target
        except CorruptEntryError as err:
            _discard(target, err)
        except LOAD_ERRORS as err:
            _discard(target, CorruptEntryError(f"unreadable ({type(err).__name__}: {_one_line(err)})"))
    else:
        _report_superseded(target.parent, key)
    info = _build(target, key, build)
    try:
        return load(target, info), target
    except CorruptEntryError as err:
        shutil.rmtree(target, ignore_errors=True)
        raise CorruptEntryError(f"cache entry {target}, just built: {err}; it was removed") from None
