"""The on-disk cache both workflows prepare their records through.

An entry is a folder ``<cache_dir>/<kind>/<key>``: ``key`` hashes what the entry is made from (the
source files' names, sizes and modification times, and the settings). It is built in a temporary
folder beside it and renamed into place when complete, so an interrupted run never leaves half an
entry; two runs racing for one entry both end with the same complete one. ``entry.json``, written
last, lists each file's size and CRC-32; an entry whose files do not match it is reported, removed
and built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
ENTRY_FILE = "entry.json"
ENTRY_FORMAT = 1
_CRC_CHUNK = 1 << 24


def key_of(payload: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description."""
    text = json.dumps({"entry_format": ENTRY_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_stats(paths: Iterable[Path]) -> str:
    """Names, sizes and modification times of ``paths`` (missing ones marked), hashed."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{p.name}:-;".encode())
    return h.hexdigest()[:20]


def crc32(path: Path) -> int:
    """CRC-32 of a file, read in chunks."""
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(_CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


class CorruptEntryError(RuntimeError):
    """A cache entry's files do not match its ``entry.json``."""


def _check(path: Path) -> dict[str, Any]:
    """The entry's ``info`` after checking every listed file's size and CRC-32."""
    try:
        entry = json.loads((path / ENTRY_FILE).read_text())
        files = entry["files"]
    except (OSError, ValueError, KeyError) as err:
        raise CorruptEntryError(f"{path / ENTRY_FILE} unreadable ({err})") from None
    for name, (size, crc) in files.items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise CorruptEntryError(f"{f} is missing or has the wrong size")
        if crc32(f) != crc:
            raise CorruptEntryError(f"{f} does not match its checksum")
    return entry["info"]


def cached(
    cache_dir: Path | str | None,
    kind: str,
    key: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    load: Callable[[Path, dict[str, Any]], T],
) -> tuple[T, Path | None]:
    """The entry for ``key`` loaded with ``load(folder, info)``; built first with ``build(folder) →
    info`` when absent or corrupt. Without ``cache_dir`` the entry is built in a temporary folder
    that is removed after loading (``load`` must then copy what it keeps)."""
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix=f"ecg_lab-{kind}-") as tmp:
            return load(Path(tmp), build(Path(tmp))), None
    target = Path(cache_dir) / kind / key_of(key)
    if (target / ENTRY_FILE).is_file():
        try:
            info = _check(target)
            log.info("%s from cache %s", kind, target)
            return load(target, info), target
        except CorruptEntryError as err:
            log.warning("cache entry damaged (%s); removing it and preparing again", err)
            shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
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
    return load(target, info), target
