"""Dedupe entries of one source: same reduced formula and matching structure.

Within each reduced-formula group, structures are compared with the shared matcher of
:mod:`matdisco.core.matching` (pymatgen ``StructureMatcher``, primitive cells, volume scaled,
space-group pre-filter at ``symprec``, no fingerprint pre-filter). Of each set of matching entries
the first by (is_experimental desc, formation energy asc, id) is kept and lists the ids of the
others in ``duplicate_ids``; the rest are dropped.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from matdisco.core.matching import MatchSettings, dedupe
from matdisco.store import StructureArrays

__all__ = ["dedupe_entries", "find_duplicate_groups", "match_settings", "merge_duplicates"]

log = logging.getLogger("matdisco.data")


def match_settings(
    ltol: float, stol: float, angle_tol: float, symprec: float | None
) -> MatchSettings:
    """The data stage's comparison: space-group pre-filter at ``symprec``, no fingerprints."""
    return MatchSettings(
        ltol=ltol, stol=stol, angle_tol=angle_tol, fingerprint_tol=None, symprec=symprec or None
    )


def _preference_order(entries: pd.DataFrame) -> pd.DataFrame:
    """Entries sorted by formula, then experimental first, lowest formation energy, id."""
    return entries.assign(
        _exp=-entries["is_experimental"].astype(int),
        _ef=entries["formation_energy_per_atom"].fillna(np.inf),
    ).sort_values(["formula", "_exp", "_ef", "id"], kind="stable")


def find_duplicate_groups(
    entries: pd.DataFrame,
    structures: StructureArrays,
    *,
    ltol: float = 0.2,
    stol: float = 0.3,
    angle_tol: float = 5.0,
    symprec: float | None = 0.1,
    workers: int = 1,
) -> np.ndarray:
    """Label each entry with a duplicate-group id (the expensive part of dedupe).

    Args:
        entries: entry table row-aligned with ``structures`` (needs formula, id,
            is_experimental, formation_energy_per_atom).
        structures: the entries' structures.
        ltol: StructureMatcher fractional length tolerance.
        stol: StructureMatcher site tolerance.
        angle_tol: StructureMatcher angle tolerance in degrees.
        symprec: if set, duplicates must also have the same space group at this spglib
            tolerance (pre-filter; a structure on which spglib fails is compared with every
            same-size one, see :mod:`matdisco.core.matching`); None compares every
            same-size pair.
        workers: processes comparing formula groups in parallel.

    Returns:
        int array, one group id per row; rows sharing an id are duplicates. The id is the
        row position of the group's preferred entry.
    """
    entries = entries.reset_index(drop=True)
    order = _preference_order(entries).index.to_numpy()
    clusters = dedupe(
        structures.take(order),
        match_settings(ltol, stol, angle_tol, symprec),
        formulas=entries["formula"].astype(str).to_numpy()[order].tolist(),
        workers=workers,
    )
    # cluster label: row position of the group's preferred (first in preference order) entry
    group_of = np.empty(len(entries), dtype=np.int64)
    group_of[order] = order[clusters.rep]
    return group_of


def merge_duplicates(
    entries: pd.DataFrame, structures: StructureArrays, group_of: np.ndarray
) -> tuple[pd.DataFrame, StructureArrays, dict]:
    """Keep the preferred entry of each duplicate group; it lists the others' ids.

    The preferred entry is the first by (experimental first, lowest formation energy, id).
    """
    entries = entries.reset_index(drop=True)
    order = _preference_order(entries).index.to_numpy()
    rank = np.empty(len(entries), dtype=np.int64)
    rank[order] = np.arange(len(entries))
    groups: dict[int, list[int]] = {}
    for i in order:  # preference order, so each group's list starts with its keeper
        groups.setdefault(int(group_of[i]), []).append(int(i))
    keep = np.array(sorted(members[0] for members in groups.values()), dtype=np.int64)
    dup_ids = {
        members[0]: [entries.at[m, "id"] for m in members[1:]] for members in groups.values()
    }
    out = entries.iloc[keep].copy()
    merged = []
    for i in keep:
        prior = [x for x in str(entries.at[i, "duplicate_ids"] or "").split(";") if x]
        merged.append(";".join(prior + dup_ids[int(i)]))
    out["duplicate_ids"] = merged
    summary = {
        "entries_in": len(entries),
        "entries_out": len(out),
        "duplicates_merged": int(len(entries) - len(out)),
    }
    return out.reset_index(drop=True), structures.take(keep), summary


def dedupe_entries(
    entries: pd.DataFrame,
    structures: StructureArrays,
    *,
    ltol: float = 0.2,
    stol: float = 0.3,
    angle_tol: float = 5.0,
    symprec: float | None = 0.1,
    workers: int = 1,
    group_of: np.ndarray | None = None,
) -> tuple[pd.DataFrame, StructureArrays, dict]:
    """Merge duplicate entries (same reduced formula + StructureMatcher match).

    Args:
        entries: entry table row-aligned with ``structures``.
        structures: the entries' structures.
        ltol: StructureMatcher fractional length tolerance.
        stol: StructureMatcher site tolerance.
        angle_tol: StructureMatcher angle tolerance in degrees.
        symprec: if set, duplicates must also have the same space group at this spglib
            tolerance (pre-filter; a structure on which spglib fails is compared with every
            same-size one, see :mod:`matdisco.core.matching`); None compares every
            same-size pair.
        workers: processes comparing formula groups in parallel.
        group_of: precomputed duplicate-group ids (from :func:`find_duplicate_groups` with
            the same tolerances); skips the comparisons.

    Returns:
        (kept entries, their structures, summary dict with counts).
    """
    entries = entries.reset_index(drop=True)
    precomputed = group_of is not None
    if group_of is None:
        group_of = find_duplicate_groups(
            entries,
            structures,
            ltol=ltol,
            stol=stol,
            angle_tol=angle_tol,
            symprec=symprec,
            workers=workers,
        )
    out, kept, summary = merge_duplicates(entries, structures, np.asarray(group_of))
    summary.update(
        {
            "matcher": {"ltol": ltol, "stol": stol, "angle_tol": angle_tol},
            "spacegroup_prefilter_symprec": symprec,
            "groups_precomputed": precomputed,
        }
    )
    log.info(
        "dedupe: %(entries_in)d -> %(entries_out)d entries (%(duplicates_merged)d merged)", summary
    )
    return out, kept, summary
