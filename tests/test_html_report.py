"""``report.html``: one per run (classifier, VAE, eval) and one per sweep, self-contained, rendered in
headless Chromium where it is installed."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

from ecg_lab.app.html_report import REPORT, ReportSettings, worst_recordings, write_run_report
from ecg_lab.errors import ConfigError
from ecg_lab.eval import evaluate
from ecg_lab.report import main as report_main
from ecg_lab.train import train
from tests.conftest import SMALL_SYNTHETIC, compose_config
from tests.test_calibration import SHORT  # a 2-epoch classifier run
from tests.test_generation import SHORT as VAE_SHORT
from tests.test_generation import VAE
from tests.test_report import make_run

# a URL the page would fetch: any src or href that is not a data: URI or a relative path
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
IMAGES = re.compile(r"""<img[^>]*\bsrc="([^"]*)\"""")


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', page)


def assert_self_contained(page: str) -> None:
    """No URL to fetch, one inline style, no script or stylesheet link; every image a decodable PNG."""
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert page.count("<style>") == 1 and "<script" not in page and "<link" not in page
    for src in IMAGES.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


# -- runs ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A short classifier training run whose page shows its 2 worst test recordings, explained."""
    out = tmp_path_factory.mktemp("classifier")
    train(compose_config("train", [*SMALL_SYNTHETIC, *SHORT, "report.worst=2"], out, cache_dir))
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A short LSTM-VAE training run."""
    out = tmp_path_factory.mktemp("vae")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose_config("train", [*VAE, *VAE_SHORT], out, cache_dir))
    finally:
        torch.set_num_threads(threads)
    return out


def test_a_classifier_run_writes_its_page(classifier_run: Path) -> None:
    page = (classifier_run / REPORT).read_text()
    assert_self_contained(page)
    ids = section_ids(page)
    for section in ("run", "metrics", "training-curves", "confusion-matrices", "worst-recordings", "config"):
        assert section in ids and f'href="#{section}"' in page, section  # and in the table of contents
    metrics = json.loads((classifier_run / "test_metrics.json").read_text())
    assert "<th>status</th><td>completed</td>" in page  # written when the run ended
    # the per-class table: each class's F1 with its bootstrap interval, as test_metrics.json has them
    lo, hi = metrics["F1_A_ci"]
    assert f"{metrics['F1_A']:.4f} [{lo:.4f}, {hi:.4f}]" in page
    assert f"{metrics['official_f1']:.4f} [" in page
    # the 2 most confidently wrong test recordings, each with its explanation figure
    worst = worst_recordings(classifier_run / "predictions.csv", 2)
    assert len(worst) == 2
    for row in worst:
        caption = f"{row['record']}: true {row['label']}, predicted {row['predicted']}"
        assert f"<figcaption>{caption}" in page
    n_png = len(list(classifier_run.glob("*.png")))
    assert len(IMAGES.findall(page)) == n_png + 2  # every figure of the folder, and the 2 explanations
    assert "model_name: cnn_lstm" in page  # the resolved config, not ${hydra:...}


def test_a_vae_run_writes_its_page(vae_run: Path) -> None:
    page = (vae_run / REPORT).read_text()
    assert_self_contained(page)
    ids = section_ids(page)
    assert {"run", "metrics", "training-curves", "samples", "config"} <= set(ids)
    assert "worst-recordings" not in ids and "<h3>Per class</h3>" not in page  # no classes, no predictions
    metrics = json.loads((vae_run / "test_metrics.json").read_text())
    assert f"<td>rpeak_recall</td><td class=n>{metrics['rpeak_recall']:.4f}</td>" in page
    assert "<figcaption>reconstructions.png</figcaption>" in page
    assert "<figcaption>generated.png</figcaption>" in page


def test_an_eval_folder_gets_its_page(classifier_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    ckpt = classifier_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "trainer=cpu", "report.worst=0"], out, cache_dir))
    page = (out / REPORT).read_text()
    assert_self_contained(page)
    assert "worst-recordings" not in section_ids(page)  # report.worst=0
    assert {"run", "metrics", "confusion-matrices", "config"} <= set(section_ids(page))
    assert "<th>task</th><td>eval</td>" in page and str(ckpt.resolve()) in page


def test_bad_report_settings_are_one_line_before_any_work(tmp_path: Path, cache_dir: Path) -> None:
    for value, words in (("-1", r"report\.worst=-1 must be an int >= 0"), ("x", r"report\.worst='x'")):
        cfg = compose_config(
            "train", [*SMALL_SYNTHETIC, *SHORT, f"report.worst={value}"], tmp_path, cache_dir
        )
        with pytest.raises(ConfigError, match=words):
            train(cfg)
    assert not (tmp_path / "split.csv").exists()  # stopped before the data was read
    with pytest.raises(ConfigError, match=r"report\.dpi=0 must be an int >= 1"):
        ReportSettings(dpi=0)


def write_predictions(path: Path, rows: list[tuple[str, str, str, list[float]]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["record", "label", "predicted", "n_windows", "prob_N", "prob_A"])
        w.writerows([record, label, pred, 3, *probs] for record, label, pred, probs in rows)
    return path


def test_worst_recordings_are_the_wrong_ones_with_the_highest_probability(tmp_path: Path) -> None:
    path = write_predictions(
        tmp_path / "predictions.csv",
        [
            ("r1", "N", "A", [0.3, 0.7]),
            ("r2", "A", "N", [0.9, 0.1]),  # the most confident mistake
            ("r3", "N", "N", [0.99, 0.01]),  # right: never listed
            ("r4", "", "N", [0.95, 0.05]),  # no label: never listed
            ("r5", "A", "N", [0.6, 0.4]),
        ],
    )
    assert [r["record"] for r in worst_recordings(path, 5)] == ["r2", "r1", "r5"]
    assert [r["record"] for r in worst_recordings(path, 2)] == ["r2", "r1"]
    assert worst_recordings(path, 0) == [] and worst_recordings(tmp_path / "missing.csv", 3) == []
    # under a prior calibration the decision and its probability are the calibrated ones (as explain
    # ranks them): r1 goes first and r5 (0.6 : 0.4 x 4 for A, its label) is no longer a mistake
    prior = {"method": "prior", "values": [0.0, float(np.log(4.0))]}
    ranked = worst_recordings(path, 3, prior)
    assert [r["record"] for r in ranked] == ["r1", "r2"]
    assert ranked[0]["probability"] == pytest.approx(0.7 * 4 / (0.3 + 0.7 * 4))


def test_a_page_escapes_what_it_shows(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", model="<b>gru</b>", status="failed", error="<script>x</script>", f1=None)
    page = write_run_report(run).read_text()
    assert "<script" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>gru</b>" not in page and "No test_metrics.json" in page
    assert section_ids(page)[0] == "run" and "training-curves" not in section_ids(page)


# -- the sweep page --------------------------------------------------------------------------------------
@pytest.fixture
def sweep(tmp_path: Path, classifier_run: Path) -> Path:
    """A sweep folder: the classifier run (with its page), two fabricated runs of another configuration
    (without one) and a failed run."""
    root = tmp_path / "sweep"
    shutil.copytree(classifier_run, root / "0_model=cnn_lstm", ignore=shutil.ignore_patterns("*.ckpt"))
    (root / "0_model=cnn_lstm" / ".hydra").mkdir(exist_ok=True)
    (root / "0_model=cnn_lstm" / ".hydra" / "config.yaml").write_text("model_name: cnn_lstm\nseed: 42\n")
    make_run(root / "1_model=gru,seed=1", seed=1, f1=0.61)
    make_run(root / "2_model=gru,seed=2", seed=2, f1=0.63)
    make_run(root / "3_model=gru,seed=3", seed=3, f1=None, status="failed", error="RuntimeError: boom")
    return root


def test_the_sweep_page_holds_the_table_plots_and_links_to_each_run(sweep: Path) -> None:
    assert report_main([str(sweep)]) == 0
    page = (sweep / REPORT).read_text()
    assert (sweep / "results_table.md").is_file()
    assert_self_contained(page)
    assert section_ids(page) == ["results", "failed-runs", "plots", "runs"]
    assert "<th>configuration</th><th>runs</th><th>seeds</th>" in page and "<th>official F1</th>" in page
    assert "<td class=n>0.620 ± 0.014</td>" in page  # gru's weighted F1 over seeds 1 and 2
    assert "RuntimeError: boom" in page and len(IMAGES.findall(page)) == 2
    links = re.findall(r'<a href="([^"#]+)">', page)
    assert len(links) == 4
    for href in links:
        assert not href.startswith("/") and href.endswith(REPORT)
        assert (sweep / unquote(href)).is_file(), href  # relative to the sweep page, and there
    # the runs without a page got one; the classifier's own (with its explanations) was kept
    assert "worst-recordings" in section_ids((sweep / "0_model=cnn_lstm" / REPORT).read_text())
    failed = (sweep / "3_model=gru,seed=3" / REPORT).read_text()
    assert "<th>status</th><td>failed</td>" in failed and "RuntimeError: boom" in failed


def test_a_report_on_one_run_folder_leaves_the_run_its_page(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", f1=0.7)
    assert report_main([str(run)]) == 0
    own = (run / REPORT).read_text()  # the run's page, written first: without the sweep's plots
    assert "<h1>gru · physionet2017</h1>" in own and "results_f1.png" not in own
    page = (run / "results.html").read_text()  # the sweep page beside it
    assert '<a href="report.html">.</a>' in page and "0.700" in page
    assert "<figcaption>test weighted F1 and official F1" in page


# -- in a browser ----------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium package)"
)


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page`` with its own profile folder, no network access needed."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=True,
    )  # fmt: skip


def screenshot_colours(page: Path, tmp_path: Path) -> int:
    """How many colours a 1280×900 screenshot of ``page`` holds."""
    shot = tmp_path / f"{page.parent.name}.png"
    chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,900")
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).reshape(-1, 3)
    assert pixels.shape[0] == 1280 * 900 and pixels.std(0).max() > 0
    return len(np.unique(pixels, axis=0))


@needs_chromium
def test_chromium_renders_both_pages(sweep: Path, tmp_path: Path) -> None:
    report_main([str(sweep)])
    run_page = sweep / "0_model=cnn_lstm" / REPORT
    metrics = json.loads((run_page.parent / "test_metrics.json").read_text())
    dom = chromium(run_page, tmp_path, "--dump-dom").stdout
    assert "<th>sensitivity</th>" in dom and "<th>F1</th>" in dom and f"{metrics['F1_N']:.4f} [" in dom
    assert screenshot_colours(run_page, tmp_path) > 50  # text, tables and the figures, not a blank page
    dom = chromium(sweep / REPORT, tmp_path, "--dump-dom").stdout
    assert "<th>configuration</th>" in dom and "<th>test weighted F1</th>" in dom
    assert "0.620 ± 0.014" in dom
    assert screenshot_colours(sweep / REPORT, tmp_path) > 50
