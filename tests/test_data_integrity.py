"""Data-input integrity: REFERENCE.csv rows (duplicates, paths, encodings) read the same way by both
workflows, and a cache that notices changed content, damage, NaN and the leftovers of a killed run."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ecg_lab.classification.datamodule import ECGWindowDataModule
from ecg_lab.classification.prepared import SIGNALS_FILE, prepare_records
from ecg_lab.data import cache
from ecg_lab.data.cache import ENTRY_FILE, CorruptEntryError, cached, check_finite
from ecg_lab.data.physionet2017 import read_reference
from ecg_lab.data.records import BadRecordError
from ecg_lab.edge.preprocess import Preprocessing
from ecg_lab.generation.cleaning import Cleaning, cached_clean_records
from ecg_lab.generation.sources import PhysioNet2017Source
from tests.helpers import ecg_like, write_dataset, write_record

GOOD = {"A00001": "N", "A00002": "A", "A00003": "O", "A00004": "~"}
REPO = Path(__file__).resolve().parents[1]


def _prepared_ids(root: Path, tmp_path: Path) -> list[str]:
    return prepare_records(root, Preprocessing(), tmp_path / "cache").ids.tolist()


def _generation_ids(root: Path, tmp_path: Path) -> list[str]:
    source = PhysioNet2017Source(root=root, labels=list(GOOD.values()))
    return [r.record_id for r in source.read().records]


READERS: dict[str, Callable[[Path, Path], list[str]]] = {
    "classification": _prepared_ids,
    "generation": _generation_ids,
}


def _reference(rows: list[str]) -> str:
    return "".join(f"{r}\n" for r in rows)


# -- 1. duplicate rows ---------------------------------------------------------------------------
@pytest.mark.parametrize("reader", list(READERS))
def test_an_identical_duplicate_counts_once_with_one_warning(
    reader: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [f"{r},{lab}" for r, lab in GOOD.items()]
    root = write_dataset(tmp_path / "d", GOOD, reference=_reference(rows + rows))
    with caplog.at_level(logging.WARNING, logger="ecg_lab.data.physionet2017"):
        assert READERS[reader](root, tmp_path) == list(GOOD)
    (warning,) = caplog.records
    assert "A00001 (lines 1, 5)" in warning.getMessage() and "A00004 (lines 4, 8)" in warning.getMessage()


def test_with_every_row_twice_no_record_is_in_two_splits(tmp_path: Path) -> None:
    labels = {f"A{i:05d}": "NAO~"[i % 4] for i in range(1, 25)}
    rows = [f"{r},{lab}" for r, lab in labels.items()]
    root = write_dataset(tmp_path / "d", labels, n=3000, reference=_reference(rows + rows))
    dm = ECGWindowDataModule(root=root, cache_dir=tmp_path / "cache")
    dm.setup()
    assert sorted(dm.manifest.records) == sorted(labels)  # each record once, so in one split


@pytest.mark.parametrize("reader", list(READERS))
def test_a_conflicting_duplicate_names_the_file_and_both_lines(reader: str, tmp_path: Path) -> None:
    rows = [f"{r},{lab}" for r, lab in GOOD.items()] + ["A00002,N"]
    root = write_dataset(tmp_path / "d", GOOD, reference=_reference(rows))
    with pytest.raises(BadRecordError) as err:
        READERS[reader](root, tmp_path)
    msg = str(err.value)
    assert str(root / "REFERENCE.csv") in msg and "line 2 'A00002,A'" in msg and "line 5 'A00002,N'" in msg
    assert "\n" not in msg


# -- 2. record ids stay inside the folder -------------------------------------------------------
@pytest.mark.parametrize("where", ["parent", "absolute", "subfolder"])
@pytest.mark.parametrize("reader", list(READERS))
def test_a_record_id_outside_the_folder_is_refused(reader: str, where: str, tmp_path: Path) -> None:
    root = tmp_path / "d"
    outside = {"parent": root / ".." / "outside", "absolute": tmp_path / "abs", "subfolder": root / "sub"}[
        where
    ]
    write_record(outside, "A00009", ecg_like(4500))  # a readable record: today's reader reads it
    row_id = {
        "parent": "../outside/A00009",
        "absolute": str(outside / "A00009"),
        "subfolder": "sub/A00009",
    }[where]
    rows = [f"{r},{lab}" for r, lab in GOOD.items()]
    write_dataset(root, GOOD, reference=_reference(rows[:2] + [f"{row_id},N"] + rows[2:]))
    with pytest.raises(BadRecordError) as err:
        READERS[reader](root, tmp_path)
    msg = str(err.value)
    assert str(root / "REFERENCE.csv") in msg and f"line 3 '{row_id},N'" in msg and "plain names" in msg


# -- 3. encodings --------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom", "utf-8-bom"])
def test_reference_with_a_byte_order_mark_is_read(encoding: str, tmp_path: Path) -> None:
    text = "Record,Label\r\n" + "".join(f"{r},{lab}\r\n" for r, lab in GOOD.items())
    data = {
        "utf-16": text.encode("utf-16"),  # BOM + little-endian, as Notepad and Excel save it
        "utf-16-be-bom": b"\xfe\xff" + text.encode("utf-16-be"),
        "utf-8-bom": b"\xef\xbb\xbf" + text.encode("utf-8"),
    }[encoding]
    root = write_dataset(tmp_path / "d", GOOD)
    (root / "REFERENCE.csv").write_bytes(data)
    assert read_reference(root / "REFERENCE.csv") == list(GOOD.items())
    assert _prepared_ids(root, tmp_path) == list(GOOD)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("A00001,N\n".encode("utf-16-le"), "without a byte-order mark"),
        ("A00001,N\nRécord,N\n".encode("latin-1"), "neither UTF-8 nor UTF-16"),
    ],
)
def test_reference_in_an_unknown_encoding_is_refused(data: bytes, problem: str, tmp_path: Path) -> None:
    path = tmp_path / "REFERENCE.csv"
    path.write_bytes(data)
    with pytest.raises(BadRecordError, match=problem) as err:
        read_reference(path)
    assert str(path) in str(err.value) and "save it as UTF-8" in str(err.value)


# -- 4. the cache notices changed content ------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "d", {f"A0000{i}": "NAO~N"[i] for i in range(5)}, n=4500)


def _rewrite_a00000(root: Path) -> None:
    """Other samples in A00000.mat, with the same size and times (what ``touch -r``, ``cp -p`` or
    ``rsync -a`` leave); its header is rewritten unchanged, with its times kept too."""
    paths = [root / "A00000.mat", root / "A00000.hea"]
    before = [(p.read_bytes(), p.stat()) for p in paths]
    write_record(root, "A00000", ecg_like(4500, seed=99))
    for p, (_data, st) in zip(paths, before, strict=True):
        assert p.stat().st_size == st.st_size
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert paths[0].read_bytes() != before[0][0] and paths[1].read_bytes() == before[1][0]


def test_a_prepared_entry_notices_an_edit_that_keeps_size_and_mtime(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = prepare_records(root, Preprocessing(), tmp_path / "cache")
    before = np.array(first.signal(0))
    _rewrite_a00000(root)
    with caplog.at_level(logging.INFO, logger="ecg_lab.data.cache"):
        again = prepare_records(root, Preprocessing(), tmp_path / "cache")
    fresh = prepare_records(root, Preprocessing(), None)
    assert not np.allclose(again.signal(0), before)
    np.testing.assert_array_equal(np.asarray(again.signals), fresh.signals)
    assert again.cache_path != first.cache_path
    assert any(
        "content differs" in r.getMessage() and str(first.cache_path) in r.getMessage()
        for r in caplog.records
    )
    stored = json.loads((again.cache_path / ENTRY_FILE).read_text())["key"]["files"]
    assert stored == cache.files_digest(
        [root / f"A0000{i}{ext}" for i in range(5) for ext in (".mat", ".hea")]
    )


def test_a_generation_entry_notices_an_edit_that_keeps_size_and_mtime(root: Path, tmp_path: Path) -> None:
    def clean() -> np.ndarray:
        source = PhysioNet2017Source(root=root, labels=["N"])
        return cached_clean_records({"pn": source}, 100.0, Cleaning(), "raise", tmp_path / "cache").signals

    before = clean()
    _rewrite_a00000(root)
    after = clean()
    assert after.shape != before.shape or not np.allclose(after, before)


# -- 5. and 7. damaged entries, NaN ------------------------------------------------------------
def _relist(entry: Path, name: str, data: bytes) -> None:
    """Write ``data`` to the entry's ``name`` and list it in entry.json: damage the checksums pass."""
    (entry / name).write_bytes(data)
    meta = json.loads((entry / ENTRY_FILE).read_text())
    meta["files"][name] = [len(data), zlib.crc32(data)]
    (entry / ENTRY_FILE).write_text(json.dumps(meta))


def _garbage_same_size(entry: Path, name: str) -> None:
    size = (entry / name).stat().st_size
    _relist(entry, name, (b"garbage!" * size)[:size])


def _nan_in(entry: Path, name: str) -> None:
    values = np.fromfile(entry / name, dtype="<f4")
    values[len(values) // 2] = np.nan
    values[-1] = np.inf
    _relist(entry, name, values.tobytes())


def _index_that_does_not_fit(entry: Path) -> None:
    with np.load(entry / "index.npz") as meta:
        index = dict(meta)
    index["lengths"] = index["lengths"] + 1
    np.savez(entry / "index.npz", **index)
    _relist(entry, "index.npz", (entry / "index.npz").read_bytes())


def _entry_json(text: str) -> Callable[[Path], None]:
    return lambda entry: (entry / ENTRY_FILE).write_text(text)


def _entry_json_without(field: str) -> Callable[[Path], None]:
    def spoil(entry: Path) -> None:
        meta = json.loads((entry / ENTRY_FILE).read_text())
        del meta[field]
        (entry / ENTRY_FILE).write_text(json.dumps(meta))

    return spoil


def _entry_json_bad_listing(entry: Path) -> None:
    meta = json.loads((entry / ENTRY_FILE).read_text())
    meta["files"] = {name: 5 for name in meta["files"]}
    (entry / ENTRY_FILE).write_text(json.dumps(meta))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "entry.json truncated": (_entry_json('{"format": 1, "files": {'), "entry.json unreadable"),
    "entry.json not an object": (_entry_json("[]"), "entry.json unreadable"),
    "entry.json empty": (_entry_json(""), "entry.json unreadable"),
    "entry.json without info": (_entry_json_without("info"), "entry.json unreadable"),
    "entry.json bad file list": (_entry_json_bad_listing, "entry.json unreadable"),
    "index.npz garbage, checksum passes": (
        lambda e: _garbage_same_size(e, "index.npz"),
        "index.npz unreadable",
    ),
    "index.npz does not fit": (_index_that_does_not_fit, "does not describe"),
    "signals hold NaN": (lambda e: _nan_in(e, SIGNALS_FILE), "NaN or infinite"),
    "signals.f32 missing": (lambda e: (e / SIGNALS_FILE).unlink(), "signals.f32 is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_prepared_entry_is_rebuilt_with_one_warning(
    damage: str, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = prepare_records(root, Preprocessing(), tmp_path / "cache")
    want, entry = np.array(first.signals), first.cache_path
    del first  # release the memory map before damaging its file
    spoil, problem = DAMAGE[damage]
    spoil(entry)
    with caplog.at_level(logging.WARNING, logger="ecg_lab"):
        again = prepare_records(root, Preprocessing(), tmp_path / "cache")
    (warning,) = caplog.records
    msg = warning.getMessage()
    assert str(entry) in msg and "damaged" in msg and "\n" not in msg
    assert problem in msg
    np.testing.assert_array_equal(np.asarray(again.signals), want)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ecg_lab"):
        prepare_records(root, Preprocessing(), tmp_path / "cache")  # repaired: no warning
    assert not caplog.records


def _nan_in_records_npz(entry: Path) -> None:
    with np.load(entry / "records.npz") as arrays:
        content = dict(arrays)
    content["signals"][3] = np.nan
    np.savez(entry / "records.npz", **content)
    _relist(entry, "records.npz", (entry / "records.npz").read_bytes())


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda e: _garbage_same_size(e, "records.npz"), "records.npz unreadable"),
        (_nan_in_records_npz, "NaN or infinite"),
        (_entry_json("{"), "entry.json unreadable"),
    ],
    ids=["records.npz garbage, checksum passes", "records hold NaN", "entry.json truncated"],
)
def test_a_damaged_generation_entry_is_rebuilt_with_one_warning(
    spoil: Callable[[Path], None], problem: str, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources = {"pn": PhysioNet2017Source(root=root, labels=["N"])}
    first = cached_clean_records(sources, 100.0, Cleaning(), "raise", tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "waveforms").iterdir()
    spoil(entry)
    with caplog.at_level(logging.WARNING, logger="ecg_lab"):
        again = cached_clean_records(sources, 100.0, Cleaning(), "raise", tmp_path / "cache")
    (warning,) = caplog.records
    assert str(entry) in warning.getMessage() and problem in warning.getMessage()
    np.testing.assert_array_equal(again.signals, first.signals)


def test_an_entry_built_with_nan_is_an_error_naming_it_and_is_removed(tmp_path: Path) -> None:
    def build(folder: Path) -> dict:
        np.array([1.0, np.nan], dtype="<f4").tofile(folder / "x.f32")
        return {}

    def load(folder: Path, info: dict) -> np.ndarray:
        values = np.fromfile(folder / "x.f32", dtype="<f4")
        check_finite("x.f32", values)
        return values

    with pytest.raises(CorruptEntryError, match=r"just built: x\.f32 holds NaN or infinite values") as err:
        cached(tmp_path, "kind", {"a": 1}, build, load)
    assert str(tmp_path / "kind") in str(err.value)
    assert list((tmp_path / "kind").iterdir()) == []


def test_check_finite_is_not_fooled_by_a_sum_that_overflows() -> None:
    check_finite("big", np.full(10, 3e38, dtype=np.float32))  # finite values, infinite sum
    with pytest.raises(CorruptEntryError, match="big holds NaN"):
        check_finite("big", np.array([1.0, -np.inf], dtype=np.float32))


# -- 6. a killed build leaves nothing behind for good -----------------------------------------
KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from ecg_lab.data.cache import cached

def build(folder: Path) -> dict:
    (folder / "half.bin").write_bytes(b"x" * 100)
    os.kill(os.getpid(), signal.SIGKILL)

cached(Path(sys.argv[1]) if sys.argv[1] else None, "kind", {"a": 1}, build, lambda folder, info: None)
"""


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _build_one(folder: Path) -> dict:
    (folder / "x.txt").write_text("x")
    return {"n": 1}


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_killed_builds_folder_is_removed_by_the_next_run(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(tmp_path)], cwd=REPO, check=False)
    assert done.returncode == -9
    assert len(_leftovers(tmp_path / "kind")) == 1  # what a kill leaves
    host = socket.gethostname()
    live = tmp_path / "kind" / f".k1.tmp-{os.getpid()}@{host}-live0001"  # a concurrent build, ours
    recent_remote = tmp_path / "kind" / ".k2.tmp-1@elsewhere-recent01"
    old_remote = tmp_path / "kind" / ".k3.tmp-1@elsewhere-old00001"
    for p in (live, recent_remote, old_remote):
        p.mkdir()
    old = time.time() - 2 * 24 * 3600  # older than cache.STALE_AFTER_S
    os.utime(old_remote, (old, old))
    assert cached(tmp_path, "kind", {"a": 1}, _build_one, lambda folder, info: info["n"])[0] == 1
    assert _leftovers(tmp_path / "kind") == sorted([live.name, recent_remote.name])


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_killed_build_without_a_cache_leaves_nothing_in_the_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", KILLED_BUILD, ""], cwd=REPO, env=env, check=False)
    assert done.returncode == -9 and len(list(tmp_path.iterdir())) == 1
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cached(None, "kind", {"a": 1}, _build_one, lambda folder, info: info["n"])[0] == 1
    assert list(tmp_path.iterdir()) == []
