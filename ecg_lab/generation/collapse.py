"""When a VAE has collapsed, and the checkpoint metric that keeps a collapsed epoch from being chosen.

A VAE has collapsed when its posterior carries almost nothing about the input: its KL is below
``min_kl`` nats, or fewer than ``min_active_units`` latent dimensions are active (Burda et al. 2016: a
dimension whose posterior mean varies over the windows with variance above 0.01; unlike the KL, this
does not count a posterior that is merely kept wide, e.g. by ``model.net.min_logvar``); or when its
reconstructions have lost the beats (``rpeak_recall`` below ``min_rpeak_recall``). ``val/loss`` rewards a
closed posterior (it costs no KL), so checkpoints follow ``val/guarded_loss``: ``val/loss`` plus
``penalty`` in a collapsed epoch, which chooses a collapsed epoch only when every epoch collapsed, and the
run then says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KEY = "model.collapse"
ACTIVE_VARIANCE = 0.01  # Burda et al.'s threshold on Var_x(E[z_d | x])

#: what to try when a run collapsed, appended to its warnings
REMEDY = (
    "lower loss.beta.beta_max, lengthen loss.beta.warmup_fraction, set loss.free_bits (e.g. 0.25), or "
    "train longer (see README, Generation)"
)


def active_units(mu: np.ndarray, threshold: float = ACTIVE_VARIANCE) -> int:
    """The number of latent dimensions whose posterior mean ``mu`` ``(windows, latent_dim)`` varies over
    the windows with variance above ``threshold``; 0 for fewer than 2 windows."""
    m = np.atleast_2d(np.asarray(mu, dtype=np.float64))
    return int(np.sum(m.var(axis=0) > threshold)) if len(m) > 1 else 0


@dataclass(frozen=True)
class CollapseCheck:
    """Thresholds below which a VAE counts as collapsed, and the checkpoint metric's penalty."""

    min_kl: float = 2.0  # nats, summed over latent dims, mean over windows
    min_active_units: int = 1
    min_rpeak_recall: float = 0.2
    penalty: float = 1.0  # added to val/loss in a collapsed epoch (val/guarded_loss)

    def __post_init__(self) -> None:
        for key in ("min_kl", "min_active_units", "min_rpeak_recall", "penalty"):
            value = float(getattr(self, key))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{KEY}.{key}={value:g} must be a finite number >= 0 (0: that check is off)")
        object.__setattr__(self, "min_active_units", int(self.min_active_units))

    def reasons(self, kl: float, rpeak_recall: float, active: int) -> list[str]:
        """What is collapsed (empty: nothing); a nan value is not judged."""
        out = []
        if kl < self.min_kl:
            out.append(
                f"KL {kl:.3g} nats < {KEY}.min_kl={self.min_kl:g} (the posterior carries almost nothing "
                "about the input)"
            )
        if active < self.min_active_units:
            out.append(
                f"{active} active latent dimension(s) < {KEY}.min_active_units={self.min_active_units} (no "
                "latent mean varies with the input)"
            )
        if rpeak_recall < self.min_rpeak_recall:
            out.append(
                f"rpeak_recall {rpeak_recall:.3g} < {KEY}.min_rpeak_recall={self.min_rpeak_recall:g} "
                "(the reconstructions have lost the beats)"
            )
        return out

    def guarded(self, loss: float, collapsed: bool) -> float:
        """``val/guarded_loss``: ``loss``, plus ``penalty`` when the epoch collapsed."""
        return float(loss) + (self.penalty if collapsed else 0.0)
