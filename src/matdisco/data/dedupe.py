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

__all__ = ["dedupe_entries"]

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


def dedupe_entries(
    entries: pd.DataFrame,
    structures: StructureArrays,
    *,
    ltol: float = 0.2,
    stol: float = 0.3,
    angle_tol: float = 5.0,
    symprec: float | None = 0.1,
    workers: int = 1,
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

    Returns:
        (kept entries, their structures, summary dict with counts).
    """
    tol = {"ltol": ltol, "stol": stol, "angle_tol": angle_tol}
    entries = entries.reset_index(drop=True)
    order = entries.assign(
        _exp=-entries["is_experimental"].astype(int),
        _ef=entries["formation_energy_per_atom"].fillna(np.inf),
    ).sort_values(["formula", "_exp", "_ef", "id"], kind="stable")
    keep: list[int] = []
    groups: list[list[int]] = []
    for _, grp in order.groupby("formula", sort=False):
        rows = grp.index.to_list()
        (keep.append(rows[0]) if len(rows) == 1 else groups.append(rows))
    jobs = [([structures.structure(i) for i in rows], tol, symprec) for rows in groups]
    if workers > 1 and len(jobs) > 8:
        # largest groups first so the pool stays balanced
        by_size = sorted(range(len(jobs)), key=lambda k: -len(groups[k]))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = dict(zip(by_size, pool.map(_group, [jobs[k] for k in by_size], chunksize=4), strict=True))
        clustered = [results[k] for k in range(len(jobs))]
    else:
        clustered = [_group(j) for j in jobs]
    dup_ids: dict[int, list[str]] = {}
    for rows, clusters in zip(groups, clustered, strict=True):
        for members in clusters:
            members = sorted(members)  # positions in `rows`, which is already in preference order
            first = rows[members[0]]
            keep.append(first)
            others = [entries.at[rows[m], "id"] for m in members[1:]]
            if others:
                dup_ids[first] = others
    n_groups = len(groups)
    keep_arr = np.array(sorted(keep), dtype=np.int64)
    out = entries.iloc[keep_arr].copy()
    merged = []
    for i in keep_arr:
        prior = [x for x in str(entries.at[i, "duplicate_ids"] or "").split(";") if x]
        merged.append(";".join(prior + dup_ids.get(int(i), [])))
    out["duplicate_ids"] = merged
    summary = {
        "entries_in": int(len(entries)),
        "entries_out": int(len(out)),
        "duplicates_merged": int(len(entries) - len(out)),
        "formula_groups_compared": n_groups,
        "matcher": {"ltol": ltol, "stol": stol, "angle_tol": angle_tol},
        "spacegroup_prefilter_symprec": symprec,
    }
    log.info("dedupe: %(entries_in)d -> %(entries_out)d entries (%(duplicates_merged)d merged)", summary)
    return out.reset_index(drop=True), structures.take(keep_arr), summary
