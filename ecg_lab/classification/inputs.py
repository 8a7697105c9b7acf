"""Per-recording network inputs joined to a dataset's items by their record index."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class RecordInputs(Dataset):
    """``base``'s items ``(x, y, record[, inputs])`` as ``(x, y, record, inputs)``, ``inputs`` holding
    ``tables[name][record]`` for each named table (rows indexed by record index) besides any dict the
    base item already carries. Other attributes (``labels``, ``class_counts``, ...) are the base's."""

    def __init__(self, base: Dataset, tables: dict[str, torch.Tensor]) -> None:
        self.base = base
        self.tables = tables

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any, Any, dict[str, torch.Tensor]]:
        x, y, record, *rest = self.base[i]
        inputs = dict(rest[0]) if rest else {}
        inputs.update({name: table[int(record)] for name, table in self.tables.items()})
        return x, y, record, inputs

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "tables") or name.startswith("__"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.base, name)
