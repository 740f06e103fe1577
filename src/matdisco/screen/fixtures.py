"""Fixture candidates for tests and for running the screen without the relax stage.

:func:`fixture_candidates` turns *known* store entries of a chemical system into a candidates
file in the relax stage's format (entry store with ``e_above_hull``, ``energy_scale``,
``status``...). Their E_hull is computed on the store's own formation energies (energy scale
``store-hull``), so nothing here is a prediction: it exercises the screening machinery on
real, known compounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["fixture_candidates"]


def fixture_candidates(
    store: str | Path,
    out: str | Path,
    elements: Sequence[str],
    *,
    max_entries: int = 40,
    max_sites: int = 40,
    seed: int = 0,
) -> int:
    """Write known entries of ``elements`` (and subsystems) as a candidates file.

    Args:
        store: an entry store with formation energies.
        out: the candidates file to write (entry-store format).
        elements: the chemical system.
        max_entries: at most this many entries (lowest store-hull E_hull first, then random).
        max_sites: skip larger cells (XRD/CIF stay quick).
        seed: random seed of the selection beyond the lowest-E_hull half.

    Returns:
        The number of candidates written.
    """
    from matdisco.relax.reference import store_hull
    from matdisco.store import read_structure_arrays, write_store

    df = store_hull(store, elements)
    df = df[(df["nelements"] >= 2) & (df["nsites"] <= max_sites)]
    df = df.sort_values(["store_hull_e_above_hull", "id"], kind="stable")
    half = df.iloc[: max_entries // 2]
    rest = df.iloc[max_entries // 2 :]
    rng = np.random.default_rng(seed)
    if len(rest):
        rest = rest.iloc[
            np.sort(rng.choice(len(rest), min(len(rest), max_entries - len(half)), replace=False))
        ]
    sel = pd.concat([half, rest]) if len(rest) else half
    arrays = read_structure_arrays(store, sel.index.to_numpy())
    out_df = pd.DataFrame(
        {
            "id": ["fixture-" + str(i) for i in sel["id"]],
            "source": "fixture",
            "formula": sel["formula"].to_numpy(),
            "composition": sel["composition"].to_numpy(),
            "chemsys": sel["chemsys"].to_numpy(),
            "nelements": sel["nelements"].to_numpy(),
            "nsites": sel["nsites"].to_numpy(),
            "formation_energy_per_atom": sel["formation_energy_per_atom"].to_numpy(),
            "e_above_hull": sel["store_hull_e_above_hull"].to_numpy(),
            "e_above_hull_method": (
                "fixture: known store entry, E_hull on the store's formation energies"
            ),
            "band_gap": np.nan,  # hidden from the screen: it must predict it
            "energy_scale": "store-hull",
            "status": "ok",
            "generator": "fixture",
            "parent": sel["id"].to_numpy(),
            "target_formula": sel["formula"].to_numpy(),
            "reference": "store formation energies",
            "decomposition": "",
            "novel_composition": False,
            "novel_structure": False,
        }
    )
    write_store(
        out,
        out_df,
        arrays,
        data_source="fixture",
        provenance={"store": str(store), "elements": list(elements)},
    )
    return len(out_df)
