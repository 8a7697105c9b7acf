"""``python -m ecg_lab.explain``: Grad-CAM, integrated gradients and attention weights stitched onto the
recording, with its windows' class probabilities, for one record or the most confidently wrong ones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hydra
import matplotlib.text
import numpy as np
import pytest
import torch

from ecg_lab.app.checkpoints import load_checkpoint, model_from_loaded
from ecg_lab.classification.explain import (
    ATTENTION,
    GRAD_CAM,
    INTEGRATED_GRADIENTS,
    NO_CONV_NOTE,
    Explainer,
    ExplainSettings,
    draw_explanation,
    plot_explanation,
    stitch,
)
from ecg_lab.classification.predictions import most_confidently_wrong
from ecg_lab.classification.rr_features import RRFeatures
from ecg_lab.classification.variants import build_net, model_names
from ecg_lab.data.physionet2017 import iter_reference, read_record
from ecg_lab.data.records import Record
from ecg_lab.edge.preprocess import Preprocessing
from ecg_lab.errors import ConfigError
from ecg_lab.eval import data_config
from ecg_lab.explain import explain, with_data
from ecg_lab.models.crnn import CRNN
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.helpers import ecg_like, run_module, write_dataset

FS = 300
CLASSES = ("N", "A", "O", "~")
NOISE = CLASSES.index("~")


# -- known answer --------------------------------------------------------------------------------------
def evidence_recording(burst_s: float, decoy_s: float = 9.0, seconds: int = 20) -> Record:
    """Smooth beats (72 bpm) plus, at ``burst_s``, 2 s of a 25 Hz burst of 0.5 mV (the evidence), and, at
    ``decoy_s``, 2 s of a 1.5 Hz wave of 2 mV: four times the burst's amplitude, which the network below
    does not look for."""
    t = np.arange(seconds * FS) / FS
    x = np.exp(-(((t % 0.83) - 0.4) ** 2) / (2 * 0.015**2))
    burst = (t >= burst_s) & (t < burst_s + 2)
    x[burst] += 0.5 * np.sin(2 * np.pi * 25 * t[burst])
    decoy = (t >= decoy_s) & (t < decoy_s + 2)
    x[decoy] += 2.0 * np.sin(2 * np.pi * 1.5 * (t[decoy] - decoy_s))
    return Record("K00001", x.astype(np.float32), float(FS), "N")


def burst_detector() -> CRNN:
    """A hand-built CRNN whose '~' logit is 40 × the mean rectified sample-to-sample difference of the
    window (both signs, max-pooled by 4), less 6; every other logit is 0. Only fast change raises it."""
    net = CRNN(
        num_classes=4,
        conv_channels=[2],
        kernel_sizes=[3],
        pool_sizes=[4],
        batch_norm=False,
        rnn=None,
        dropout=0.0,
    )
    with torch.no_grad():
        net.cnn[0][0].weight.copy_(torch.tensor([[[0.0, 1.0, -1.0]], [[0.0, -1.0, 1.0]]]))
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.weight[NOISE] = 40.0
        net.head.bias[NOISE] = -6.0
    return net


def share(values: np.ndarray, start_s: float, stop_s: float) -> float:
    """The share of a map's total that lies between ``start_s`` and ``stop_s``."""
    return float(np.nansum(values[int(start_s * FS) : int(stop_s * FS)]) / np.nansum(values))


@pytest.mark.parametrize("burst_s", [3.0, 15.5])
def test_saliency_and_the_highest_window_probability_sit_on_the_evidence(burst_s: float) -> None:
    record = evidence_recording(burst_s)
    signal = Preprocessing().apply(record)
    burst, decoy = slice(int(burst_s * FS), int((burst_s + 2) * FS)), slice(9 * FS, 11 * FS)
    rms = {
        name: float(np.sqrt(np.mean(signal[part] ** 2)))
        for name, part in (("burst", burst), ("decoy", decoy))
    }
    assert rms["decoy"] > 2 * rms["burst"], rms  # a map of amplitude or energy would fail
    e = Explainer(burst_detector(), CLASSES, Preprocessing()).explain(record)
    assert e.classes[e.predicted] == e.classes[e.target] == "~"  # the predicted class is explained
    top = int(np.argmax(e.window_probs[:, NOISE]))
    start_s = e.starts[top] / FS
    assert start_s <= burst_s and start_s + e.width / FS >= burst_s + 2  # the top window holds the burst
    assert set(e.maps) == {GRAD_CAM, INTEGRATED_GRADIENTS}
    for name, values in e.maps.items():
        assert values.shape == (signal.size,)
        on_burst, on_decoy = share(values, burst_s, burst_s + 2), share(values, 9.0, 11.0)
        assert on_burst > 0.5, (name, on_burst)  # 2 s of 20 hold most of it
        assert on_burst > 3 * on_decoy, (name, on_burst, on_decoy)
        assert burst_s <= e.peak_seconds(name) <= burst_s + 2, name


def test_per_sample_integrated_gradients_would_follow_amplitude_instead() -> None:
    """Why integrated gradients are summed over segments: per sample, the decoy takes the larger share."""
    record = evidence_recording(3.0)
    settings = ExplainSettings(ig_segment_s=0.0)
    e = Explainer(burst_detector(), CLASSES, Preprocessing(), settings).explain(record)
    per_sample = e.maps[INTEGRATED_GRADIENTS]
    assert share(per_sample, 9.0, 11.0) > share(per_sample, 3.0, 5.0)


# -- the parts -------------------------------------------------------------------------------------------
def test_stitch_averages_overlapping_windows_and_leaves_the_rest_nan() -> None:
    values = np.array([[1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    out = stitch(values, np.array([0, 2]), 8)
    np.testing.assert_array_equal(out[:6], [1, 1, 2, 2, 3, 3])
    assert np.isnan(out[6:]).all()


def test_most_confidently_wrong_ranks_wrong_recordings_by_the_calibrated_prediction() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1, 1, 0])
    assert most_confidently_wrong(probs, labels, 5).tolist() == [1, 2, 4]  # 0.8, 0.6, 0.55
    assert most_confidently_wrong(probs, labels, 2).tolist() == [1, 2]
    # thresholds: class 1 wins unless class 0 leads by 0.25; 2 and 4 become right, 5 wrong (at 0.4)
    thresholds = {"method": "thresholds", "values": [0.0, -0.25]}
    assert most_confidently_wrong(probs, labels, 5, thresholds).tolist() == [1, 5]


def test_attention_weights_are_those_the_readout_sums_with() -> None:
    torch.manual_seed(0)
    net = build_net("attention").eval()
    x = torch.randn(3, 1, 1500)
    lengths = torch.tensor([1500, 1200, 900])
    with torch.no_grad():
        weights = net.attention_weights(x, lengths)
        f, steps = net.sequence(x, lengths)
        out = net.norm(net._recur(f, steps))
        z = torch.einsum("bt,btd->bd", weights, out)
    torch.testing.assert_close(z, net.embed(x, lengths))
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    assert (weights[1, steps[1] :] == 0).all() and (weights[2, steps[2] :] == 0).all()
    with pytest.raises(ValueError, match="not attention"):
        build_net("cnn_lstm").attention_weights(x)


def texts(fig) -> str:
    return " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


@pytest.mark.parametrize("name", model_names())
def test_every_variant_gets_its_figure(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_net(name)
    record = Record("V00001", ecg_like(3600, FS, seed=1).astype(np.float32) / 1000, float(FS), "N")
    e = Explainer(net, CLASSES, Preprocessing(), ExplainSettings(ig_steps=8)).explain(record)
    has_conv, has_attention = len(net.cnn) > 0, net.attn is not None
    assert (GRAD_CAM in e.maps) == has_conv and (ATTENTION in e.maps) == has_attention
    assert INTEGRATED_GRADIENTS in e.maps
    assert e.window_probs.shape == (len(e.starts), 4) == (3, 4)  # 12 s: windows at 0, 2.5 and 5 s
    fig = draw_explanation(e)
    assert len(fig.axes) == len(e.maps) + 1
    assert (NO_CONV_NOTE in texts(fig)) == (not has_conv)
    path = plot_explanation(e, tmp_path / "V00001.png")
    assert path.stat().st_size > 10_000


def test_a_whole_recording_model_takes_the_recording_as_one_item() -> None:
    torch.manual_seed(0)
    record = Record("W00001", ecg_like(3700, FS, seed=2).astype(np.float32) / 1000, float(FS), "N")
    e = Explainer(
        build_net("cnn_lstm"), CLASSES, Preprocessing(), ExplainSettings(ig_steps=4), whole=True
    ).explain(record)
    assert e.starts.tolist() == [0] and e.width == e.n_samples == 3700
    assert all(np.isfinite(values).all() for values in e.maps.values())  # every sample is reached


def test_rr_features_reach_the_network_as_in_training() -> None:
    torch.manual_seed(0)
    net = CRNN(num_classes=4, conv_channels=[8], kernel_sizes=[5], pool_sizes=[8], rnn="gru", rnn_hidden=8,
               rnn_layers=1, extra_features=RRFeatures.WIDTH)  # fmt: skip
    record = Record("R00001", ecg_like(3600, FS, seed=3).astype(np.float32) / 1000, float(FS), "N")
    features = RRFeatures()
    e = Explainer(net, CLASSES, Preprocessing(), ExplainSettings(ig_steps=4), features=features).explain(
        record
    )
    signal = Preprocessing().apply(record)
    x = torch.from_numpy(Preprocessing().windows(signal))[:, None]
    rr = torch.from_numpy(features.record(signal, FS)[0])
    with torch.no_grad():
        expected = torch.softmax(net.eval()(x, rr=rr.expand(len(x), -1)), 1).numpy()
    np.testing.assert_allclose(e.window_probs, expected, atol=1e-6)
    assert set(e.maps) == {GRAD_CAM, INTEGRATED_GRADIENTS}


# -- the entry point --------------------------------------------------------------------------------------
SHORT = [
    "model=attention",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "callbacks.progress.interactive=false",
]
QUICK = ["threads=1", "explain.ig_steps=8"]


@pytest.fixture(scope="module")
def attention_ckpt(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The last checkpoint of a short training run of model=attention on the small synthetic data."""
    run = tmp_path_factory.mktemp("attention_run")
    train(compose_config("train", [*SMALL_SYNTHETIC, *SHORT], run, cache_dir))
    return run / "checkpoints" / "last.ckpt"


def explained(out: Path, cache_dir: Path, *overrides: str) -> dict:
    """``python -m ecg_lab.explain *overrides`` in this process; the ``explanations.json`` it writes."""
    explain(compose_config("explain", [*QUICK, *overrides], out, cache_dir))
    return json.loads((out / "explanations.json").read_text())


def test_record_from_another_folder(attention_ckpt: Path, tmp_path: Path, cache_dir: Path) -> None:
    root = write_dataset(tmp_path / "data", {"B00001": "N", "B00002": "A"}, n=4500)
    out = tmp_path / "out"
    got = explained(out, cache_dir, f"ckpt_path={attention_ckpt}", "record=B00002", f"data.root={root}")
    (entry,) = got["records"]
    assert entry["record"] == "B00002" and entry["label"] == "A" and entry["png"] == "B00002.png"
    assert entry["maps"] == [GRAD_CAM, INTEGRATED_GRADIENTS, ATTENTION] and entry["windows"] == 5
    assert sum(entry["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert got["data_root"] == str(root.resolve())
    assert (out / "B00002.png").stat().st_size > 10_000
    assert json.loads((out / "run_status.json").read_text())["status"] == "completed"


def test_worst_are_the_most_confidently_wrong_test_recordings(
    attention_ckpt: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "out"
    got = explained(out, cache_dir, f"ckpt_path={attention_ckpt}", "worst=2", "target=A")
    assert got["selection"] == "worst=2" and len(got["records"]) == 2
    # every test recording of the checkpoint's own split (split.csv) explained from its raw file, another
    # path than the cached windows the selection scored: the two chosen are the wrong ones with the
    # highest probability of their predicted class, in that order
    with (out / "split.csv").open() as f:
        tests = {row["record"]: row["label"] for row in csv.DictReader(f) if row["split"] == "test"}
    cfg = compose_config(
        "explain", [f"ckpt_path={attention_ckpt}", "record=x"], tmp_path / "probe", cache_dir
    )
    ckpt, stored = load_checkpoint(attention_ckpt)
    model = model_from_loaded(ckpt, stored)
    datamodule = hydra.utils.instantiate(data_config(with_data(cfg, stored), stored))
    record_dir = iter_reference(datamodule.record_root())[0]
    explainer = Explainer(model.net, model.classes, datamodule.preprocess, ExplainSettings(ig_steps=2))
    wrong = []
    for record_id, label in tests.items():
        e = explainer.explain(read_record(record_dir, record_id, label, FS, model.classes))
        if e.classes[e.predicted] != label:
            wrong.append((float(e.record_probs[e.predicted]), record_id))
    assert len(wrong) > 2
    assert [r["record"] for r in got["records"]] == [record_id for _, record_id in sorted(wrong)[::-1][:2]]
    for entry in got["records"]:
        assert entry["predicted"] != entry["label"] == tests[entry["record"]]
        assert entry["explained_class"] == "A" and (out / entry["png"]).stat().st_size > 10_000


def test_bad_requests_are_one_line(attention_ckpt: Path, tmp_path: Path, cache_dir: Path) -> None:
    ckpt = f"ckpt_path={attention_ckpt}"
    for overrides, words in (
        ([ckpt], "give either record=<id> or worst=<N>, not neither"),
        ([ckpt, "record=A", "worst=2"], "not both"),
        ([ckpt, "worst=0"], "worst=0 must be a positive int"),
        ([ckpt, "record=x", "target=Z"], "target='Z' is not one of the checkpoint's classes"),
        ([ckpt, "record=x", "explain.ig_steps=0"], "explain.ig_steps=0 must be a positive int"),
    ):
        with pytest.raises(ConfigError, match=words):
            explain(compose_config("explain", overrides, tmp_path / "bad", cache_dir))


def test_unknown_record_names_data_root_and_the_record(attention_ckpt: Path, tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", {"B00001": "N"}, n=4500)
    proc = run_module(
        "ecg_lab.explain",
        [
            f"ckpt_path={attention_ckpt}",
            "record=Z99999",
            f"data.root={root}",
            f"hydra.run.dir={tmp_path / 'o'}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: record=Z99999 is not listed in") and f"data.root={root}" in last, last
    assert "e.g. record=B00001" in last
