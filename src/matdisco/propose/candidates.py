"""Candidate compositions of the target space: enumeration, charge balance, nearest known
compounds (ElMD)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from matdisco.core.composition import elmd_matrix, normalize_formula, oxidation_state_guess
from matdisco.recommender.space import ratio_grid

__all__ = ["charge_balanced_candidates", "enumerate_compositions", "nearest_known"]


def enumerate_compositions(elements: Sequence[str], max_atoms: int) -> list[dict[str, int]]:
    """Every reduced integer composition with all ``elements`` present and <= ``max_atoms`` atoms.

    Args:
        elements: element symbols (order kept in the returned dicts).
        max_atoms: largest number of atoms per (reduced) formula unit.

    Returns:
        Compositions as ``{element: amount}`` with greatest common divisor 1, sorted by
        number of atoms then amounts.
    """
    grid = ratio_grid(int(max_atoms), len(elements))
    return [dict(zip(elements, (int(x) for x in row), strict=True)) for row in grid]


def _format_states(states: Mapping[str, float]) -> str:
    parts = []
    for el, v in states.items():
        txt = f"{v:+.2f}".rstrip("0").rstrip(".")
        parts.append(f"{el}:{txt}")
    return ";".join(parts)


def charge_balanced_candidates(
    elements: Sequence[str], max_atoms: int, windows: Mapping[str, Sequence[int]] | None = None
) -> tuple[pd.DataFrame, int]:
    """Enumerate the target compositions and keep the charge-balanced ones.

    Returns:
        ``(table, n_enumerated)``; table columns formula (pymatgen reduced formula), composition
        (``"Mg1 Mn2 O4"``), n_atoms, oxidation_states (``"Mg:+2;Mn:+3;O:-2"``, average per element).
    """
    comps = enumerate_compositions(elements, max_atoms)
    rows = []
    for comp in comps:
        states = oxidation_state_guess(comp, windows)
        if states is None:
            continue
        rows.append(
            {
                "formula": normalize_formula(comp),
                "composition": " ".join(f"{el}{n}" for el, n in comp.items()),
                "n_atoms": int(sum(comp.values())),
                "oxidation_states": _format_states({el: states[el] for el in comp}),
            }
        )
    cols = ["formula", "composition", "n_atoms", "oxidation_states"]
    return pd.DataFrame(rows, columns=cols), len(comps)


def nearest_known(formulas: Sequence[str], known: Sequence[str], n: int = 3) -> list[str]:
    """The ``n`` nearest known compounds of each formula by ElMD (mod_petti).

    Distances are recomputed with the ElMD package's own feature vectors and EMD function
    (``simple_emd``, run as plain Python) for the reported neighbours. A known
    compound with the same composition as the query (distance 0) is not listed.

    Returns:
        One string per formula: ``"formula:distance;..."`` (distances with 3 decimals).
    """
    from ElMD import ElMD
    from ElMD.ElMD import simple_emd

    emd = getattr(simple_emd, "py_func", simple_emd)  # plain Python: no numba compilation
    if not len(formulas):
        return []
    known = list(dict.fromkeys(known))
    if not known or n <= 0:
        return [""] * len(formulas)
    dist = elmd_matrix(list(formulas), known)
    out = []
    for i, f in enumerate(formulas):
        d = dist[i]
        ok = np.flatnonzero(~np.isnan(d) & (d > 1e-9))
        picks = ok[np.lexsort((np.asarray(known, dtype=object)[ok].astype(str), d[ok]))][:n]
        parts = []
        for j in picks:
            try:
                a, b = ElMD(f, metric="mod_petti"), ElMD(known[j], metric="mod_petti")
                value = float(emd(a.feature_vector, b.feature_vector))
            except Exception:  # noqa: BLE001 - fall back to the vectorised value
                value = float(d[j])
            parts.append(f"{known[j]}:{value:.3f}")
        out.append(";".join(parts))
    return out
