"""The real reader and preprocessing on the shared PhysioNet 2017 copy (skipped where it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecg_lab.classification.datamodule import ECGWindowDataModule
from ecg_lab.data.physionet2017 import link_subset, read_reference
from ecg_lab.edge.preprocess import Preprocessing, window_count
from tests.conftest import SHARED_PN2017

pytestmark = pytest.mark.skipif(
    not (SHARED_PN2017 / "REFERENCE.csv").is_file(),
    reason=f"real PhysioNet 2017 data not found at {SHARED_PN2017} (CI has it beside the repo)",
)


def test_real_subset_reads_preprocesses_and_splits(tmp_path: Path) -> None:
    root = link_subset(SHARED_PN2017, tmp_path / "training2017", 150)
    dm = ECGWindowDataModule(tmp_path, cache_dir=tmp_path / "cache")
    dm.setup()
    prepared = dm.prepared
    assert prepared is not None and len(prepared) == 150 and not prepared.skipped
    assert prepared.fs == 300.0
    # 9–61 s at 300 Hz; z-scored per record
    assert prepared.lengths.min() >= 9 * 300 - 1 and prepared.lengths.max() <= 61 * 300 + 1
    sig = prepared.signal(0)
    assert abs(float(sig.mean())) < 1e-3 and float(sig.std()) == pytest.approx(1.0, abs=1e-3)
    expected = sum(window_count(int(n), 1500, 750) for n in prepared.lengths)
    assert sum(len(ds) for ds in dm.datasets.values()) == expected
    labels = dict(read_reference(root / "REFERENCE.csv"))
    assert [dm.classes[i] for i in prepared.labels] == [labels[r] for r in prepared.ids]
    windows = [set(ds.records.tolist()) for ds in dm.datasets.values()]
    assert not (windows[0] & windows[1]) and not (windows[0] & windows[2]) and not (windows[1] & windows[2])
    x, y, r = dm.datasets["train"][0]
    assert x.shape == (1, 1500) and 0 <= y < 4


@pytest.mark.slow
def test_all_shared_records_window_count(tmp_path: Path) -> None:
    dm = ECGWindowDataModule(SHARED_PN2017, cache_dir=tmp_path / "cache", preprocess=Preprocessing())
    dm.setup()
    counts = np.bincount(np.concatenate([ds.labels for ds in dm.datasets.values()]), minlength=4)
    assert len(dm.prepared) == 7248 and counts.sum() == 86_174
    assert counts[0] > counts[2] > counts[1] > counts[3]  # N > O > A > ~, as in the full set
