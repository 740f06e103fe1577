"""The bundled offline source: MP (2018, CGCNN set) structures and formula-level labels.

The resource files are built by ``scripts/build_resources.py`` (see resources/README.md).

Energy above hull of an entry. The bundled structure set has formation energies but no
E_hull; the formula-level labels (CrabNet ``mp_e_hull``) give MP's E_hull of the lowest
polymorph of each formula. For an entry with formula f we estimate

    e_above_hull = label(f) + (E_f(entry) - min E_f over the bundled polymorphs of f)

which is exact when the lowest bundled polymorph is MP's ground state and both tables used
the same MP energies. The column ``e_above_hull_method`` says so on every such row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from matdisco.data.base import SourceResult
from matdisco.store import read_attrs, read_entries, read_structure_arrays

__all__ = ["load_bundled", "load_formula_labels", "reduce_formulas"]

log = logging.getLogger("matdisco.data")

EHULL_METHOD = (
    "MP formula-level E_hull (CrabNet mp_e_hull) + E_f offset from the bundled lowest polymorph"
)


def reduce_formulas(formulas: pd.Series) -> pd.Series:
    """Map formulas to pymatgen reduced formulas; unparsable ones become ''."""
    from pymatgen.core import Composition

    cache: dict[str, str] = {}

    def one(f: str) -> str:
        if f not in cache:
            try:
                cache[f] = Composition(f).reduced_formula
            except Exception:  # noqa: BLE001 - unparsable formula
                cache[f] = ""
        return cache[f]

    return formulas.astype(str).map(one)


def load_formula_labels(path: str | Path) -> pd.DataFrame:
    """Formula-level MP E_hull labels: columns formula (reduced), e_above_hull, source.

    Formulas that reduce to the same reduced formula are merged by taking the minimum.
    """
    # keep_default_na=False: the formula "NaN" (sodium nitride) is not a missing value
    raw = pd.read_csv(path, keep_default_na=False)
    raw["e_above_hull"] = pd.to_numeric(raw["e_above_hull"], errors="coerce")
    raw = raw[raw["e_above_hull"].notna()]
    raw["formula"] = reduce_formulas(raw["formula"])
    bad = (raw["formula"] == "").sum()
    if bad:
        log.warning("%d label formulas could not be parsed and were dropped", bad)
    raw = raw[raw["formula"] != ""]
    lab = raw.groupby("formula", sort=True, as_index=False)["e_above_hull"].min()
    lab["source"] = "crabnet_mp_e_hull"
    return lab


def _chemsys_keep(chemsys: pd.Series, allowed: list[str]) -> np.ndarray:
    allowed_sets = [frozenset(c.split("-")) for c in allowed]
    sets = chemsys.map(lambda c: frozenset(c.split("-")))
    return sets.map(lambda s: any(s <= a for a in allowed_sets)).to_numpy(dtype=bool)


def load_bundled(
    structures: str | Path, labels: str | Path, chemsys_filter: list[str] | None = None
) -> SourceResult:
    """Load the bundled structure set, attach E_hull estimates, optionally filter chemistries.

    Args:
        structures: resource HDF5 (store format) of the bundled MP structures.
        labels: csv.gz of formula-level MP E_hull labels.
        chemsys_filter: keep only these chemical systems and their subsystems; None keeps all.

    Returns:
        A SourceResult; ``labels`` of the store are returned in ``provenance['labels']``.
    """
    entries = read_entries(structures)
    attrs = read_attrs(structures)
    keep = np.ones(len(entries), dtype=bool)
    if chemsys_filter:
        keep = _chemsys_keep(entries["chemsys"], chemsys_filter)
    index = np.flatnonzero(keep)
    entries = entries.iloc[index].reset_index(drop=True)
    arrays = read_structure_arrays(structures, index)

    lab = load_formula_labels(labels)
    label_of = pd.Series(lab["e_above_hull"].to_numpy(), index=lab["formula"])
    ef = entries["formation_energy_per_atom"]
    ef_min = ef.groupby(entries["formula"]).transform("min")
    ehull = entries["formula"].map(label_of) + (ef - ef_min)
    entries["e_above_hull"] = ehull.astype(float)
    entries["e_above_hull_method"] = np.where(ehull.notna(), EHULL_METHOD, "")
    log.info(
        "bundled: %d entries (%d after filter), %d with E_hull estimate, %d labels",
        len(keep),
        len(entries),
        int(ehull.notna().sum()),
        len(lab),
    )
    provenance = {
        "resource": str(structures),
        "resource_provenance": {
            k: v for k, v in attrs["provenance"].items() if not k.endswith("_ids")
        },
        "labels_file": str(labels),
        "chemsys_filter": chemsys_filter,
        "e_above_hull_method": EHULL_METHOD,
        # duplicate groups shipped with the resource (column dedupe_group) and their tolerances
        "dedupe_precomputed": attrs["provenance"].get("dedupe_precomputed"),
    }
    rejected = pd.DataFrame({"file": [], "reason": []})
    return SourceResult(
        entries=entries, structures=arrays, rejected=rejected, provenance=provenance, labels=lab
    )
