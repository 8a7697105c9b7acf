"""Whole recordings as items (data.recordings): crops, padding, batching by length, the masked readout of
padded batches, and a short train + eval on synthetic whole recordings."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ecg_lab.classification.recordings import Draw, EpochCrops, RecordingDataset
from ecg_lab.data.loaders import pad_collate
from ecg_lab.errors import ConfigError
from ecg_lab.models.crnn import CRNN
from ecg_lab.train import build
from tests.conftest import SMALL_SYNTHETIC
from tests.helpers import run_module
from tests.test_model import MODEL_CONFIGS, composed_net

CROP = 3300  # the small synthetic records are 3000-3600 samples: some cropped, some whole
RECORDS = ["data=synthetic_records", f"data.recordings.train_length={CROP}"]


@pytest.fixture
def records_dm(train_cfg):
    """Factory: the set-up datamodule of the small synthetic whole recordings."""

    def make(*overrides: str):
        dm = hydra.utils.instantiate(train_cfg(*RECORDS, *overrides).data)
        dm.prepare_data()
        dm.setup()
        return dm

    return make


def signal_of(dm, record: int) -> np.ndarray:
    return np.asarray(dm.prepared.signal(record), dtype=np.float32)


# -- items and batches -------------------------------------------------------------------------------
def test_items_are_crops_or_whole_recordings_and_batches_are_padded(records_dm) -> None:
    dm = records_dm()
    prepared = dm.prepared
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert isinstance(train, RecordingDataset) and len(train) == np.sum(dm.record_split == "train")
    # training items: at most CROP samples, a contiguous piece of their recording; shorter ones whole
    lengths = prepared.lengths[train.records]
    assert (lengths > CROP).any() and (lengths < CROP).any()
    for i in range(len(train)):
        x, label, record, inputs = train[Draw(i, 7, 3)]
        n = int(prepared.lengths[record])
        assert x.shape == (1, min(n, CROP)) and inputs == {"lengths": min(n, CROP)}
        assert label == prepared.labels[record] and record == train.records[i]
        pieces = sliding_window_view(signal_of(dm, record), x.shape[-1])
        assert (pieces == x[0].numpy()).all(axis=1).any()
    # validation items: whole recordings, ordered by length
    assert np.all(np.diff(prepared.lengths[val.records]) >= 0)
    x, y, rec, inputs = next(iter(dm.val_dataloader()))
    n = prepared.lengths[rec.numpy()]
    assert x.shape == (len(y), 1, n.max()) and inputs["lengths"].tolist() == n.tolist()
    for row, record in enumerate(rec.tolist()):
        assert np.array_equal(x[row, 0, : n[row]].numpy(), signal_of(dm, record))
        assert not x[row, 0, n[row] :].any()  # zero padding
    # class balance from the training recordings, one count each
    counts = np.bincount(prepared.labels[dm.record_split == "train"], minlength=4)
    assert dm.class_counts().tolist() == counts.tolist()
    assert dm.class_weights() == pytest.approx(counts.sum() / (4 * counts))


def test_collate_pads_x_and_keeps_other_inputs() -> None:
    items = [
        (torch.ones(1, 3), 0, 5, {"lengths": 3, "rr": torch.tensor([1.0, 2.0])}),
        (torch.full((1, 5), 2.0), 1, 9, {"lengths": 5, "rr": torch.tensor([3.0, 4.0])}),
    ]
    x, y, rec, inputs = pad_collate(items)
    assert x.tolist() == [[[1, 1, 1, 0, 0]], [[2, 2, 2, 2, 2]]]
    assert y.tolist() == [0, 1] and rec.tolist() == [5, 9]
    assert inputs["lengths"].tolist() == [3, 5] and inputs["rr"].shape == (2, 2)


def test_crops_follow_seed_epoch_and_record_only(records_dm) -> None:
    dm = records_dm()
    train = dm.datasets["train"]
    long = [i for i in range(len(train)) if dm.prepared.lengths[train.records[i]] > CROP + 100]
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()

    def crops(seed: int, epoch: int) -> list[torch.Tensor]:
        return [train[Draw(i, seed, epoch)][0] for i in long]

    first = crops(1, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, crops(1, 0), strict=True))
    assert sum(not torch.equal(a, b) for a, b in zip(first, crops(1, 1), strict=True)) >= len(long) // 2
    assert sum(not torch.equal(a, b) for a, b in zip(first, crops(2, 0), strict=True)) >= len(long) // 2
    assert torch.equal(torch.get_rng_state(), torch_state)  # no global generator drawn from
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()

    # the training loader: EpochShuffle's (seed, epoch) order, as Draw keys; a fresh datamodule (a
    # resumed run) at the same epoch serves the same batch
    def first_batch(epoch: int) -> list[torch.Tensor]:
        loader = records_dm().train_dataloader()
        assert isinstance(loader.sampler, EpochCrops)
        loader.sampler.set_epoch(epoch)
        x, y, rec, inputs = next(iter(loader))
        return [x, rec, inputs["lengths"]]

    assert all(torch.equal(a, b) for a, b in zip(first_batch(2), first_batch(2), strict=True))
    assert not torch.equal(first_batch(2)[1], first_batch(3)[1])


def test_ddp_val_and_test_count_each_recording_once(records_dm) -> None:
    dm = records_dm()
    ranks = 3  # 8 val and 8 test recordings: a padding sampler would repeat one
    for part, loader in (("val", dm.val_dataloader), ("test", dm.test_dataloader)):
        assert len(dm.datasets[part]) % ranks
        seen = []
        for rank in range(ranks):
            dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": ranks, "rank": rank})
            seen += list(loader().sampler)
        assert sorted(seen) == list(range(len(dm.datasets[part]))), part
    n = len(dm.datasets["test"])
    dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": n + 1, "rank": 0})
    with pytest.raises(ConfigError, match=rf"^data synthetic_records: {n} test recordings for {n + 1} DDP"):
        dm.test_dataloader()


def test_bad_combinations_are_one_line_naming_the_key(train_cfg) -> None:
    with pytest.raises(ConfigError, match=r"^augment=default does not respect the padding .*augment=none"):
        build(train_cfg(*RECORDS, "augment=default"))
    with pytest.raises(ConfigError, match=r"^data\.recordings\.train_length=1000 is shorter than data\.prep"):
        build(train_cfg("data=synthetic_records", "data.recordings.train_length=1000"))
    net = CRNN(seq_len=16).eval()
    with pytest.raises(ValueError, match=r"^model\.net\.seq_len=16 pools padded batches"):
        net(torch.zeros(2, 1, 2000), lengths=torch.tensor([2000, 1800]))


# -- the masked readout --------------------------------------------------------------------------------
LENGTHS = [3000, 1537, 2222]


def padded_equals_alone(net: torch.nn.Module) -> None:
    """A padded batch's logits are each item's logits run alone (eval mode); without lengths they are not."""
    torch.manual_seed(0)
    items = [torch.randn(1, 1, n) for n in LENGTHS]
    x = pad_collate([(item[0], 0) for item in items])[0]
    net = net.eval()
    with torch.no_grad():
        alone = torch.cat([net(item) for item in items])
        padded = net(x, lengths=torch.tensor(LENGTHS))
        unmasked = net(x)
    assert torch.allclose(padded, alone, atol=1e-5), (padded - alone).abs().max()
    assert not torch.allclose(unmasked[1:], alone[1:], atol=1e-5)  # the test can tell padding apart
    assert torch.allclose(padded[0], unmasked[0], atol=1e-5)  # the longest item: nothing padded


@pytest.mark.parametrize(
    ("rnn", "bidirectional"), [("lstm", False), ("lstm", True), ("gru", True), (None, False)]
)
@pytest.mark.parametrize("readout", ["last", "mean", "attention"])
def test_padded_logits_equal_alone_for_every_readout(
    rnn: str | None, bidirectional: bool, readout: str
) -> None:
    net = CRNN(rnn=rnn, readout=readout, bidirectional=bidirectional, rnn_hidden=16, layer_norm=True)
    padded_equals_alone(net)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_padded_logits_equal_alone_for_every_variant(name: str) -> None:
    net = composed_net(name)
    if getattr(net.seq_pool, "output_size", None):
        with pytest.raises(ValueError, match=r"^model\.net\.seq_len="):
            net(torch.zeros(2, 1, 2000), lengths=torch.tensor([2000, 1800]))
        return
    padded_equals_alone(net)


# -- end to end ----------------------------------------------------------------------------------------
def test_train_and_eval_on_whole_recordings(tmp_path: Path, cache_dir: Path) -> None:
    common = [f"paths.cache_dir={cache_dir}", "trainer=cpu", "callbacks.progress.interactive=false"]
    run = tmp_path / "run"
    args = [*common, *SMALL_SYNTHETIC, *RECORDS, "model=attention", "trainer.max_epochs=2"]
    proc = run_module("ecg_lab.train", [*args, f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((run / "test_metrics.json").read_text())
    assert trained["epochs"] == 2 and trained["n_windows"] == trained["n_records"]  # one item a recording
    history = (run / "metrics_history.csv").read_text().splitlines()
    assert len(history) == 3

    best = next((run / "checkpoints").glob("best-*.ckpt"))
    proc = run_module(
        "ecg_lab.eval", [*common, f"ckpt_path={best}", f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
    assert evaluated["record_confusion_matrix"] == trained["record_confusion_matrix"]
    assert evaluated["official_f1"] == pytest.approx(trained["official_f1"], abs=1e-6)
    assert evaluated["data"] == "synthetic_records"

    # the edge runtime scores fixed windows: exporting a whole-recording model is refused in one line
    proc = run_module("ecg_lab.export", [f"ckpt_path={best}", f"out_dir={tmp_path / 'pi'}"], tmp_path)
    assert proc.returncode != 0 and not (tmp_path / "pi").exists()
    assert "trained on whole recordings (data.recordings is set)" in proc.stderr.strip().splitlines()[-1]
