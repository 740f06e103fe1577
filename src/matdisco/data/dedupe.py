"""Dedupe entries of one source: same reduced formula and matching structure.

Within each reduced-formula group, structures are compared with pymatgen's
``StructureMatcher`` (primitive cells, volume scaled). Of each set of matching entries the
first by (is_experimental desc, formation energy asc, id) is kept and lists the ids of the
others in ``duplicate_ids``; the rest are dropped.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from matdisco.store import StructureArrays

__all__ = ["dedupe_entries", "find_duplicate_groups", "merge_duplicates"]

log = logging.getLogger("matdisco.data")


def _spacegroup(structure, symprec: float | None) -> int:
    """Space-group number at a loose tolerance (0 when not requested or undetermined)."""
    if not symprec:
        return 0
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number()
    except Exception:  # noqa: BLE001 - spglib failure: put it in the catch-all bucket
        return 0


def _group(args: tuple[list, dict, float | None]) -> list[list[int]]:
    """Group matching structures of one formula; returns lists of indices into the input.

    Each structure is reduced (primitive + Niggli) once. Structures whose reduced cells have
    different numbers of sites cannot match (StructureMatcher without supercell attempts
    requires equal counts). With ``symprec`` set, structures must also share their space
    group at that tolerance to count as duplicates (a fingerprint pre-filter that keeps the
    pairwise comparisons of polymorph-rich formulas such as SiO2 affordable).
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    structures, tol, symprec = args
    matcher = StructureMatcher(**tol, primitive_cell=True, scale=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduced = [matcher._get_reduced_structure(s, True, niggli=True) for s in structures]
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(reduced):
            buckets.setdefault((len(r), _spacegroup(r, symprec)), []).append(i)
        groups: list[list[int]] = []
        for members in buckets.values():
            unmatched = list(members)
            while unmatched:
                ref = unmatched.pop(0)
                hits = [j for j in unmatched if matcher.fit(reduced[ref], reduced[j], skip_structure_reduction=True)]
                unmatched = [j for j in unmatched if j not in hits]
                groups.append([ref, *hits])
    return groups


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
            tolerance (pre-filter); None compares every same-size pair.
        workers: processes comparing formula groups in parallel.

    Returns:
        int array, one group id per row; rows sharing an id are duplicates. The id is the
        row position of the group's preferred entry.
    """
    tol = {"ltol": ltol, "stol": stol, "angle_tol": angle_tol}
    entries = entries.reset_index(drop=True)
    group_of = np.arange(len(entries), dtype=np.int64)
    formula_groups = [
        grp.index.to_list() for _, grp in _preference_order(entries).groupby("formula", sort=False) if len(grp) > 1
    ]
    jobs = [([structures.structure(i) for i in rows], tol, symprec) for rows in formula_groups]
    if workers > 1 and len(jobs) > 8:
        # largest groups first so the pool stays balanced
        by_size = sorted(range(len(jobs)), key=lambda k: -len(formula_groups[k]))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = dict(zip(by_size, pool.map(_group, [jobs[k] for k in by_size], chunksize=4), strict=True))
        clustered = [results[k] for k in range(len(jobs))]
    else:
        clustered = [_group(j) for j in jobs]
    for rows, clusters in zip(formula_groups, clustered, strict=True):
        for members in clusters:
            # positions in `rows`, which is in preference order: the smallest is preferred
            first = rows[min(members)]
            for m in members:
                group_of[rows[m]] = first
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
    dup_ids = {members[0]: [entries.at[m, "id"] for m in members[1:]] for members in groups.values()}
    out = entries.iloc[keep].copy()
    merged = []
    for i in keep:
        prior = [x for x in str(entries.at[i, "duplicate_ids"] or "").split(";") if x]
        merged.append(";".join(prior + dup_ids[int(i)]))
    out["duplicate_ids"] = merged
    summary = {
        "entries_in": int(len(entries)),
        "entries_out": int(len(out)),
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
            tolerance (pre-filter); None compares every same-size pair.
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
            entries, structures, ltol=ltol, stol=stol, angle_tol=angle_tol, symprec=symprec, workers=workers
        )
    out, kept, summary = merge_duplicates(entries, structures, np.asarray(group_of))
    summary.update(
        {
            "matcher": {"ltol": ltol, "stol": stol, "angle_tol": angle_tol},
            "spacegroup_prefilter_symprec": symprec,
            "groups_precomputed": precomputed,
        }
    )
    log.info("dedupe: %(entries_in)d -> %(entries_out)d entries (%(duplicates_merged)d merged)", summary)
    return out, kept, summary
