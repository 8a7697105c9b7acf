"""A progress bar in an interactive terminal, plain lines otherwise."""

from __future__ import annotations

import io
import sys

import pytest
from pytorch_lightning.callbacks import TQDMProgressBar

from ecg_lab.callbacks.progress import LineProgress, auto_progress_bar


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_tqdm_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", FakeTTY())
    assert isinstance(auto_progress_bar(), TQDMProgressBar)


def test_pipe_or_file_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(auto_progress_bar(), LineProgress)
    assert isinstance(auto_progress_bar(interactive=False), LineProgress)
