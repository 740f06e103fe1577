"""Fan-out of the candidate pool into shards, and resumable shard runs.

* :func:`select_candidates` / :func:`split_pool`: take the best ``max_candidates`` valid pool
  rows (pool order) and write them as shard files (entry-store format, pool columns kept).
* :func:`run_shard`: relax (or pre-screen away) every structure of one shard. Each finished
  structure is appended to a *progress file* as one JSON line, flushed and fsync'ed at once.
  The progress file is not a declared Snakemake output, so a failed or killed job keeps it;
  the rerun skips the ids already there. The shard's real output (a JSON-lines file with one
  record per structure, in shard order) is written atomically only at the end.
* :func:`process_structures`: the resumable core used by both the candidate shards and the
  reference-phase job.

The progress file starts with a header line holding a fingerprint of the shard content and of
the settings; progress written for other content or settings is moved aside (``.stale``) and
not reused. A partial last line (a kill during a write) is dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.relax.optimize import RelaxResult, optimizer_settings, relax_batch, relax_one
from matdisco.settings import RelaxPrescreenSettings, RelaxSettings
from matdisco.store import (
    StructureArrays,
    atomic_write,
    read_entries,
    read_structure_arrays,
    write_store,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from matdisco.relax.backends import Backend

__all__ = [
    "select_candidates",
    "split_pool",
    "shard_names",
    "shard_files",
    "content_hash",
    "ProgressFile",
    "process_structures",
    "run_shard",
    "read_records",
    "write_records",
    "gather_shards",
]

log = logging.getLogger(__name__)

#: pool columns carried through relaxation (when present)
POOL_COLUMNS = (
    "generator",
    "parent",
    "target_formula",
    "novel_composition",
    "novel_structure",
    "charge_neutral",
    "min_distance",
    "valid",
)


def _interleave(groups: list[list[int]]) -> list[int]:
    out: list[int] = []
    for k in range(max((len(g) for g in groups), default=0)):
        out.extend(g[k] for g in groups if k < len(g))
    return out


def select_candidates(
    pool: pd.DataFrame,
    max_candidates: int | None,
    *,
    only_valid: bool = True,
    max_sites: int | None = None,
    selection: str = "pool_order",
) -> np.ndarray:
    """Row positions of the pool to relax: valid ones, at most ``max_candidates``.

    Args:
        pool: the pool's entry table.
        max_candidates: cap; None = all.
        only_valid: drop rows whose ``valid`` column is False (kept when the column is absent).
        max_sites: drop cells with more sites than this (None = no limit).
        selection: ``pool_order`` takes the first rows in pool order; ``round_robin`` takes
            them in turn from each generator, and within a generator in turn from each
            target formula (each group in pool order), so that a small cap still samples every
            generator and target (the per-generator rates need that).
    """
    keep = np.ones(len(pool), dtype=bool)
    if only_valid and "valid" in pool.columns:
        keep &= pool["valid"].astype(bool).to_numpy()
    if max_sites is not None and "nsites" in pool.columns:
        keep &= pool["nsites"].to_numpy() <= max_sites
    idx = np.flatnonzero(keep)
    if selection == "round_robin" and len(idx):
        gen = (
            pool["generator"].astype(str).to_numpy()
            if "generator" in pool.columns
            else np.full(len(pool), "")
        )
        tgt = (
            pool["target_formula"].astype(str).to_numpy()
            if "target_formula" in pool.columns
            else pool["formula"].astype(str).to_numpy()
        )
        per_gen = []
        for g in dict.fromkeys(gen[idx]):  # generators in order of first appearance
            rows = [i for i in idx if gen[i] == g]
            targets = dict.fromkeys(tgt[rows])
            per_gen.append(_interleave([[i for i in rows if tgt[i] == t] for t in targets]))
        idx = np.asarray(_interleave(per_gen), dtype=np.int64)
    elif selection not in ("pool_order", "round_robin"):  # round_robin of an empty pool: none
        raise ValueError(f"unknown selection {selection!r} (pool_order | round_robin)")
    if max_candidates is not None:
        idx = idx[: int(max_candidates)]
    return idx


def shard_names(n_items: int, shard_size: int) -> list[str]:
    """Names of the shards for ``n_items`` items (``shard_000``, ...)."""
    n = max(1, math.ceil(n_items / max(1, shard_size))) if n_items else 0
    return [f"shard_{i:03d}" for i in range(n)]


def split_pool(
    pool_path: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int,
    max_candidates: int | None,
    only_valid: bool = True,
    max_sites: int | None = None,
    selection: str = "pool_order",
    selected_csv: str | Path | None = None,
) -> list[Path]:
    """Write the selected pool rows as shard stores ``<out_dir>/shard_NNN.h5``.

    Consecutive selected rows go to the same shard, so the first selected finish first.
    An empty selection writes no shard (the gather step then writes empty outputs).

    Returns:
        The shard files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = read_entries(pool_path)
    arrays = read_structure_arrays(pool_path)
    idx = select_candidates(
        pool, max_candidates, only_valid=only_valid, max_sites=max_sites, selection=selection
    )
    paths = []
    for k, name in enumerate(shard_names(len(idx), shard_size)):
        rows = idx[k * shard_size : (k + 1) * shard_size]
        path = out_dir / f"{name}.h5"
        write_store(
            path,
            pool.iloc[rows].reset_index(drop=True),
            arrays.take(rows),
            data_source="relax-shard",
            provenance={"pool": str(pool_path), "shard": name, "rows": rows.tolist()},
        )
        paths.append(path)
    if selected_csv is not None:
        sel = pool.iloc[idx][
            ["id", *[c for c in ("formula", "nsites", *POOL_COLUMNS) if c in pool.columns]]
        ].copy()
        names = shard_names(len(idx), shard_size)
        sel["shard"] = [names[i // shard_size] for i in range(len(idx))]
        with atomic_write(selected_csv) as tmp:
            sel.to_csv(tmp, index=False)
    log.info(
        "pool %s: %d rows, %d selected, %d shard(s) of <= %d",
        pool_path,
        len(pool),
        len(idx),
        len(paths),
        shard_size,
    )
    return paths


def shard_files(shard_dir: str | Path, results_dir: str | Path) -> dict[str, list[str]]:
    """The shard stores in ``shard_dir`` and their result paths (``<results_dir>/<name>.jsonl``).

    Used by the workflow's gather step once the split checkpoint has run.
    """
    import re

    names = sorted(
        p.stem for p in Path(shard_dir).glob("shard_*.h5") if re.fullmatch(r"shard_\d+", p.stem)
    )
    return {
        "shards": [str(Path(shard_dir) / f"{n}.h5") for n in names],
        "results": [str(Path(results_dir) / f"{n}.jsonl") for n in names],
    }


def content_hash(ids: Sequence[str], arrays: StructureArrays, settings: dict[str, Any]) -> str:
    """Fingerprint of a shard's structures and the settings that shape its results."""
    h = hashlib.sha256()
    h.update(json.dumps(list(ids)).encode())
    for a in (arrays.lattice, arrays.site_offset, arrays.species_z, arrays.frac_coords):
        h.update(np.ascontiguousarray(np.round(np.asarray(a, dtype=float), 6)).tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


class ProgressFile:
    """Append-only JSON-lines progress of one shard (header line + one line per structure).

    Args:
        path: the progress file.
        fingerprint: content/settings fingerprint; progress with another one is set aside.
    """

    def __init__(self, path: str | Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.done: dict[str, dict[str, Any]] = {}
        self._load()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._write_clean([])
            return
        lines = self.path.read_text(encoding="utf-8").split("\n")
        records: list[dict[str, Any]] = []
        header_ok = False
        dropped = 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1  # a partial line from a killed write
                continue
            if i == 0:
                header_ok = rec.get("header", {}).get("fingerprint") == self.fingerprint
                if not header_ok:
                    break
                continue
            if "id" in rec and rec["id"] not in self.done:
                self.done[rec["id"]] = rec
                records.append(rec)
        if not header_ok:
            stale = self.path.with_suffix(self.path.suffix + ".stale")
            os.replace(self.path, stale)
            log.warning("progress %s was for other content/settings: moved to %s", self.path, stale)
            self.done = {}
            records = []
        elif dropped:
            log.warning("progress %s: dropped %d partial line(s)", self.path, dropped)
        if dropped or not header_ok:
            self._write_clean(records)
        if self.done:
            log.info("resuming %s: %d structure(s) already done", self.path, len(self.done))

    def _write_clean(self, records: list[dict[str, Any]]) -> None:
        """Rewrite the file (header + complete records) atomically."""
        with atomic_write(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"header": {"fingerprint": self.fingerprint}}) + "\n")
                for rec in records:
                    fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, result: RelaxResult) -> None:
        """Append one finished structure (flush + fsync before returning)."""
        rec = result.to_json_dict()
        if rec["id"] in self.done:
            return
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.done[rec["id"]] = rec

    def close(self) -> None:
        """Close the file handle."""
        self._fh.close()


def _atoms(structure: Structure) -> Any:
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_atoms(structure)


def process_structures(
    ids: Sequence[str],
    structures: Sequence[Structure],
    backend: Backend,
    settings: RelaxSettings,
    progress: ProgressFile,
    *,
    batched: bool = True,
    prescreen: Callable[[list[str], list[Structure], list[float]], list[str]] | None = None,
    early_stop: Callable[[str, Any, float, int], str] | None = None,
    max_batch: int = 64,
) -> list[RelaxResult]:
    """Relax the structures not yet in ``progress``; return all results in input order.

    Args:
        ids: structure ids (unique).
        structures: pymatgen structures, aligned with ``ids``.
        backend: energy backend.
        settings: relaxation settings.
        progress: the shard's progress file (done ids are skipped, new results appended).
        batched: use the lockstep batched optimiser when the backend supports it.
        prescreen: optional ``f(ids, structures, energies_per_atom) -> reasons``: called with the
            unrelaxed single-point energies (backend scale) of the structures still to do; a
            non-empty reason rejects that structure without relaxing it.
        early_stop: passed to :func:`~matdisco.relax.optimize.relax_batch`.
        max_batch: most structures relaxed in lockstep at once.
    """
    todo = [i for i, rid in enumerate(ids) if rid not in progress.done]
    log.info(
        "%d structure(s), %d to do (%s, batched=%s)", len(ids), len(todo), backend.name, batched
    )
    pre_e: dict[str, float] = {}
    if todo and prescreen is not None:
        t0 = time.perf_counter()
        atoms = [_atoms(structures[i]) for i in todo]
        raw = backend.predict_energy(atoms)
        e_pa = []
        for i, e in zip(todo, raw, strict=True):
            n = len(structures[i])
            corr = backend.correction(structures[i], e) if math.isfinite(e) else 0.0
            e_pa.append((e + corr) / n)
        reasons = prescreen([ids[i] for i in todo], [structures[i] for i in todo], e_pa)
        keep = []
        for i, e, why in zip(todo, e_pa, reasons, strict=True):
            pre_e[ids[i]] = e
            if why:
                s = structures[i]
                progress.append(
                    RelaxResult(
                        id=ids[i],
                        status="prescreen_rejected",
                        reason=why,
                        prescreen_energy_per_atom=e,
                        lattice=s.lattice.matrix.tolist(),
                        species=[str(x.specie) for x in s],
                        frac_coords=s.frac_coords.tolist(),
                        backend=backend.name,
                        energy_scale=backend.energy_scale,
                    )
                )
            else:
                keep.append(i)
        log.info(
            "pre-screen: %d single points in %.1f s, %d rejected",
            len(todo),
            time.perf_counter() - t0,
            len(todo) - len(keep),
        )
        todo = keep

    def record(r: RelaxResult) -> None:
        r.prescreen_energy_per_atom = pre_e.get(r.id, float("nan"))
        progress.append(r)
        log.info(
            "%s: %s %s E=%.4f eV/atom steps=%d %.1fs",
            r.id,
            r.status,
            r.reason,
            r.energy_per_atom,
            r.steps,
            r.wall_s,
        )

    if batched and backend.batched and not backend.external_relax:
        for k in range(0, len(todo), max_batch):
            chunk = todo[k : k + max_batch]
            relax_batch(
                [(ids[i], _atoms(structures[i])) for i in chunk],
                backend,
                settings,
                record,
                early_stop,
            )
    else:
        for i in todo:
            if backend.external_relax:
                r = backend.relax(ids[i], structures[i], settings)  # type: ignore[attr-defined]
            else:
                r = relax_one(_atoms(structures[i]), backend, settings, ids[i])
            record(r)
    return [RelaxResult.from_json_dict(progress.done[rid]) for rid in ids]


def write_records(path: str | Path, results: Sequence[RelaxResult], meta: dict[str, Any]) -> None:
    """Write a shard's final output atomically: a meta line, then one line per structure."""
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"meta": meta}, default=str) + "\n")
            for r in results:
                fh.write(json.dumps(r.to_json_dict()) + "\n")


def read_records(path: str | Path) -> tuple[dict[str, Any], list[RelaxResult]]:
    """Read a file written by :func:`write_records`: (meta, results)."""
    meta: dict[str, Any] = {}
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            if "meta" in rec:
                meta = rec["meta"]
            else:
                out.append(RelaxResult.from_json_dict(rec))
    return meta, out


def run_shard(
    shard_path: str | Path,
    out_path: str | Path,
    progress_path: str | Path,
    *,
    backend: str,
    backend_options: Mapping[str, Any] | None = None,
    relax: RelaxSettings | Mapping[str, Any] | None = None,
    prescreen: RelaxPrescreenSettings | Mapping[str, Any] | None = None,
    reference_path: str | Path | None = None,
    threads: int = 1,
    backend_obj: Backend | None = None,
) -> dict[str, Any]:
    """Relax one shard, resumably (see the module docstring).

    Args:
        shard_path: shard store (from :func:`split_pool`).
        out_path: final JSON-lines output, written atomically at the end.
        progress_path: progress file (kept on failure; reused on rerun).
        backend: backend name (``relax.backend``).
        backend_options: ``relax.<backend>`` settings.
        relax: the ``relax`` settings (optimiser fields, ``batched``, ``max_batch``); a mapping
            (a part of the config section) is read by :meth:`RelaxSettings.coerce`.
        prescreen: ``relax.prescreen`` settings (``enabled``, ``max_e_above_hull``, early stop);
            needs ``reference_path``; None = no pre-screen.
        reference_path: reference energies (from
            :func:`matdisco.relax.reference.compute_reference`),
            used by the pre-screen and early stop.
        threads: torch threads (BLAS always uses one).
        backend_obj: an already created backend (tests, benchmarks).

    Returns:
        A summary (counts per status, wall time).
    """
    from matdisco.relax.backends import Backend, get_backend

    t0 = time.perf_counter()
    settings = RelaxSettings.coerce(relax)
    pre = None if prescreen is None else RelaxPrescreenSettings.coerce(prescreen)
    entries = read_entries(shard_path)
    arrays = read_structure_arrays(shard_path)
    ids = entries["id"].astype(str).tolist()
    structures = arrays.structures()
    be = backend_obj or get_backend(backend, backend_options, threads=threads)
    fingerprint = content_hash(
        ids,
        arrays,
        {
            "backend": be.describe(),
            "relax": optimizer_settings(settings),
            "prescreen": None if pre is None else pre.to_dict(),
        },
    )
    pre_fn = early = None
    if pre is not None and pre.enabled and reference_path is not None:
        from matdisco.relax.reference import hull_screen

        pre_fn, early = hull_screen(reference_path, be.energy_scale, pre)
        if type(be).correction is not Backend.correction:
            early = None  # early stop looks at raw energies: only for backends without corrections
    progress = ProgressFile(progress_path, fingerprint)
    try:
        results = process_structures(
            ids,
            structures,
            be,
            settings,
            progress,
            batched=settings.batched,
            prescreen=pre_fn,
            early_stop=early,
            max_batch=settings.max_batch,
        )
    finally:
        progress.close()
    counts = pd.Series([r.status for r in results]).value_counts().to_dict() if results else {}
    meta = {
        "shard": str(shard_path),
        "fingerprint": fingerprint,
        **be.describe(),
        "relax": optimizer_settings(settings),
        "prescreen": None if pre is None else pre.to_dict(),
        "counts": counts,
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    write_records(out_path, results, meta)
    log.info("shard %s done: %s in %.1f s", shard_path, counts, meta["wall_s"])
    return meta


def gather_shards(
    shard_files: Sequence[str | Path],
    result_files: Sequence[str | Path],
    out_store: str | Path,
    out_csv: str | Path,
) -> pd.DataFrame:
    """Merge shard results with their pool columns into one store + CSV.

    The store holds the relaxed structure of each ``ok`` candidate (the input structure
    otherwise) with extra columns: status, reason, converged, steps, energies (backend scale),
    fmax, max_force, max_stress_gpa, volume_ratio, wall_s, backend, energy_scale.
    """
    rows, structures = [], []
    for shard, res in zip(shard_files, result_files, strict=True):
        pool = read_entries(shard)
        arrays = read_structure_arrays(shard)
        _, results = read_records(res)
        by_id = {r.id: r for r in results}
        for i, row in pool.iterrows():
            r = by_id.get(str(row["id"]))
            if r is None:
                raise ValueError(f"{res}: no result for {row['id']}")
            s: Structure = r.structure() if r.status == "ok" and r.lattice else arrays.structure(i)
            keep = {c: row[c] for c in ("id", "source", *POOL_COLUMNS) if c in pool.columns}
            stress = np.asarray(r.stress_gpa, dtype=float)
            keep.update(
                formula=s.composition.reduced_formula,
                composition=s.composition.formula,
                chemsys="-".join(sorted(el.symbol for el in s.composition.elements)),
                nelements=len(s.composition.elements),
                nsites=len(s),
                energy_per_atom=r.energy_per_atom,
                status=r.status,
                reason=r.reason,
                converged=bool(r.converged),
                steps=int(r.steps),
                energy_per_atom_raw=r.energy_per_atom_raw,
                correction_per_atom=r.correction_per_atom,
                initial_energy_per_atom=r.initial_energy_per_atom,
                prescreen_energy_per_atom=r.prescreen_energy_per_atom,
                fmax=r.fmax,
                max_force=r.max_force,
                max_stress_gpa=float(np.abs(stress).max()) if stress.size else float("nan"),
                volume_ratio=r.volume_ratio,
                wall_s=r.wall_s,
                backend=r.backend,
                energy_scale=r.energy_scale,
            )
            rows.append(keep)
            structures.append(s)
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame({"id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    write_store(
        out_store,
        df,
        StructureArrays.from_structures(structures),
        data_source="relax",
        provenance={"shards": [str(s) for s in shard_files]},
    )
    with atomic_write(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
