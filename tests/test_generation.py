"""The generation workflow end to end on synthetic normal ECGs: config checks, fast_dev_run, a short fit,
the checkpoint's config, evaluation, generation and the R-peak analysis."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException

from ecg_lab.analyze import analyze
from ecg_lab.app.checkpoints import load_checkpoint, model_from_checkpoint
from ecg_lab.app.checks import check_task_config
from ecg_lab.errors import ConfigError, MissingFileError
from ecg_lab.eval import evaluate
from ecg_lab.generate import generate
from ecg_lab.generation.analysis import bin_medians, rpeak_histogram
from ecg_lab.generation.fidelity import median_bandwidth, mmd
from ecg_lab.generation.module import FidelitySettings
from ecg_lab.train import train
from tests.conftest import compose_config
from tests.test_fidelity import KEYS as FIDELITY_KEYS
from tests.test_waveforms import SMALL_NORMAL
from tools.latent_mixture_sizes import checkpoint_windows, closest_size, mixture_samples

VAE = ["experiment=lstm_vae", "trainer=cpu", *SMALL_NORMAL, "callbacks.progress.interactive=false"]
SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
    "model.fidelity.n_generated=8",
]


pytestmark = pytest.mark.usefixtures("one_thread")


# -- configs that do not fit fail at start ---------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=cnn_lstm", "loss=morph_mse"], r"loss=morph_mse is for generation but model=cnn_lstm"),
        (
            ["experiment=lstm_vae", "loss=weighted_ce"],
            r"loss=weighted_ce is for classification but model=lstm_vae",
        ),
        (
            ["experiment=lstm_vae", "data=physionet2017"],
            r"data=physionet2017 is for classification.*data=synthetic_normal",
        ),
        (["model=cnn_lstm", "data=ptbxl"], r"data=ptbxl is for generation but model=cnn_lstm"),
        (
            ["experiment=lstm_vae", "data.window=1200"],
            r"data\.window=1200 does not fit model\.net\.seq_len=1000",
        ),
    ],
)
def test_mismatched_configs_fail_at_start(
    overrides, message, tmp_path: Path, cache_dir: Path, monkeypatch
) -> None:
    cfg = compose_config("train", overrides, tmp_path / "run", cache_dir)
    with pytest.raises(ValueError, match=message):
        check_task_config(cfg)
    import ecg_lab.train as train_module

    monkeypatch.setattr(
        train_module.hydra.utils, "instantiate", lambda *a, **k: pytest.fail("built anything")
    )
    with pytest.raises(ValueError, match=message):
        train(cfg)  # before any data or model is built
    assert json.loads((tmp_path / "run" / "run_status.json").read_text())["status"] == "failed"


def test_matching_configs_pass(tmp_path: Path, cache_dir: Path) -> None:
    check_task_config(compose_config("train", VAE, tmp_path, cache_dir))
    check_task_config(compose_config("train", [], tmp_path, cache_dir))


def test_model_seq_len_that_does_not_divide_names_the_keys(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config("train", [*VAE, "model.net.seq_len=1001", "data.window=1001"], tmp_path, cache_dir)
    with pytest.raises(
        InstantiationException, match=r"model\.net\.seq_len=1001 must be divisible by model\.net\.pool"
    ):
        train(cfg)


# -- training ---------------------------------------------------------------------------------------
def test_fast_dev_run(tmp_path: Path, cache_dir: Path) -> None:
    metrics = train(
        compose_config("train", [*VAE, "debug=fdr", "model.fidelity.n_generated=4"], tmp_path, cache_dir)
    )
    for key in (
        "test/mse",
        "test/wmse",
        "test/kl",
        "test/rpeak_recall",
        "test/r_amplitude_ratio",
        "test/mmd",
    ):
        assert key in metrics and np.isfinite(metrics[key]), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("vae")
    torch.set_num_threads(1)
    train(compose_config("train", [*VAE, *SHORT], out, cache_dir))
    return out


def test_run_folder_holds_fidelity_metrics_and_figures(trained: Path) -> None:
    for name in (
        "checkpoints/last.ckpt",
        "test_metrics.json",
        "reconstructions.png",
        "generated.png",
        "training_curves.png",
        "metrics_history.csv",
        "split.csv",
    ):
        assert (trained / name).is_file(), name
    results = json.loads((trained / "test_metrics.json").read_text())
    for key in FIDELITY_KEYS | {"wmse", "kl", "n_windows", "n_params"}:
        assert key in results, key
    assert results["n_windows"] > 0 and results["model_name"] == "lstm_vae"
    assert 0.0 <= results["rpeak_recall"] <= 1.0 and 0.0 <= results["rhythm_plausible"] <= 1.0
    assert results["rhythm_plausible_input"] > 0.8  # synthetic sinus rhythm is plausible


def test_beta_is_logged_every_step_and_follows_the_schedule(
    trained: Path, tmp_path: Path, cache_dir: Path
) -> None:
    with (trained / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/beta")]
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(len(steps))) and len(steps) == 6  # 2 epochs × 3 batches
    from ecg_lab.generation.loss import cyclical_beta

    beta = compose_config("train", [*VAE, *SHORT], tmp_path, cache_dir).loss.beta  # the recipe's schedule
    betas = [float(r["train/beta"]) for r in rows]
    expected = [
        cyclical_beta(s, 6, beta.cycles, beta.rising_fraction, beta.beta_max, beta.warmup_fraction)
        for s in steps
    ]
    assert betas == pytest.approx(expected) and betas[0] == 0.0 and max(betas) > 0.0


def test_checkpoint_rebuilds_the_vae_and_decodes(trained: Path) -> None:
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    model, stored = model_from_checkpoint(ckpt)
    assert stored.model_name == "lstm_vae" and stored.data.window == 1000
    z = torch.zeros(3, model.net.latent_dim)
    assert model.net.decode(z).shape == (3, 1, 1000)
    a, b = model.generate(4, seed=1), model.generate(4, seed=1)
    assert a.shape == (4, 1000) and np.array_equal(a, b)


def test_eval_and_generate_from_the_checkpoint(trained: Path, tmp_path: Path, cache_dir: Path) -> None:
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", "trainer=cpu"], tmp_path / "eval", cache_dir)
    results = evaluate(cfg)
    assert "rpeak_recall" in results and (tmp_path / "eval" / "reconstructions.png").is_file()
    trained_results = json.loads((trained / "test_metrics.json").read_text())
    assert results["mse"] == pytest.approx(trained_results["mse"], rel=1e-4)

    cfg = compose_config("generate", [f"ckpt_path={ckpt}", "n=5", "seed=3"], tmp_path / "gen", cache_dir)
    generate(cfg)
    signals = np.load(tmp_path / "gen" / "generated.npy")
    assert signals.shape == (5, 1000) and np.isfinite(signals).all()
    with (tmp_path / "gen" / "generated.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time_s", *(f"ecg_{i}" for i in range(5))] and len(rows) == 1001
    assert float(rows[2][0]) == pytest.approx(0.01) and float(rows[1][3]) == pytest.approx(
        signals[2, 0], rel=1e-4
    )
    assert (tmp_path / "gen" / "generated.png").is_file()


def test_eval_sets_single_model_keys_on_the_stored_model(
    trained: Path, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    base = [f"ckpt_path={ckpt}", "trainer=cpu"]
    trained_results = json.loads((trained / "test_metrics.json").read_text())
    cfg = compose_config("eval", [*base, "+model.fidelity.n_generated=5"], tmp_path / "n5", cache_dir)
    results = evaluate(cfg)  # the rest of the stored model stays: the same network and reconstructions
    assert results["mse"] == pytest.approx(trained_results["mse"], rel=1e-4)
    tested = json.loads((tmp_path / "n5" / "test_metrics.json").read_text())
    assert (trained_results["n_generated"], tested["n_generated"]) == (8, 5)
    assert tested["sampler"] == trained_results["sampler"] == "gmm, 10 components"
    # a count for the test alone (validation keeps n_generated)
    cfg = compose_config("eval", [*base, "+model.fidelity.test_n_generated=6"], tmp_path / "t6", cache_dir)
    evaluate(cfg)
    assert json.loads((tmp_path / "t6" / "test_metrics.json").read_text())["n_generated"] == 6
    feature = f"+model.fidelity.feature_ckpt={tmp_path / 'clf.ckpt'}"  # reaches the model: it is read
    cfg = compose_config("eval", [*base, feature], tmp_path / "f", cache_dir)
    with pytest.raises(MissingFileError, match=r"^model\.fidelity\.feature_ckpt=.*no such checkpoint"):
        evaluate(cfg)
    cfg = compose_config("eval", [*base, "+model.fidelity.feature_ckp=x"], tmp_path / "typo", cache_dir)
    with pytest.raises(ConfigError, match=r"^\+model\.fidelity\.feature_ckp: the model stored in .*no such"):
        evaluate(cfg)


def test_eval_under_the_other_sampler(trained: Path, tmp_path: Path, cache_dir: Path) -> None:
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    trained_results = json.loads((trained / "test_metrics.json").read_text())
    overrides = [f"ckpt_path={ckpt}", "trainer=cpu", "+model.sampler.kind=prior"]
    results = evaluate(compose_config("eval", overrides, tmp_path / "prior", cache_dir))
    assert results["mse"] == pytest.approx(trained_results["mse"], rel=1e-4)  # the same network
    assert json.loads((tmp_path / "prior" / "test_metrics.json").read_text())["sampler"] == "prior"
    # a checkpoint without a mixture (a prior-trained one, here the same weights without it) under gmm:
    # the mixture is fitted to the training windows at test, and the run says so
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["state_dict"] = {
        k: v for k, v in state["state_dict"].items() if not k.startswith("latent_density.")
    }
    torch.save(state, tmp_path / "no_mixture.ckpt")
    overrides = [f"ckpt_path={tmp_path / 'no_mixture.ckpt'}", "trainer=cpu"]
    assert evaluate(compose_config("eval", overrides, tmp_path / "g", cache_dir))["mse"] == pytest.approx(
        trained_results["mse"], rel=1e-4
    )
    status = json.loads((tmp_path / "g" / "run_status.json").read_text())
    assert any("no fitted latent mixture" in w for w in status.get("warnings", [])), status
    assert json.loads((tmp_path / "g" / "test_metrics.json").read_text())["sampler"] == "gmm, 10 components"
    # a mixture of another size than the stored one: refitted at test, with the same warning
    overrides = [f"ckpt_path={ckpt}", "trainer=cpu", "+model.sampler.components=3"]
    evaluate(compose_config("eval", overrides, tmp_path / "k3", cache_dir))
    status = json.loads((tmp_path / "k3" / "run_status.json").read_text())
    assert any("no fitted latent mixture" in w for w in status.get("warnings", [])), status
    assert json.loads((tmp_path / "k3" / "test_metrics.json").read_text())["sampler"] == "gmm, 3 components"


def test_test_n_generated_applies_to_the_test_alone() -> None:
    assert FidelitySettings(n_generated=8).generated("test") == 8
    settings = FidelitySettings(n_generated=8, test_n_generated=32)
    assert (settings.generated("val"), settings.generated("test")) == (8, 32)


def test_mixture_sizes_draw_from_the_mixture_evaluation_refits(
    trained: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """``tools/latent_mixture_sizes.py``: a size's samples come from the very mixture ``ecg_lab.eval``
    refits for ``+model.sampler.components=K`` (drawn with the test's seed: the same test MMD); the
    checkpoint's own mixture is put back; the size closest to the real rhythm is chosen."""
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    model, windows = checkpoint_windows(str(ckpt))
    assert model.latent_density is not None
    own = model.latent_density.means.clone()
    samples = mixture_samples(model, windows["train"], [3, 4], n=8, seed=0)
    assert set(samples) == {0, 3, 4} and all(x.shape == (8, 1000) for x in samples.values())
    assert not np.allclose(samples[3], samples[4])
    assert torch.equal(model.latent_density.means, own) and model.latent_density.components == 10
    overrides = [f"ckpt_path={ckpt}", "trainer=cpu", "+model.sampler.components=3"]
    tested = evaluate(compose_config("eval", overrides, tmp_path / "k3", cache_dir))
    test_x = windows["test"].astype(np.float64)
    assert tested["mmd"] == pytest.approx(mmd(test_x, samples[3], median_bandwidth(test_x)), rel=1e-5)
    assert tested["mmd"] != pytest.approx(mmd(test_x, samples[4], median_bandwidth(test_x)), rel=1e-5)
    assert closest_size({0: 0.9, 3: 0.5, 5: 0.8, 8: 0.95}, real=0.88) == 8  # N(0, I) never chosen
    assert closest_size({3: 0.5, 5: 1.0}, real=0.75) == 3  # a tie: the smaller


def test_generate_rejects_a_classifier_checkpoint(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config(
        "train",
        [
            "trainer=cpu",
            "debug=limit",
            "trainer.max_epochs=1",
            "data.synthetic.n_records=48",
            "data.synthetic.max_duration_s=12",
            "data.synthetic.min_duration_s=10",
            "data.synthetic.shares=[0.25,0.25,0.25,0.25]",
            "callbacks.progress.interactive=false",
        ],
        tmp_path / "clf",
        cache_dir,
    )
    train(cfg)
    ckpt = next((tmp_path / "clf" / "checkpoints").glob("*.ckpt"))
    with pytest.raises(ValueError, match="not a generative model"):
        generate(compose_config("generate", [f"ckpt_path={ckpt}"], tmp_path / "gen", cache_dir))


# -- R-peak statistics ------------------------------------------------------------------------------
def test_rpeak_histogram_and_bin_medians() -> None:
    positions = np.array([5, 15, 15, 95, 150, 160, 170, 999])
    hist = rpeak_histogram(positions, 1000, 10)
    assert [h["count"] for h in hist] == [4, 3, 0, 0, 0, 0, 0, 0, 0, 1]
    med = bin_medians(positions, 1000, 5)
    assert med[0]["n_peaks"] == 7 and med[0]["median_index"] == 95.0
    assert med[4]["median_index"] == 999.0 and np.isnan(med[2]["median_index"])


def test_analyze_rpeaks_and_waveforms(tmp_path: Path, cache_dir: Path) -> None:
    base = ["data=synthetic_normal", *SMALL_NORMAL, "median_bins=4"]
    result = analyze(compose_config("analyze", [*base, "command=rpeaks"], tmp_path / "r", cache_dir))
    assert result["n_windows"] > 0 and result["n_rpeaks"] > 7 * result["n_windows"]
    with (tmp_path / "r" / "rpeak_bin_medians.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and sum(int(r["n_peaks"]) for r in rows) == result["n_rpeaks"]
    for r in rows:
        assert float(r["start"]) <= float(r["median_index"]) < float(r["end"])
    assert (tmp_path / "r" / "rpeak_histogram.csv").is_file() and (tmp_path / "r" / "rpeaks.png").is_file()
    result = analyze(
        compose_config("analyze", [*base, "command=waveforms", "n_records=3"], tmp_path / "w", cache_dir)
    )
    assert len(result["records"]) == 3 and (tmp_path / "w" / "real_vs_analytic.png").is_file()


def test_analyze_needs_waveform_data(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ValueError, match="needs a waveform data config"):
        analyze(compose_config("analyze", ["data=synthetic", "command=rpeaks"], tmp_path, cache_dir))


def test_eval_warns_when_the_data_shapes_signals_differently(
    trained: Path, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = next((trained / "checkpoints").glob("best-*.ckpt"))
    stride = load_checkpoint(ckpt)[1].data.stride  # the recipe's; only the analytic settings differ
    overrides = [
        f"ckpt_path={ckpt}",
        "trainer=cpu",
        "data=synthetic_normal",
        *SMALL_NORMAL,
        f"data.stride={stride}",
    ]
    cfg = compose_config("eval", [*overrides, "data.analytic.r_amplification=3"], tmp_path, cache_dir)
    with caplog.at_level(logging.WARNING, logger="ecg_lab.app.checks"):
        evaluate(cfg)
    warned = [r.getMessage() for r in caplog.records if r.name == "ecg_lab.app.checks"]
    assert len(warned) == 1 and warned[0].startswith("data.analytic differs")
