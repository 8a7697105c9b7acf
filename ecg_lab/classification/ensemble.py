"""Ensembles of classifier checkpoints (``python -m ecg_lab.eval ckpt_path=[a.ckpt,b.ckpt]``).

The members' networks run side by side and their softmax probabilities are averaged window by window
(:class:`MeanProbabilities`); the ensemble is an ordinary :class:`ECGClassifier` around them, so the
window metrics come from the averaged window probabilities and a recording's probabilities are the mean
over its windows as usual (which, the mean being linear, equals the mean of the members' recording
probabilities). Members must agree on the classes, on the data's signal-shaping settings and, when the
test split is their own, on its test records (:func:`check_members_agree`). Their calibrations are not
mixed: the ensemble scores recordings uncalibrated (:func:`ensemble_classifier` warns).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ecg_lab.app.checks import SIGNAL_KEYS, signal_setting
from ecg_lab.classification.module import ECGClassifier
from ecg_lab.data.splits import SplitManifest
from ecg_lab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One checkpoint of an ensemble: its path, the loaded checkpoint and its stored run config."""

    path: str
    ckpt: dict[str, Any]
    stored: DictConfig


class MeanProbabilities(nn.Module):
    """The members' networks in one: ``forward`` returns the log of their mean softmax probabilities,
    so a softmax over its output gives the averaged probabilities back (and cross-entropy on it is
    the ensemble's negative log-likelihood)."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(net(x, **inputs).float(), dim=1) for net in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def ensemble_classifier(models: Sequence[ECGClassifier], paths: Sequence[str]) -> ECGClassifier:
    """A classifier averaging the probabilities of ``models`` (loaded from ``paths``), in eval mode,
    uncalibrated; its loss (reported only) is the first member's."""
    calibrated = [p for p, m in zip(paths, models, strict=True) if m.calibration]
    if calibrated:
        log.warning(
            "ignoring the calibration stored in %s: members' calibrations are not averaged; the "
            "ensemble's recording scores are uncalibrated",
            ", ".join(calibrated),
        )
    first = models[0]
    ensemble = ECGClassifier(
        net=MeanProbabilities([m.net for m in models]),
        optimizer=torch.optim.SGD,  # never used: an ensemble is only tested
        loss=first.loss,
        classes=first.classes,
    )
    return ensemble.eval()


# -- checks: what the members must share -------------------------------------------------------------
def check_members_agree(members: Sequence[Member], manifests: Sequence[SplitManifest] | None) -> None:
    """ConfigError naming two members and what differs: classes, signal-shaping data settings, or
    (``manifests``: each member's stored split, when the test split is their own) test records."""
    first = members[0]
    for other in members[1:]:
        _check_same(first, other, "classes", _classes(first), _classes(other))
        for key in SIGNAL_KEYS:
            ours, theirs = _data_value(first, key), _data_value(other, key)
            _check_same(first, other, f"data.{key}", ours, theirs)
    if manifests is not None:
        check_same_test_records(members, manifests)


def check_same_test_records(members: Sequence[Member], manifests: Sequence[SplitManifest]) -> None:
    """ConfigError when two members' stored split manifests test different records (k-fold folds)."""
    tested = [_test_records(m) for m in manifests]
    for member, records in zip(members[1:], tested[1:], strict=True):
        if records != tested[0]:
            raise ConfigError(
                f"ckpt_path members {members[0].path} and {member.path} were tested on different records "
                f"({len(tested[0])} vs {len(records)} test records, {len(records & tested[0])} shared; "
                "k-fold folds each test others): pass data.manifest=<one split.csv> or data.split=all "
                "to test every member on the same records"
            )


def _test_records(manifest: SplitManifest) -> set[tuple[str, str]]:
    """``(source, record)`` of every test record of ``manifest``."""
    rows = zip(manifest.sources, manifest.records, manifest.splits, strict=True)
    return {(source, record) for source, record, split in rows if split == "test"}


def _check_same(first: Member, other: Member, what: str, ours: Any, theirs: Any) -> None:
    if ours != theirs:
        raise ConfigError(
            f"ckpt_path members {first.path} and {other.path} differ in {what} ({ours} vs {theirs}); "
            "an ensemble needs members trained alike, e.g. the runs of one seed sweep"
        )


def _classes(member: Member) -> list[str] | None:
    """The class names a member was trained on."""
    classes = (member.ckpt.get("ecg_lab") or {}).get("classes")
    if classes is None:
        classes = OmegaConf.select(member.stored, "model.classes", default=None)
    return [str(c) for c in classes] if classes is not None else None


def _data_value(member: Member, key: str) -> Any:
    """A stored data setting as plain values (None when absent)."""
    value = OmegaConf.select(member.stored, f"data.{key}", default=None)
    return signal_setting(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
