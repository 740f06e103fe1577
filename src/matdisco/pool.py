"""One deduplicated candidate pool from the structure generators, with validity and novelty flags.

:func:`build_pool` merges the candidate stores of the generators (templates, WGAN-GP, ...),
removes duplicates within the pool, compares every remaining candidate with the known
structures of the entry store and flags

* ``novel_composition``: the reduced formula does not occur in the store;
* ``novel_structure``: no known structure of that formula matches (pymatgen
  ``StructureMatcher``); ``known_id`` names the matching entry otherwise;
* ``charge_neutral``: the composition admits a charge-neutral assignment of oxidation
  states (SMACT's ``smact_validity`` with mixed valence and without the electronegativity
  test, or pymatgen's oxidation-state guesses);
* ``min_distance``: the shortest interatomic distance (Angstrom, periodic images included)
  and ``valid``: ``min_distance >= min_distance threshold`` (structural validity as in the
  CDVAE evaluation, which uses 0.5 Angstrom).

Structure comparison (dedupe within the pool, novelty against the store) is the shared
service of :mod:`matdisco.core.matching`. It scales to ~10^4 candidates with a cheap
pre-filter: structures are only compared with ``StructureMatcher`` when they have the same
reduced formula and their *neighbour fingerprints* lie within ``fingerprint_tol`` of each
other (Chebyshev distance; a k-d tree finds the pairs, so there are no bucket boundaries to
fall across); the pool uses no space-group pre-filter.

Within a formula, candidates are visited in preference order (input order: generators as
listed, each generator's own ranking); the first unmatched candidate becomes a
representative and every later candidate that matches it directly is its duplicate (its id
goes to the representative's ``duplicate_ids``), as in :mod:`matdisco.data.dedupe`.

:func:`pool_metrics` gives validity, uniqueness and novelty rates per generator, following
the CDVAE (Xie et al., ICLR 2022) and MatterGen (Zeni et al., Nature 2025) evaluations.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# MatchSettings, StructureComparer and neighbour_stats are re-exported for existing importers
# charge_neutral lives in matdisco.core.composition (re-exported: tests, older importers)
from matdisco.core.composition import charge_neutral
from matdisco.core.matching import (
    MatchSettings,
    StructureComparer,
    StructureIndex,
    dedupe,
    neighbour_stats,
    reduced_formulas,
)
from matdisco.settings import PoolSettings
from matdisco.store import (
    StructureArrays,
    atomic_write,
    read_entries,
    read_structure_arrays,
    write_store,
)

__all__ = [
    "POOL_COLUMNS",
    "MatchSettings",
    "StructureComparer",
    "build_pool",
    "charge_neutral",
    "fill_entry_columns",
    "flag_candidates",
    "load_candidates",
    "match_settings",
    "neighbour_stats",
    "pool_metrics",
    "write_cifs",
]

log = logging.getLogger("matdisco.pool")

#: extra columns of the pool (besides the store's entry columns), with their meaning
POOL_COLUMNS: dict[str, str] = {
    "generator": "generator that proposed the structure (template, wgan_gp, ...)",
    "parent": "template entry id (templates) or '' ",
    "target_formula": "composition the generator was asked for",
    "novel_composition": (
        "no source knows the reduced formula (matdisco.known: store, ICSD, labels, user file)"
    ),
    "known_composition_source": "sources that know the formula (icsd;store;labels;user), '' = none",
    "novel_structure": "no StructureMatcher match among the known structures of that formula",
    "known_id": "id of the matching known entry ('' when novel_structure)",
    "charge_neutral": "a charge-neutral oxidation-state assignment exists",
    "min_distance": "shortest interatomic distance, Angstrom (periodic images included)",
    "valid": "min_distance >= the configured threshold",
    "duplicate_ids": "';'-joined ids of candidates merged into this one",
}


def match_settings(settings: PoolSettings) -> MatchSettings:
    """The structure-comparison tolerances of the ``pool`` section (the one place they are built).

    Used by the pool (dedupe, novelty), :mod:`matdisco.known` and the template generator
    (distinct candidates); no space-group pre-filter (``symprec`` None).
    """
    return MatchSettings(
        ltol=settings.ltol,
        stol=settings.stol,
        angle_tol=settings.angle_tol,
        fingerprint_tol=settings.fingerprint_tol,
    )


# --------------------------------------------------------------------------------------
# the pool
# --------------------------------------------------------------------------------------


def load_candidates(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, StructureArrays]:
    """Read and concatenate candidate stores (missing extra columns are filled).

    Rows keep their order (file by file). Ids repeated across files get the file's
    ``generator`` (or file stem) as prefix so they stay unique.

    Args:
        paths: candidate files in the store format (may be empty stores).

    Returns:
        (candidate table, their structures).
    """
    frames, arrays = [], []
    for p in paths:
        df = read_entries(p)
        if "generator" not in df.columns or (df["generator"].astype(str) == "").all():
            df["generator"] = (
                df["source"] if "source" in df.columns and len(df) else Path(p).parent.name
            )
        frames.append(df)
        arrays.append(read_structure_arrays(p))
        log.info("%s: %d candidates", p, len(df))
    if not frames:
        return pd.DataFrame({"id": pd.Series([], dtype=str)}), StructureArrays.concat([])
    table = pd.concat(frames, ignore_index=True, sort=False)
    for col in ("generator", "parent", "target_formula", "duplicate_ids"):
        if col not in table.columns:
            table[col] = ""
        table[col] = table[col].fillna("").astype(str)
    dup = table["id"].duplicated(keep=False)
    if dup.any():
        table.loc[dup, "id"] = table.loc[dup, "generator"] + ":" + table.loc[dup, "id"]
        table["id"] = _uniquify(table["id"].tolist())
    return table, StructureArrays.concat(arrays)


def _uniquify(ids: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        if i in seen:
            seen[i] += 1
            out.append(f"{i}-{seen[i]}")
        else:
            seen[i] = 0
            out.append(i)
    return out


def _group_job(args: tuple) -> tuple[np.ndarray, np.ndarray, list[int], int]:
    """One formula: fingerprints, dedupe, and matching against its known structures.

    Returns:
        (min distances, representative index per candidate, known-structure index per
        candidate (-1: none), StructureMatcher fits).
    """
    cand_arrays, known_arrays, settings = args
    mins, fps = neighbour_stats(cand_arrays)
    one = ["_"] * len(cand_arrays)  # all of one formula already
    clusters = dedupe(cand_arrays, settings, formulas=one, fingerprints=fps)
    rep, fits = clusters.rep, clusters.n_fits
    known_match = [-1] * len(rep)
    if known_arrays is not None and len(known_arrays):
        reps = clusters.representatives
        index = StructureIndex(known_arrays, settings, formulas=["_"] * len(known_arrays))
        matched = index.find_matches(
            cand_arrays.take(reps), formulas=["_"] * len(reps), fingerprints=[fps[i] for i in reps]
        )
        fits += index.n_fits
        for i, m in zip(reps, matched, strict=True):
            known_match[int(i)] = -1 if m is None else int(m)
    return mins, rep, known_match, fits


def _batch_job(jobs: list[tuple]) -> list[tuple]:
    """Several formula jobs in one process call (fewer round trips for small formulas)."""
    return [_group_job(j) for j in jobs]


def flag_candidates(
    table: pd.DataFrame,
    arrays: StructureArrays,
    known_entries: pd.DataFrame,
    known_arrays: StructureArrays,
    *,
    settings: MatchSettings | None = None,
    min_distance: float = 0.5,
    charge_method: str = "smact",
    workers: int = 1,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Flag every candidate: duplicates, novelty, charge neutrality, minimum distance.

    Args:
        table: candidates in preference order (row-aligned with ``arrays``).
        arrays: their structures.
        known_entries: the store's entry table (needs ``id`` and ``formula``).
        known_arrays: the store's structures.
        settings: comparison tolerances.
        min_distance: validity threshold on the shortest interatomic distance, Angstrom.
        charge_method: ``smact`` or ``pymatgen`` (see :func:`charge_neutral`).
        workers: processes for the per-formula comparisons.

    Returns:
        (the table with the columns ``formula``, ``representative`` (id of the kept
        duplicate, own id for kept rows), ``known_id``, ``novel_composition``,
        ``novel_structure``, ``charge_neutral``, ``min_distance``, ``valid`` added;
        timing and count summary).
    """
    settings = settings or MatchSettings()
    t0 = time.perf_counter()
    table = table.reset_index(drop=True).copy()
    n = len(table)
    formulas = reduced_formulas(arrays)
    known_set = set(known_entries["formula"].astype(str))
    by_formula: dict[str, list[int]] = {}
    for i, f in enumerate(formulas):
        by_formula.setdefault(f, []).append(i)
    # known structures of the candidates' formulas only
    kgroups = known_entries.groupby(known_entries["formula"].astype(str)).indices
    known_rows = {f: np.asarray(kgroups[f]) for f in by_formula if f in kgroups}
    keys = sorted(by_formula, key=lambda f: -len(by_formula[f]))  # largest first: balanced
    jobs = [
        (
            arrays.take(by_formula[f]),
            known_arrays.take(known_rows[f]) if f in known_rows else None,
            settings,
        )
        for f in keys
    ]
    t_fp = time.perf_counter() - t0
    t1 = time.perf_counter()
    if workers > 1 and n >= 200 and len(jobs) > 1:
        # batches of >= ~50 candidates, in size order
        batches: list[list[tuple]] = [[]]
        size = 0
        for f, job in zip(keys, jobs, strict=True):
            if size >= 50:
                batches.append([])
                size = 0
            batches[-1].append(job)
            size += len(by_formula[f])
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = [r for batch in ex.map(_batch_job, batches) for r in batch]
    else:
        results = [_group_job(j) for j in jobs]
    t_match = time.perf_counter() - t1
    rep_id = table["id"].astype(str).tolist()
    known_id = [""] * n
    mins = np.zeros(n)
    n_fits = 0
    known_ids = known_entries["id"].astype(str).to_numpy()
    for f, (fmins, rep, kmatch, fits) in zip(keys, results, strict=True):
        rows = by_formula[f]
        n_fits += fits
        mins[rows] = fmins
        krows = known_rows.get(f)
        for local, row in enumerate(rows):
            r = int(rep[local])
            rep_id[row] = table.at[rows[r], "id"]
            k = kmatch[r]  # duplicates share their representative's known match
            known_id[row] = str(known_ids[int(krows[k])]) if k >= 0 else ""
    table["formula"] = formulas
    table["representative"] = rep_id
    table["known_id"] = known_id
    table["novel_composition"] = [f not in known_set for f in formulas]
    table["novel_structure"] = [k == "" for k in known_id]
    table["charge_neutral"] = [charge_neutral(f, charge_method) for f in formulas]
    table["min_distance"] = np.round(mins, 4)
    table["valid"] = mins >= min_distance
    summary = {
        "candidates": n,
        "formulas": len(by_formula),
        "structure_matcher_fits": int(n_fits),
        "seconds_grouping": round(t_fp, 3),
        "seconds_fingerprints_and_matching": round(t_match, 3),
        "seconds_total": round(time.perf_counter() - t0, 3),
    }
    return table, summary


def pool_metrics(flagged: pd.DataFrame) -> dict[str, Any]:
    """Validity, uniqueness and novelty rates per generator and overall.

    Definitions (per generator g, over its N_g candidates before dedupe):

    * ``structure_validity``: fraction with ``min_distance`` >= threshold (CDVAE);
    * ``composition_validity``: fraction charge neutral (CDVAE uses SMACT);
    * ``validity``: both;
    * ``uniqueness``: distinct structures among g's candidates / N_g (duplicates judged
      within the whole pool; two of g's candidates are one structure when they share a
      representative);
    * ``novelty``: fraction of g's distinct structures that match no known structure;
      ``novel_composition_rate``: fraction of them whose formula is not in the store;
    * ``valid_unique_novel``: distinct, valid and novel structures / N_g (MatterGen's
      S.U.N. rate without the stability criterion, which the relaxation stage supplies).
    * ``pool_share``: fraction of g's distinct structures that are kept in the pool under
      g's own id (the rest were first proposed by an earlier generator).
    """

    def rates(df: pd.DataFrame) -> dict[str, Any]:
        n = len(df)
        if n == 0:
            return {"n": 0}
        first = df.drop_duplicates("representative")
        n_unique = len(first)
        valid = df["valid"] & df["charge_neutral"]
        first_valid = first["valid"] & first["charge_neutral"]
        return {
            "n": int(n),
            "n_unique": int(n_unique),
            "structure_validity": round(float(df["valid"].mean()), 4),
            "composition_validity": round(float(df["charge_neutral"].mean()), 4),
            "validity": round(float(valid.mean()), 4),
            "uniqueness": round(n_unique / n, 4),
            "novelty": round(float(first["novel_structure"].mean()), 4),
            "novel_composition_rate": round(float(first["novel_composition"].mean()), 4),
            "valid_unique_novel": round(
                float((first_valid & first["novel_structure"]).sum()) / n, 4
            ),
            "pool_share": round(float((first["representative"] == first["id"]).mean()), 4),
        }

    per = (
        {str(g): rates(df) for g, df in flagged.groupby("generator", sort=True)}
        if len(flagged)
        else {}
    )
    return {"overall": rates(flagged), "per_generator": per}


def build_pool(
    candidate_paths: Sequence[str | Path],
    store_path: str | Path,
    *,
    out_store: str | Path,
    out_csv: str | Path,
    out_metrics: str | Path,
    out_cif_dir: str | Path | None = None,
    settings: PoolSettings | Mapping[str, Any] | None = None,
    workers: int = 1,
    known: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge candidate files into one deduplicated, flagged pool (see module docstring).

    Args:
        candidate_paths: candidate stores, in preference order (earlier files win ties).
        store_path: the entry store of known structures.
        out_store: pool in the store format (one row per distinct candidate).
        out_csv: the same table without structures.
        out_metrics: JSON with per-generator validity / uniqueness / novelty rates.
        out_cif_dir: folder for one CIF per pool row (``<id>.cif``); None writes none.
        settings: the ``pool`` section (a mapping is read with :meth:`PoolSettings.coerce`;
            None: defaults).
        workers: processes for the structure comparisons.
        known: the ``known`` config section (:mod:`matdisco.known`: sources of known
            compositions; sets ``novel_composition`` and ``known_composition_source``).

    Returns:
        The metrics dictionary (also written to ``out_metrics``).
    """
    settings = PoolSettings.coerce(settings)
    known_cfg = dict(known or {})  # `known` is reused below for the store's entries
    match = match_settings(settings)
    t0 = time.perf_counter()
    table, arrays = load_candidates(candidate_paths)
    known = read_entries(store_path, ["id", "formula"])
    known_arrays = read_structure_arrays(store_path)
    flagged, summary = flag_candidates(
        table,
        arrays,
        known,
        known_arrays,
        settings=match,
        min_distance=settings.min_distance,
        charge_method=settings.charge_method,
        workers=workers,
    )
    # novel_composition: the one definition of known (matdisco.known), with its source
    from matdisco.known import KnownCompositions, annotate_compositions

    annotate_compositions(flagged, KnownCompositions.from_config(store_path, known_cfg))
    metrics = pool_metrics(flagged)
    keep = flagged["representative"] == flagged["id"]
    # merged duplicates' ids go to their representative
    merged = flagged.loc[~keep]
    dups = (
        merged.groupby("representative")["id"].agg(";".join)
        if len(merged)
        else pd.Series(dtype=str)
    )
    pool = flagged.loc[keep].copy()
    prior = pool["duplicate_ids"].astype(str)
    extra = [str(dups.get(i, "")) for i in pool["id"]]
    pool["duplicate_ids"] = [
        ";".join(x for x in (a, b) if x) for a, b in zip(prior, extra, strict=True)
    ]
    dropped = {"duplicates": int((~keep).sum())}
    if settings.drop_invalid:
        bad = ~(pool["valid"] & pool["charge_neutral"])
        dropped["invalid"] = int(bad.sum())
        pool = pool.loc[~bad]
    if settings.drop_known:
        known_rows = ~pool["novel_structure"]
        dropped["known"] = int(known_rows.sum())
        pool = pool.loc[~known_rows]
    rows = pool.index.to_numpy()
    pool = pool.drop(columns=["representative"]).reset_index(drop=True)
    pool_arrays = arrays.take(rows)
    fill_entry_columns(pool, pool_arrays)
    write_store(
        out_store,
        pool,
        pool_arrays,
        data_source="candidates",
        provenance={
            "candidate_files": [str(p) for p in candidate_paths],
            "store": str(store_path),
            "settings": settings.to_dict(),
            "summary": summary,
        },
    )
    with atomic_write(out_csv, suffix=".csv") as tmp:
        pool.to_csv(tmp, index=False)
    if out_cif_dir is not None:  # the folder always exists; empty when write_cifs is false
        ids = pool["id"].tolist() if settings.write_cifs else []
        write_cifs(ids, pool_arrays.take(np.arange(len(ids))), out_cif_dir)
    metrics.update(
        {
            "pool_size": len(pool),
            "dropped": dropped,
            "settings": {**match.as_dict(), "min_distance": settings.min_distance},
            "timing": {**summary, "seconds_build_pool": round(time.perf_counter() - t0, 3)},
        }
    )
    if len(table) == 0:
        log.warning("no candidates in %s: the pool is empty", [str(p) for p in candidate_paths])
    log.info(
        "pool: %d candidates -> %d kept (%d duplicates merged); %d novel structures",
        len(table),
        len(pool),
        dropped["duplicates"],
        int(pool["novel_structure"].sum()) if len(pool) else 0,
    )
    with atomic_write(out_metrics, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    return metrics


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def fill_entry_columns(table: pd.DataFrame, arrays: StructureArrays) -> None:
    """Recompute the structure-derived store columns (composition, chemsys, nelements, nsites)."""
    from pymatgen.core import Element

    comps, systems, nel, nsites = [], [], [], []
    for i in range(len(arrays)):
        zs = arrays.species_z[arrays.site_offset[i] : arrays.site_offset[i + 1]]
        u, c = np.unique(zs, return_counts=True)
        els = [Element.from_Z(int(z)) for z in u]
        pairs = sorted(zip(els, c.tolist(), strict=True), key=lambda t: (t[0].X, t[0].symbol))
        comps.append(" ".join(f"{e.symbol}{k}" for e, k in pairs))
        systems.append("-".join(sorted(e.symbol for e in els)))
        nel.append(len(els))
        nsites.append(len(zs))
    table["composition"] = comps
    table["chemsys"] = systems
    table["nelements"] = nel
    table["nsites"] = nsites


def write_cifs(ids: Sequence[str], arrays: StructureArrays, folder: str | Path) -> None:
    """Write one CIF per structure, ``<folder>/<id>.cif`` (folder replaced as a whole).

    Args:
        ids: file stems (characters other than letters, digits, ``-_.`` become ``_``).
        arrays: the structures.
        folder: output folder (created; an existing one is replaced).
    """
    import re
    import shutil
    import tempfile

    from pymatgen.io.cif import CifWriter

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for i, ident in enumerate(ids):
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(ident))
            CifWriter(arrays.structure(i)).write_file(tmp / f"{stem}.cif")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
