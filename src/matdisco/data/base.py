"""Shared types of the data sources: :class:`SourceResult` and :class:`DataSourceError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from matdisco.store import ENTRY_COLUMNS, StructureArrays

__all__ = ["DataSourceError", "SourceResult", "REJECTED_COLUMNS", "empty_entries", "empty_rejected"]

#: columns of :attr:`SourceResult.rejected`
REJECTED_COLUMNS: tuple[str, ...] = ("file", "reason")

_DTYPES = {"str": object, "int": np.int64, "float": np.float64, "bool": bool}


class DataSourceError(RuntimeError):
    """A data source cannot deliver (missing credentials, HTTP failure, unusable cache).

    The message is one line meant for the user; it never contains credentials.
    """


def empty_entries() -> pd.DataFrame:
    """An entry table with the :data:`matdisco.store.ENTRY_COLUMNS` and no rows."""
    return pd.DataFrame(
        {c: pd.Series([], dtype=_DTYPES[kind]) for c, (kind, _) in ENTRY_COLUMNS.items()}
    )


def empty_rejected() -> pd.DataFrame:
    """A rejected table (file, reason) with no rows."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in REJECTED_COLUMNS})


@dataclass
class SourceResult:
    """What a data source delivers.

    Attributes:
        entries: one row per accepted entry, columns in :data:`matdisco.store.ENTRY_COLUMNS`
            order.
        structures: the accepted entries' ordered structures, row-aligned with ``entries``.
        rejected: one row per rejected input (columns ``file``, ``reason``); ``reason`` starts
            with a short category (e.g. ``"partial_occupancy: ..."``).
        provenance: JSON-serialisable description of where the data came from.
        labels: formula-level labels (formula, e_above_hull, source) when the source has
            them; None means "use the bundled labels".
    """

    entries: pd.DataFrame
    structures: StructureArrays
    rejected: pd.DataFrame = field(default_factory=empty_rejected)
    provenance: dict[str, Any] = field(default_factory=dict)
    labels: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if len(self.entries) != len(self.structures):
            raise ValueError(f"{len(self.entries)} entries but {len(self.structures)} structures")

    def __len__(self) -> int:
        return len(self.entries)
