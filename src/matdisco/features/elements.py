"""Element property table of the featuriser (bundled Magpie properties + an ElMD scale)."""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.core.composition import (
    ELEMENT_SYMBOLS,
    common_oxidation_states,
)

__all__ = ["SYMBOLS", "MAGPIE_PROPERTIES", "STATS", "ElementTable"]

log = logging.getLogger("matdisco.features")

#: element symbols by atomic number (index 0 = Z 1)
SYMBOLS: tuple[str, ...] = ELEMENT_SYMBOLS
_Z = {s: i + 1 for i, s in enumerate(SYMBOLS)}

#: the Magpie element properties used (columns of the bundled table)
MAGPIE_PROPERTIES: tuple[str, ...] = (
    "Number",
    "MendeleevNumber",
    "AtomicWeight",
    "MeltingT",
    "Column",
    "Row",
    "CovalentRadius",
    "Electronegativity",
    "NsValence",
    "NpValence",
    "NdValence",
    "NfValence",
    "NValence",
    "NsUnfilled",
    "NpUnfilled",
    "NdUnfilled",
    "NfUnfilled",
    "NUnfilled",
    "GSvolume_pa",
    "GSbandgap",
    "GSmagmom",
    "SpaceGroupNumber",
)
STATS: tuple[str, ...] = ("mean", "avg_dev", "minimum", "maximum", "range", "mode")


# --------------------------------------------------------------------------------------
# element table
# --------------------------------------------------------------------------------------


@dataclass
class ElementTable:
    """Element properties, one row per element with data.

    Attributes:
        symbols: element symbols (rows).
        properties: property names (columns).
        values: (n_elements, n_properties) float array.
        oxidation_states: common oxidation states per symbol (pymatgen), for charge balance.
    """

    symbols: list[str]
    properties: list[str]
    values: np.ndarray
    oxidation_states: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def column(self, name: str) -> np.ndarray:
        """Values of one property for every element."""
        return self.values[:, self.properties.index(name)]

    @classmethod
    def from_files(
        cls,
        magpie_table: str | Path,
        elmd_table: str | Path | None = None,
        elmd_scale: str = "mod_petti",
    ) -> ElementTable:
        """Read the bundled Magpie table (csv) and optionally one ElMD scale (json[.gz]).

        Args:
            magpie_table: CSV with an ``element`` column and the Magpie properties.
            elmd_table: JSON (optionally gzipped) mapping scale -> {element: value}; the
                scale ``elmd_scale`` becomes one more property named ``elmd_<scale>``.
            elmd_scale: which ElMD scale to add (a scalar scale such as mod_petti).

        Returns:
            The table (elements without a value on the ElMD scale are dropped).
        """
        df = pd.read_csv(magpie_table, keep_default_na=False, na_values=[""])
        missing = [p for p in MAGPIE_PROPERTIES if p not in df.columns]
        if missing:
            raise ValueError(f"{magpie_table}: Magpie columns missing: {missing}")
        df = df.set_index("element")[list(MAGPIE_PROPERTIES)].astype(float)
        if elmd_table is not None:
            opener = gzip.open if str(elmd_table).endswith(".gz") else open
            with opener(elmd_table, "rt", encoding="utf-8") as fh:
                scales = json.load(fh)
            if elmd_scale not in scales:
                raise ValueError(
                    f"{elmd_table}: no ElMD scale {elmd_scale!r} (have {sorted(scales)})"
                )
            scale = scales[elmd_scale]
            if not all(isinstance(v, int | float) for v in scale.values()):
                raise ValueError(f"ElMD scale {elmd_scale!r} is not scalar; pick e.g. mod_petti")
            df[f"elmd_{elmd_scale}"] = pd.Series({k: float(v) for k, v in scale.items()})
            dropped = df.index[df[f"elmd_{elmd_scale}"].isna()].tolist()
            if dropped:
                log.warning("elements without an ElMD %s value dropped: %s", elmd_scale, dropped)
            df = df.dropna(subset=[f"elmd_{elmd_scale}"])
        unknown = [s for s in df.index if s not in _Z]
        if unknown:
            raise ValueError(f"{magpie_table}: unknown element symbols {unknown}")
        symbols = list(df.index)
        return cls(
            symbols,
            list(df.columns),
            df.to_numpy(dtype=np.float64),
            _oxidation_states(tuple(symbols)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain (picklable, JSON-able) form."""
        return {
            "symbols": list(self.symbols),
            "properties": list(self.properties),
            "values": self.values.tolist(),
            "oxidation_states": {k: list(v) for k, v in self.oxidation_states.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElementTable:
        """Inverse of :meth:`to_dict`."""
        return cls(
            list(d["symbols"]),
            list(d["properties"]),
            np.asarray(d["values"], float),
            dict(d["oxidation_states"]),
        )


def _oxidation_states(symbols: tuple[str, ...]) -> dict[str, list[int]]:
    """pymatgen's common oxidation states ([0] for elements without any)."""
    return {s: list(common_oxidation_states(s)) for s in symbols}
