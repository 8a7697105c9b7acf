"""One on-disk cache for both workflows: atomic entries, damage detected on load and repaired."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ecg_lab.classification.prepared import SIGNALS_FILE, prepare_records
from ecg_lab.data.cache import ENTRY_FILE, cached
from ecg_lab.edge.preprocess import Preprocessing
from ecg_lab.generation.cleaning import Cleaning, cached_clean_records
from ecg_lab.generation.sources import PhysioNet2017Source
from tests.helpers import write_dataset


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "d", {f"A0000{i}": "NAO~N"[i] for i in range(5)}, n=4500)


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "entry_missing_file"])
def test_a_damaged_classification_entry_is_rebuilt(
    root: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    first = prepare_records(root, Preprocessing(), cache)
    want = np.array(first.signals)
    signals = first.cache_path / SIGNALS_FILE
    del first  # release the memory map before damaging its file
    if damage == "truncated":
        signals.write_bytes(signals.read_bytes()[:-100])
    elif damage == "flipped":
        _flip_one_byte(signals)
    else:
        signals.unlink()
    with caplog.at_level(logging.WARNING, logger="ecg_lab.data.cache"):
        again = prepare_records(root, Preprocessing(), cache)
    assert any("damaged" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(np.asarray(again.signals), want)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ecg_lab.data.cache"):
        prepare_records(root, Preprocessing(), cache)  # repaired: served without a warning
    assert not caplog.records


def test_a_damaged_generation_entry_is_rebuilt(root: Path, tmp_path: Path) -> None:
    sources = {"physionet2017": PhysioNet2017Source(root=root, labels=["N"])}
    first = cached_clean_records(sources, 100.0, Cleaning(), "raise", tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "waveforms").iterdir()
    assert (entry / ENTRY_FILE).is_file()  # the same mechanism as the classifier's entries
    _flip_one_byte(entry / "records.npz")
    again = cached_clean_records(sources, 100.0, Cleaning(), "raise", tmp_path / "cache")
    np.testing.assert_array_equal(again.signals, first.signals)
    assert again.ids.tolist() == first.ids.tolist()


def test_a_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    def build(folder: Path) -> dict:
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cached(tmp_path, "kind", {"a": 1}, build, lambda folder, info: None)
    assert list((tmp_path / "kind").iterdir()) == []


def test_entries_are_keyed_by_what_they_are_made_from(tmp_path: Path) -> None:
    calls = []

    def build(folder: Path) -> dict:
        calls.append(1)
        (folder / "x.txt").write_text("x")
        return {"n": len(calls)}

    load = lambda folder, info: info["n"]  # noqa: E731
    assert cached(tmp_path, "kind", {"a": 1}, build, load)[0] == 1
    assert cached(tmp_path, "kind", {"a": 1}, build, load)[0] == 1  # from the cache
    assert cached(tmp_path, "kind", {"a": 2}, build, load)[0] == 2  # another key
    assert cached(None, "kind", {"a": 1}, build, load)[0] == 3  # no cache: built every time
