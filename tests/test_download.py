"""Tests for ``ecg_lab.data.download`` against a local HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ecg_lab.data.download import DownloadError, download, main, parse_sha256sums
from ecg_lab.data.physionet2017 import read_records

LABELS = {"A00001": "N", "A00002": "A", "A00003": "O"}
N_SAMPLES = 900
PREFIX = "/files/challenge-2017/1.0.0/"


def make_archive(extra: dict[str, bytes] | None = None) -> bytes:
    """A tiny ``training2017.zip`` in the official layout, plus any ``extra`` members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, rid in enumerate(LABELS):
            mat = io.BytesIO()
            val = (np.sin(np.arange(N_SAMPLES) / 10) * 200 * (i + 1)).astype(np.int16)[None, :]
            scipy.io.savemat(mat, {"val": val}, format="4")
            zf.writestr(f"training2017/{rid}.mat", mat.getvalue())
            zf.writestr(
                f"training2017/{rid}.hea",
                f"{rid} 1 300 {N_SAMPLES}\n{rid}.mat 16+24 1000/mV 16 0 0 0 0 ECG\n",
            )
        zf.writestr("training2017/REFERENCE.csv", "".join(f"{r},{lab}\n" for r, lab in LABELS.items()))
        zf.writestr("training2017/RECORDS", "".join(f"{r}\n" for r in LABELS))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def sums_for(data: bytes, name: str = "training2017.zip") -> bytes:
    """A ``SHA256SUMS.txt`` body listing ``data`` under ``name``."""
    return f"{'0' * 64}  RECORDS\n{hashlib.sha256(data).hexdigest()}  {name}\n".encode()


@dataclass
class Server:
    """What the test server serves under ``url``, how it misbehaves, and what it was asked for."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    truncate: set[str] = field(default_factory=set)  # send half the bytes, then close
    stall: set[str] = field(default_factory=set)  # send half the bytes, then hang
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def serve(self, archive: bytes, sums: bytes | None = None) -> None:
        """Serve ``archive`` and a checksum list (by default, the right one)."""
        sums = sums_for(archive) if sums is None else sums
        self.files = {"training2017.zip": archive, "SHA256SUMS.txt": sums}


@pytest.fixture
def server() -> Iterator[Server]:
    """An HTTP server on 127.0.0.1 in a daemon thread, serving ``Server.files`` below ``PREFIX``."""
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            name = self.path.removeprefix(PREFIX)
            state.requests.append(name)
            if not self.path.startswith(PREFIX) or name not in state.files:
                self.send_error(404)
                return
            data = state.files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if name in state.truncate | state.stall:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if name in state.stall:
                    state.release.wait(10)
                return
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}{PREFIX.rstrip('/')}"
    state.serve(make_archive())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()


def assert_nothing_installed(root: Path) -> None:
    """No record folder, archive, ``.part`` file or unpack folder is left in ``root``."""
    assert not root.exists() or sorted(p.name for p in root.iterdir()) == []


def test_download_installs_readable_records(server: Server, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    folder = download("physionet2017", root, base_url=server.url)
    assert folder == root / "training2017"
    assert sorted(p.name for p in root.iterdir()) == ["training2017"]  # no temp leftovers
    assert {"REFERENCE.csv", "RECORDS", "A00001.mat", "A00001.hea"} <= {p.name for p in folder.iterdir()}
    records, skipped = read_records(root)
    assert skipped == [] and {r.record_id: r.label for r in records} == LABELS
    assert all(r.signal.shape == (N_SAMPLES,) and r.fs == 300 for r in records)
    assert server.requests == ["SHA256SUMS.txt", "training2017.zip"]
    assert "100%" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["sums-file", "flag"])
def test_checksum_mismatch_installs_nothing(server: Server, tmp_path: Path, how: str) -> None:
    archive = make_archive()
    if how == "sums-file":
        server.serve(archive, sums=sums_for(b"something else"))
        kwargs = {}
    else:
        kwargs = {"sha256": hashlib.sha256(b"something else").hexdigest()}
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        download("physionet2017", tmp_path, base_url=server.url, **kwargs)
    assert f"{server.url}/training2017.zip" in str(err.value)
    assert_nothing_installed(tmp_path)


def test_missing_checksum_entry_is_refused(server: Server, tmp_path: Path) -> None:
    server.serve(make_archive(), sums=sums_for(b"x", name="other.zip"))
    with pytest.raises(DownloadError, match="no entry for training2017.zip.*unchecked"):
        download("physionet2017", tmp_path, base_url=server.url)
    assert "training2017.zip" not in server.requests
    assert_nothing_installed(tmp_path)


def test_connection_cut_short(server: Server, tmp_path: Path) -> None:
    server.truncate.add("training2017.zip")
    with pytest.raises(DownloadError, match="cut short") as err:
        download("physionet2017", tmp_path, base_url=server.url)
    assert f"{server.url}/training2017.zip" in str(err.value) and "Rerun" in str(err.value)
    assert_nothing_installed(tmp_path)


def test_stalled_download_times_out(server: Server, tmp_path: Path) -> None:
    server.stall.add("training2017.zip")
    with pytest.raises(DownloadError, match="timed out"):
        download("physionet2017", tmp_path, base_url=server.url, timeout=0.3)
    assert_nothing_installed(tmp_path)


def test_http_404_names_the_url(server: Server, tmp_path: Path) -> None:
    del server.files["training2017.zip"]
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download("physionet2017", tmp_path, base_url=server.url)
    assert f"{server.url}/training2017.zip" in str(err.value)
    assert_nothing_installed(tmp_path)
    del server.files["SHA256SUMS.txt"]
    with pytest.raises(DownloadError, match="checksum list .*SHA256SUMS.txt: HTTP 404.*--sha256"):
        download("physionet2017", tmp_path, base_url=server.url)


@pytest.mark.parametrize("payload", ["not-a-zip", "traversal"])
def test_bad_archive_installs_nothing(server: Server, tmp_path: Path, payload: str) -> None:
    root = tmp_path / "data"
    archive = b"garbage" * 100 if payload == "not-a-zip" else make_archive({"../evil.txt": b"boo"})
    server.serve(archive)
    with pytest.raises(DownloadError, match="not a usable archive"):
        download("physionet2017", root, base_url=server.url)
    assert not (tmp_path / "evil.txt").exists()
    assert_nothing_installed(root)


def test_already_present_is_left_alone_unless_forced(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "training2017"
    folder.mkdir()
    (folder / "REFERENCE.csv").write_text("A09999,N\n")
    assert download("physionet2017", tmp_path, base_url=server.url) == folder
    assert server.requests == []
    server.truncate.add("training2017.zip")  # a failed forced re-download keeps the old data
    with pytest.raises(DownloadError):
        download("physionet2017", tmp_path, base_url=server.url, force=True)
    assert (folder / "REFERENCE.csv").read_text() == "A09999,N\n"
    server.truncate.clear()
    assert download("physionet2017", tmp_path, base_url=server.url, force=True) == folder
    assert len(read_records(tmp_path)[0]) == len(LABELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training2017"]


def test_main_exit_codes(server: Server, tmp_path: Path, capsys) -> None:
    assert main(["physionet2017", "--root", str(tmp_path), "--base-url", server.url]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "training2017")
    other = tmp_path / "other"
    code = main(["physionet2017", "--root", str(other), "--base-url", server.url, "--sha256", "0" * 64])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith("error: ") and "checksum mismatch" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert main(["ptb-xl", "--root", str(other)]) != 0
    assert capsys.readouterr().err.strip() == "error: unknown dataset 'ptb-xl'; known: physionet2017"


def test_parse_sha256sums() -> None:
    text = f"{'a' * 64}  training2017.zip\n{'B' * 64} *./sample2017.zip\n\nnot a line\n"
    assert parse_sha256sums(text) == {"training2017.zip": "a" * 64, "sample2017.zip": "b" * 64}
