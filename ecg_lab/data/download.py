"""Fetch public ECG datasets into the layout the readers expect.

``python -m ecg_lab.data.download physionet2017 --root DIR`` downloads the PhysioNet/CinC Challenge 2017
training archive, checks its size and SHA-256 (against PhysioNet's ``SHA256SUMS.txt``, or ``--sha256``)
and unpacks it to ``DIR/training2017``. Nothing is put in place before every check has passed: the
archive streams into a hidden ``DIR/.training2017.zip.<random>.part`` file, is unpacked into a hidden
folder inside ``DIR``, and only then is the record folder moved into place with :func:`os.replace`.
On failure the temporary files are removed and the error says what failed, the URL, and what to do.
Stdlib only, so it runs before the heavy dependencies are installed.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin

CHUNK = 1 << 20
USER_AGENT = "ecg_lab-download/0.1"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# URLError, HTTPError, TimeoutError and ConnectionError are OSErrors; IncompleteRead & co. are not.
_NET_ERRORS = (OSError, http.client.HTTPException)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError)


@dataclass(frozen=True)
class DownloadableDataset:
    """Where a dataset's archive lives and what it unpacks to.

    ``base_url`` holds ``archive`` and ``checksums`` (lines ``<sha256>  <relative path>``); the archive
    unpacks to ``folder``, which counts as complete once ``marker`` exists in it.
    """

    base_url: str
    archive: str
    folder: str
    marker: str = "REFERENCE.csv"
    checksums: str = "SHA256SUMS.txt"


DATASETS: dict[str, DownloadableDataset] = {
    "physionet2017": DownloadableDataset(
        base_url="https://physionet.org/files/challenge-2017/1.0.0/",
        archive="training2017.zip",
        folder="training2017",
    ),
}


class DownloadError(RuntimeError):
    """A download, check or unpack step failed; the message says what, where, and what to do."""


def parse_sha256sums(text: str) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<hex>  <path>``, optionally ``*path``) into ``{path: hex}``."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and _SHA256_RE.fullmatch(parts[0].lower()):
            path = parts[1].strip().lstrip("*")
            sums[path.removeprefix("./")] = parts[0].lower()
    return sums


def _describe(err: BaseException, timeout: float) -> str:
    """Say in a few words why a network operation failed."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, str):
        return reason
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, http.client.HTTPException)):
        return f"connection cut short ({type(reason).__name__})"
    if isinstance(err, urllib.error.URLError):
        return f"could not connect ({reason})"
    return f"{type(reason).__name__}: {reason}"


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    """Open ``url`` for streaming with a per-operation socket timeout."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - URL comes from DATASETS or the user


def _expected_sha256(url: str, archive: str, timeout: float) -> str:
    """Fetch the checksum list at ``url`` and return the entry for ``archive``."""
    hint = "Rerun to retry, or pass --sha256 HEX with the archive's published SHA-256."
    try:
        with _open(url, timeout) as response:
            text = response.read(4 << 20).decode("utf-8", "replace")
    except _NET_ERRORS as err:
        why = _describe(err, timeout)
        raise DownloadError(f"could not fetch the checksum list {url}: {why}. {hint}") from err
    sums = parse_sha256sums(text)
    if archive not in sums:
        raise DownloadError(
            f"the checksum list {url} has no entry for {archive}; "
            f"refusing to install an unchecked archive. {hint}"
        )
    return sums[archive]


def _fetch(url: str, part: Path, expected: str, timeout: float) -> int:
    """Stream ``url`` into ``part`` checking size and SHA-256; return the byte count. Raises plain errors."""
    digest = hashlib.sha256()
    done, next_pct = 0, 10
    with _open(url, timeout) as response, part.open("wb") as out:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.strip().isdigit() else None
        while chunk := response.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if total and done * 100 >= next_pct * total:
                pct = done * 100 // total
                print(f"  {pct:3d}%  {done / 1e6:.1f} / {total / 1e6:.1f} MB", file=sys.stderr)
                next_pct = pct // 10 * 10 + 10
    if total is not None and done != total:
        raise DownloadError(f"connection cut short: got {done} of {total} bytes")
    got = digest.hexdigest()
    if got != expected:
        raise DownloadError(f"checksum mismatch: the archive's SHA-256 is {got}, expected {expected}")
    return done


def _check_member(name: str, dest: Path) -> None:
    """Refuse zip member names that would land outside ``dest`` (absolute, ``..``, drive letters)."""
    path = PurePosixPath(name.replace("\\", "/"))
    bad = path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0])
    if bad or not (dest / path).resolve().is_relative_to(dest.resolve()):
        raise DownloadError(f"unsafe path {name!r} in the archive (path traversal)")


def _unpack(archive: Path, dest: Path, source: DownloadableDataset) -> Path:
    """Unpack ``archive`` into ``dest`` and return the record folder within it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(info.filename, dest)
            zf.extractall(dest, members)
    except _ZIP_ERRORS as err:
        raise DownloadError(f"could not unpack the archive ({type(err).__name__}: {err})") from err
    for candidate in (dest / source.folder, dest):
        if (candidate / source.marker).is_file():
            return candidate
    raise DownloadError(f"the archive holds no {source.folder}/{source.marker}")


def _install(new: Path, target: Path, aside: Path) -> None:
    """Move ``new`` to ``target`` with ``os.replace``; an old ``target`` goes to ``aside``, then away."""
    old = None
    if target.exists() or target.is_symlink():
        old = aside
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None and old.is_symlink():
        old.unlink()
    elif old is not None:
        shutil.rmtree(old, ignore_errors=True)


def download(
    name: str,
    root: Path,
    base_url: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    force: bool = False,
) -> Path:
    """Download dataset ``name`` into ``root`` and return its record folder (``root/<folder>``).

    ``base_url`` replaces the source's (a mirror); ``sha256`` replaces the published checksum;
    ``timeout`` bounds each connect/read in seconds; ``force`` re-downloads over a complete folder.
    Raises :class:`DownloadError` on any failure, leaving no temporary or half-installed files behind.
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    source = DATASETS[name]
    root = Path(root).expanduser()
    target = root / source.folder
    if (target / source.marker).is_file() and not force:
        print(
            f"{name}: {target / source.marker} already exists; nothing to do (use --force to re-download)",
            file=sys.stderr,
        )
        return target
    base = (base_url or source.base_url).rstrip("/") + "/"
    url = urljoin(base, source.archive)
    advice = (
        f"Rerun the command to retry, or download {url} manually and unpack it into {root} "
        f"so that {target / source.marker} exists."
    )
    if sha256 is not None:
        expected = sha256.strip().lower()
        if not _SHA256_RE.fullmatch(expected):
            raise DownloadError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    else:
        expected = _expected_sha256(urljoin(base, source.checksums), source.archive, timeout)
    part: Path | None = None
    work: Path | None = None
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, part_name = tempfile.mkstemp(prefix=f".{source.archive}.", suffix=".part", dir=root)
            os.close(fd)
            part = Path(part_name)
            work = Path(tempfile.mkdtemp(prefix=f".{source.folder}.", suffix=".unpack", dir=root))
        except OSError as err:
            raise DownloadError(f"cannot write temporary files in {root}: {err}") from err
        print(f"{name}: downloading {url}", file=sys.stderr)
        try:
            size = _fetch(url, part, expected, timeout)
        except DownloadError as err:
            raise DownloadError(f"download of {url} failed: {err}. {advice}") from err
        except _NET_ERRORS as err:
            raise DownloadError(f"download of {url} failed: {_describe(err, timeout)}. {advice}") from err
        print(f"{name}: {size / 1e6:.1f} MB, SHA-256 OK; unpacking", file=sys.stderr)
        try:
            new = _unpack(part, work, source)
        except DownloadError as err:
            raise DownloadError(f"{url} is not a usable archive: {err}. {advice}") from err
        part.unlink()
        try:
            _install(new, target, work.with_name(work.name + ".old"))
        except OSError as err:
            raise DownloadError(f"could not move the unpacked data to {target}: {err}. {advice}") from err
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{name}: ready in {target}", file=sys.stderr)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, 1 with a one-line error on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m ecg_lab.data.download", description="Download and unpack a public ECG dataset."
    )
    parser.add_argument("name", help=f"dataset: {', '.join(sorted(DATASETS))}")
    parser.add_argument("--root", type=Path, required=True, help="folder to unpack into")
    parser.add_argument("--base-url", help="mirror holding the archive and SHA256SUMS.txt")
    parser.add_argument("--sha256", help="expected SHA-256 of the archive (default: from SHA256SUMS.txt)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per connect/read (default 60)")
    parser.add_argument("--force", action="store_true", help="re-download even if the data are present")
    args = parser.parse_args(argv)
    try:
        folder = download(args.name, args.root, args.base_url, args.sha256, args.timeout, args.force)
    except DownloadError as err:
        print("error: " + str(err).replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; temporary files were removed, rerun to download again", file=sys.stderr)
        return 130
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
