"""The Fréchet distance between real and generated windows on the features of a network this framework
trained (the FID of image generation, Heusel et al. 2017, with an ECG classifier in place of Inception).

The features are ``CRNN.embed`` (the readout the classifier's head sees) of a classifier checkpoint
written by ``python -m ecg_lab.train`` (``model.fidelity.feature_ckpt``) whose windows were sampled at the
generator's rate (``data.preprocess.resample_to`` of the classifier's run, or its ``data.fs``). Each
window is z-scored on its own, as the classifier's records were. Without a checkpoint there is no
distance: a feature network trained on the fly would give a number with no fixed meaning, not comparable
between runs, which is what a Fréchet distance is for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ecg_lab.errors import ConfigError, UserError

KEY = "model.fidelity.feature_ckpt"
Features = Callable[[np.ndarray], np.ndarray]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``|mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^½)`` between the Gaussians fitted to the rows of
    ``a`` and ``b`` (features × windows); nan when a set has fewer than 2 rows."""
    from scipy.linalg import sqrtm

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = sqrtm(cov_a @ cov_b)
    distance = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2.0 * np.real(root))
    return float(max(distance, 0.0))


def zscore_windows(windows: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (a flat row stays zero)."""
    x = np.atleast_2d(np.asarray(windows, dtype=np.float32))
    centred = x - x.mean(axis=1, keepdims=True)
    return centred / np.maximum(centred.std(axis=1, keepdims=True), 1e-8)


def embedder(net: torch.nn.Module, batch_size: int = 256) -> Features:
    """Windows ``(n, samples)`` → ``net.embed`` of each z-scored window, ``(n, features)``, on the CPU."""

    def features(windows: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(zscore_windows(windows))[:, None]
        with torch.no_grad():
            return torch.cat([net.embed(chunk) for chunk in x.split(batch_size)]).double().numpy()

    return features


def _checked_rate(stored_data: dict, fs: float, path: str) -> None:
    from ecg_lab.app.config import window_rate

    preprocess = stored_data.get("preprocess") or {}
    rate = window_rate(stored_data.get("fs", 0.0), preprocess.get("resample_to"))
    if abs(rate - float(fs)) > 1e-6:
        raise ConfigError(
            f"{KEY}={path}: its classifier saw windows at {rate:g} Hz but the generator's data.fs is {fs:g}; "
            f"train the feature classifier with data.preprocess.resample_to={fs:g}"
        )


def load_features(path: str | Path, fs: float) -> Features:
    """The feature function of the classifier checkpoint at ``path``; one line naming ``KEY`` when the file
    is missing, unreadable, not a classifier's, or at another rate than ``fs``."""
    from ecg_lab.app.checkpoints import load_checkpoint, model_from_loaded
    from ecg_lab.app.checks import task_of

    try:
        ckpt, stored = load_checkpoint(path)
    except UserError as err:  # its message names ckpt_path: name this key instead
        raise type(err)(str(err).replace("ckpt_path=", f"{KEY}=", 1)) from None
    if task_of(stored.model) != "classification":
        raise ConfigError(
            f"{KEY}={path} holds model={stored.get('model_name')}, not a classifier; give a checkpoint of "
            f"python -m ecg_lab.train model=cnn_lstm (its CRNN.embed gives the features)"
        )
    _checked_rate(stored.get("data") or {}, fs, str(path))
    with torch.random.fork_rng(devices=[]):  # building it draws initial weights: leave the run's stream alone
        net = model_from_loaded(ckpt, stored).net.cpu().eval()
    if not hasattr(net, "embed"):
        raise ConfigError(f"{KEY}={path}: its network has no embed(); give a CRNN classifier's checkpoint")
    return embedder(net)
