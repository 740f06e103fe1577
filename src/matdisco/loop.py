"""Closed loop: a versioned local knowledge base (KB) of relaxed candidates for later runs.

A run with ``loop.enabled`` appends its successfully relaxed candidates (the E_hull stage's
``relax/ehull.h5``) to the KB at ``loop.path`` (a folder outside ``results/``). A later run with
``loop.use`` reads the KB:

* **known** (:mod:`matdisco.known`): the KB's compositions form the known source ``loop`` and its
  structures are known structures (source ``loop (<run>)``), whatever their energy scale
  (known-ness uses no energies);
* **reference hull** (:mod:`matdisco.relax.reference`): every KB record of the target chemical
  system *on the run's energy scale* joins the reference phases as it was computed (no
  recomputation), ``origin = loop:<run>/<candidate id>``; records on another scale are skipped
  and counted in the log;
* **classifier labels** (:func:`write_extra_labels`): the lowest KB E_hull per formula, on the
  run's energy scale, as a training-only (never evaluated) label, for formulas that neither the
  store's label table (MP) nor the configured extra labels know: a label of the relaxation
  model's hull is never put beside or over a DFT label of the same formula.

A run never reads the records it appended itself (``exclude_runs``): rerunning a run
reproduces it; the next iteration of the loop is a run with another ``run_name``.

**File format** (docs/interfaces.md, "Knowledge base"): ``<path>/index.json`` (the one mutable
file, rewritten atomically) lists the versions; each version is one immutable JSON-lines file
``<path>/v<NNNN>.jsonl`` (written once, made read-only, its SHA-256 kept in the index and
checked on every read), one record per line (:data:`RECORD_FIELDS`). Appends hold a lock
(``<path>/.lock``). Appending is idempotent: a record whose content hash, or whose structure
(StructureMatcher with the pool's tolerances, same formula and energy scale), is already in the
KB is skipped and named in the receipt; an append that adds nothing writes no version.

``python -m matdisco.loop versions|show|append --dry-run`` lists versions, shows records and
previews an append without writing.

The module stays whole (~750 lines, over the ~600-line guide) because the file format, its
integrity checks, the append lock and the three readers (known set, reference phases, labels)
share one record schema and must change together; splitting them would spread one format over
several files.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.provenance import sha256_file
from matdisco.store import atomic_write, json_safe

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from matdisco.core.matching import MatchSettings

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "RECORD_FIELDS",
    "KnowledgeBaseError",
    "KnowledgeBase",
    "record_hash",
    "record_structure",
    "workflow_view",
    "read_loop_records",
    "reference_rows",
    "write_extra_labels",
]

log = logging.getLogger(__name__)

FORMAT = "matdisco-knowledge-base"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
LOCK_NAME = ".lock"

#: fields of one KB record (one JSON line of a version file); energies in eV/atom
RECORD_FIELDS = (
    "id",  # kb-<first 12 hex digits of content_hash>
    "formula",  # reduced formula
    "composition",  # cell composition, e.g. Mg2Mn4O8
    "nsites",
    "lattice",  # 3x3, Angstrom, rows = lattice vectors
    "species",  # element symbol per site
    "frac_coords",  # fractional coordinates per site
    "energy_per_atom",  # on energy_scale (eV/atom)
    "energy_scale",  # e.g. chgnet-0.3.0/mp2020
    "e_above_hull",  # vs the source run's reference hull (eV/atom)
    "e_above_hull_self_consistent",  # vs reference + all the run's candidates (eV/atom)
    "hull_flag",  # the run's below-hull flag ('' = none)
    "known_structure_source",  # what the source run matched it with ('' = novel there)
    "run_name",  # source run
    "config_hash",  # SHA-256 (16 hex) of the source run's whole config
    "date",  # UTC ISO 8601 time of the append
    "generator",  # template | wgan_gp | ...
    "candidate_id",  # id in the source run
    "parent",
    "target_formula",
    "content_hash",  # SHA-256 of scale, species, rounded lattice and coordinates
    "version",  # version number that added it
)


class KnowledgeBaseError(ValueError):
    """A knowledge base that cannot be used as it is (message names the path and problem)."""


def record_hash(
    lattice: Any, species: Sequence[str], frac_coords: Any, energy_scale: str, energy: float
) -> str:
    """Content hash of a record: scale, species, lattice (1e-4 A) and coordinates (1e-5, wrapped)
    and energy (1e-5 eV/atom); the same relaxation result always hashes the same."""
    h = hashlib.sha256()
    h.update(str(energy_scale).encode())
    h.update(json.dumps([str(s) for s in species]).encode())
    h.update(np.round(np.asarray(lattice, dtype=float), 4).tobytes())
    fc = np.mod(np.round(np.asarray(frac_coords, dtype=float), 5), 1.0)
    h.update(np.round(fc, 5).tobytes())
    h.update(f"{float(energy):.5f}".encode())
    return h.hexdigest()


def record_structure(rec: Mapping[str, Any]) -> Structure:
    """The pymatgen Structure of a record (a row of :meth:`KnowledgeBase.read`)."""
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(rec["lattice"]), list(rec["species"]), rec["frac_coords"])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock on ``<path>/.lock`` (POSIX advisory; no lock where fcntl is missing)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_NAME, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class KnowledgeBase:
    """The knowledge base folder ``path`` (see the module docstring for the format)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_NAME

    def exists(self) -> bool:
        """Whether the KB has an index (a folder without one is an empty KB)."""
        return self.index_path.is_file()

    def index(self) -> dict[str, Any]:
        """The index (an empty one when the KB does not exist yet).

        Raises:
            KnowledgeBaseError: an index of another format or a newer format version.
        """
        if not self.exists():
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": []}
        try:
            idx = json.loads(self.index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise KnowledgeBaseError(f"{self.index_path}: not JSON ({err})") from err
        if idx.get("format") != FORMAT:
            raise KnowledgeBaseError(
                f"{self.index_path}: not a matdisco knowledge base index (format "
                f"{idx.get('format')!r}, expected {FORMAT!r})"
            )
        if int(idx.get("format_version", 0)) > FORMAT_VERSION:
            raise KnowledgeBaseError(
                f"{self.index_path}: format version {idx['format_version']} is newer than this "
                f"matdisco reads ({FORMAT_VERSION})"
            )
        return idx

    def versions(self, exclude_runs: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Index entries of the versions, oldest first, without those of ``exclude_runs``."""
        ex = set(exclude_runs)
        return [v for v in self.index()["versions"] if v["run_name"] not in ex]

    def read(
        self,
        versions: Sequence[str] | None = None,
        *,
        exclude_runs: Sequence[str] = (),
        energy_scale: str | None = None,
    ) -> pd.DataFrame:
        """Records of the KB (one row each, :data:`RECORD_FIELDS`).

        Args:
            versions: version file names to read (None = every version of the index).
            exclude_runs: leave out the versions appended by these runs.
            energy_scale: keep only records on this scale; the others are counted in the log.

        Raises:
            KnowledgeBaseError: a named version that the index does not list, a missing version
                file, or one whose SHA-256 differs from the index (edited after it was written).
        """
        entries = self.versions(exclude_runs)
        if versions is not None:
            by_file = {v["file"]: v for v in self.index()["versions"]}
            unknown = [f for f in versions if f not in by_file]
            if unknown:
                raise KnowledgeBaseError(f"{self.path}: versions {unknown} are not in the index")
            want = set(versions)
            entries = [v for v in entries if v["file"] in want]
        rows: list[dict[str, Any]] = []
        for v in entries:
            f = self.path / v["file"]
            if not f.is_file():
                raise KnowledgeBaseError(f"{self.path}: version file {v['file']} is missing")
            if sha256_file(f) != v["sha256"]:
                raise KnowledgeBaseError(
                    f"{f}: content differs from the SHA-256 in the index: version files are "
                    "immutable (append a new version instead of editing one)"
                )
            with open(f, encoding="utf-8") as fh:
                rows.extend(json.loads(line) for line in fh if line.strip())
        df = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
        for c in ("energy_per_atom", "e_above_hull", "e_above_hull_self_consistent"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        if energy_scale is not None and len(df):
            other = df["energy_scale"] != energy_scale
            if other.any():
                counts = df.loc[other, "energy_scale"].value_counts().to_dict()
                log.warning(
                    "knowledge base %s: %d of %d records skipped: energy scale %s, not the "
                    "run's %s (scales are never mixed)",
                    self.path,
                    int(other.sum()),
                    len(df),
                    counts,
                    energy_scale,
                )
            df = df[~other]
        return df.reset_index(drop=True)

    # ---------------------------------------------------------------------------------------
    def append(
        self,
        ehull_store: str | Path,
        *,
        run_name: str,
        config_hash: str,
        max_e_above_hull: float | None = None,
        match: MatchSettings | Mapping[str, Any] | None = None,
        dry_run: bool = False,
        date: str | None = None,
    ) -> dict[str, Any]:
        """Append a run's relaxed candidates as a new version (nothing when nothing is new).

        Taken: rows of ``ehull_store`` (``relax/ehull.h5``) with status ``ok`` and a finite
        energy and E_hull, within ``max_e_above_hull`` (eV/atom; None = all). Skipped, each
        counted: failed or rejected relaxations, no E_hull, above the window, a content hash
        already in the KB, a structure matching a KB record of the same formula and scale (or
        a lower-energy candidate of this append).

        Args:
            ehull_store: the E_hull stage's entry store.
            run_name: the source run (records of a run are never read by that run).
            config_hash: hash of the run's config (recorded).
            max_e_above_hull: E_hull window of the append, eV/atom (None = every relaxed one).
            match: StructureMatcher tolerances (the ``pool`` section or MatchSettings).
            dry_run: say what would be added without writing anything.
            date: UTC time stamp to record (default: now).

        Returns:
            The receipt: counts, added records (id, candidate id, formula, E_hull), skipped
            candidates with the reason, the version written (None when nothing was added).
        """
        from matdisco.core.matching import MatchSettings as _MS
        from matdisco.store import read_entries, read_structure_arrays

        ms = match if isinstance(match, _MS) else _match_settings(match)
        date = date or _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
        cand = read_entries(ehull_store)
        structures = read_structure_arrays(ehull_store).structures() if len(cand) else []
        skipped: list[dict[str, Any]] = []
        new: list[dict[str, Any]] = []
        new_structs: list[Structure] = []
        for k, (_, row) in enumerate(cand.iterrows()):
            cid = str(row["id"])
            e = float(row.get("energy_per_atom", np.nan))
            eh = float(row.get("e_above_hull", np.nan))
            why = ""
            if str(row.get("status", "")) != "ok":
                why = f"not relaxed (status {row.get('status', '')})"
            elif not math.isfinite(e) or not str(row.get("energy_scale", "")):
                why = "no energy"
            elif not math.isfinite(eh):
                why = "no E_hull"
            elif max_e_above_hull is not None and eh > float(max_e_above_hull) + 1e-12:
                why = f"E_hull {eh:.3f} > loop.max_e_above_hull {float(max_e_above_hull):g}"
            if why:
                skipped.append({"candidate_id": cid, "reason": why})
                continue
            s = structures[k]
            rec = {
                "formula": s.composition.reduced_formula,
                "composition": s.composition.formula.replace(" ", ""),
                "nsites": len(s),
                "lattice": np.round(s.lattice.matrix, 8).tolist(),
                "species": [str(x.specie) for x in s],
                "frac_coords": np.round(s.frac_coords, 8).tolist(),
                "energy_per_atom": e,
                "energy_scale": str(row["energy_scale"]),
                "e_above_hull": eh,
                "e_above_hull_self_consistent": float(
                    row.get("e_above_hull_self_consistent", np.nan)
                ),
                "hull_flag": _text(row.get("hull_flag", "")),
                "known_structure_source": _text(row.get("known_structure_source", "")),
                "run_name": str(run_name),
                "config_hash": str(config_hash),
                "date": date,
                "generator": _text(row.get("generator", "")),
                "candidate_id": cid,
                "parent": _text(row.get("parent", "")),
                "target_formula": _text(row.get("target_formula", "")),
            }
            rec["content_hash"] = record_hash(
                rec["lattice"], rec["species"], rec["frac_coords"], rec["energy_scale"], e
            )
            rec["id"] = f"kb-{rec['content_hash'][:12]}"
            new.append(rec)
            new_structs.append(s)
        with _locked(self.path) if not dry_run else contextlib.nullcontext():
            existing = self.read()
            kept = _dedupe(new, new_structs, existing, ms, skipped)
            added = [new[i] for i in kept]
            version = None
            number = 1 + max([int(v["version"]) for v in self.index()["versions"]] or [0])
            if added and not dry_run:
                version = self._write_version(number, added, run_name, config_hash, date)
        receipt = {
            "knowledge_base": str(self.path),
            "run_name": str(run_name),
            "config_hash": str(config_hash),
            "date": date,
            "dry_run": bool(dry_run),
            "source": str(ehull_store),
            "energy_scale": sorted({r["energy_scale"] for r in new}),
            "n_candidates": int(len(cand)),
            "n_added": len(added),
            "n_skipped": len(skipped),
            "version": version,
            "would_be_version": number if (dry_run and added) else None,
            "added": [
                {
                    "id": r["id"],
                    "candidate_id": r["candidate_id"],
                    "formula": r["formula"],
                    "e_above_hull": r["e_above_hull"],
                    "generator": r["generator"],
                }
                for r in added
            ],
            "skipped": skipped,
            "skipped_by_reason": _count_reasons(skipped),
        }
        log.info(
            "knowledge base %s: %s %d of %d candidates of run %s%s; skipped %s",
            self.path,
            "would add" if dry_run else "added",
            len(added),
            len(cand),
            run_name,
            f" as version {version['version']} ({version['file']})" if version else "",
            receipt["skipped_by_reason"] or "none",
        )
        for r in added:
            log.info(
                "  + %s %s (%s, E_hull %.3f eV/atom, %s)",
                r["id"],
                r["formula"],
                r["candidate_id"],
                r["e_above_hull"],
                r["energy_scale"],
            )
        return json_safe(receipt)

    def _write_version(
        self,
        number: int,
        records: list[dict[str, Any]],
        run_name: str,
        config_hash: str,
        date: str,
    ) -> dict[str, Any]:
        name = f"v{number:04d}.jsonl"
        path = self.path / name
        if path.exists():
            raise KnowledgeBaseError(
                f"{path} exists but is not in the index: refusing to overwrite"
            )
        with atomic_write(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                for r in records:
                    r = {**r, "version": number}
                    fh.write(json.dumps(json_safe({k: r[k] for k in RECORD_FIELDS})) + "\n")
        os.chmod(path, 0o444)  # immutable: the index keeps its SHA-256 as well
        entry = {
            "version": number,
            "file": name,
            "sha256": sha256_file(path),
            "run_name": str(run_name),
            "config_hash": str(config_hash),
            "date": date,
            "n_records": len(records),
            "energy_scales": sorted({r["energy_scale"] for r in records}),
            "generators": dict(pd.Series([r["generator"] for r in records]).value_counts()),
            "formulas": sorted({r["formula"] for r in records}),
        }
        idx = self.index()
        idx["versions"].append(entry)
        idx["updated"] = date
        with atomic_write(self.index_path) as tmp:
            tmp.write_text(json.dumps(json_safe(idx), indent=1) + "\n", encoding="utf-8")
        return json_safe(entry)


def _dedupe(
    new: list[dict[str, Any]],
    structs: list[Structure],
    existing: pd.DataFrame,
    ms: MatchSettings,
    skipped: list[dict[str, Any]],
) -> list[int]:
    """Indices of ``new`` records that are not yet in the KB, in input order.

    A record is dropped (and appended to ``skipped`` with the reason) when its content hash is
    in ``existing``, or its structure matches an existing record of the same formula and
    energy scale (:class:`matdisco.core.matching.StructureIndex`), or a lower-energy record of
    this append (:func:`matdisco.core.matching.dedupe` in order of energy).
    """
    from matdisco.core.matching import StructureIndex, dedupe

    def label(r: Mapping[str, Any]) -> str:  # structures compare within formula and scale
        return f"{r['formula']}|{r['energy_scale']}"

    hashes = dict(zip(existing["content_hash"], existing["id"], strict=True))
    order = sorted(range(len(new)), key=lambda i: new[i]["energy_per_atom"])
    unseen = []
    for i in order:
        if new[i]["content_hash"] in hashes:
            reason = f"already in the knowledge base ({hashes[new[i]['content_hash']]})"
            skipped.append({"candidate_id": new[i]["candidate_id"], "reason": reason})
        else:
            unseen.append(i)
    hits: list[Any] = [None] * len(unseen)
    if len(existing) and unseen:
        index = StructureIndex(
            [record_structure(r) for _, r in existing.iterrows()],
            ms,
            ids=list(existing["id"]),
            formulas=[label(r) for _, r in existing.iterrows()],
        )
        hits = index.find_matches(
            [structs[i] for i in unseen], formulas=[label(new[i]) for i in unseen]
        )
    novel = []
    for i, hit in zip(unseen, hits, strict=True):
        if hit is None:
            novel.append(i)
        else:
            reason = f"same structure as {hit}"
            skipped.append({"candidate_id": new[i]["candidate_id"], "reason": reason})
    rep = (
        dedupe([structs[i] for i in novel], ms, formulas=[label(new[i]) for i in novel]).rep
        if novel
        else []
    )
    kept: list[int] = []
    for k, i in enumerate(novel):
        if rep[k] == k:
            kept.append(i)
            continue
        first = new[novel[rep[k]]]
        reason = (
            f"same structure as {first['id']} (candidate {first['candidate_id']} of this "
            "append, lower energy)"
        )
        skipped.append({"candidate_id": new[i]["candidate_id"], "reason": reason})
    return sorted(kept)


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return str(v)


def _count_reasons(skipped: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in skipped:
        r = s["reason"]
        key = (
            "already in the knowledge base"
            if r.startswith("already")
            else "same structure"
            if r.startswith("same structure")
            else "above loop.max_e_above_hull"
            if "loop.max_e_above_hull" in r
            else r
        )
        out[key] = out.get(key, 0) + 1
    return out


def _match_settings(match: Mapping[str, Any] | None) -> MatchSettings:
    from matdisco.pool import match_settings
    from matdisco.settings import PoolSettings

    return match_settings(PoolSettings.coerce(dict(match) if match else None))


# ------------------------------------------------------------------------------------------
# what a run reads


def workflow_view(
    loop_cfg: Mapping[str, Any], run_name: str
) -> tuple[list[str], dict[str, Any] | None]:
    """What a run reads from the KB: (version files to declare as rule inputs, the entry).

    The entry (None when ``loop.use`` is false) is what :func:`read_loop_records` reads:
    ``{"path", "versions", "exclude_runs"}``; workflow/rules/loop.smk adds it to the ``known``
    slice the rules get. Versions appended by ``run_name`` itself are left out, so an append
    never makes its own run out of date (no cycle) and a rerun reproduces the run.
    """
    if not loop_cfg.get("use"):
        return [], None
    kb = KnowledgeBase(loop_cfg["path"])
    if not kb.exists():
        log.warning("loop.use: knowledge base %s does not exist yet (nothing to read)", kb.path)
    files = [v["file"] for v in kb.versions(exclude_runs=[run_name])]
    entry = {"path": str(kb.path), "versions": files, "exclude_runs": [str(run_name)]}
    return [str(kb.path / f) for f in files], entry


def read_loop_records(entry: Mapping[str, Any] | None, energy_scale: str | None = None):
    """Records of the KB entry of :func:`workflow_view` (None or no versions: empty frame)."""
    if not entry or not entry.get("versions"):
        return pd.DataFrame(columns=list(RECORD_FIELDS))
    return KnowledgeBase(entry["path"]).read(
        list(entry["versions"]),
        exclude_runs=list(entry.get("exclude_runs", ())),
        energy_scale=energy_scale,
    )


def reference_rows(
    entry: Mapping[str, Any] | None, elements: Sequence[str], energy_scale: str
) -> tuple[pd.DataFrame, list[Structure]]:
    """KB records usable as reference phases: in the chemical system, on ``energy_scale``.

    Returns:
        (rows with ``id``, ``formula``, ``composition``, ``nsites``, ``energy_per_atom``,
        ``origin`` = ``loop:<run>/<candidate id>``, ``reason``; their structures).
    """
    recs = read_loop_records(entry, energy_scale)
    els = set(elements)
    if len(recs):
        from pymatgen.core import Composition

        inside = [
            {str(e) for e in Composition(c).elements} <= els
            for c in recs["composition"].astype(str)
        ]
        n_out = len(recs) - int(np.sum(inside))
        if n_out:
            log.info("knowledge base: %d records outside %s left out", n_out, "-".join(elements))
        recs = recs[np.asarray(inside, dtype=bool)].reset_index(drop=True)
    rows = pd.DataFrame(
        {
            "id": recs["id"].astype(str),
            "formula": recs["formula"].astype(str),
            "composition": recs["composition"].astype(str),
            "nsites": recs["nsites"].astype(int),
            "energy_per_atom": recs["energy_per_atom"].astype(float),
            "origin": [
                f"loop:{r}/{c}" for r, c in zip(recs["run_name"], recs["candidate_id"], strict=True)
            ],
            "reason": [
                f"knowledge base v{v} (run {r}, E_hull there {e:.3f} eV/atom); not recomputed"
                for v, r, e in zip(
                    recs["version"], recs["run_name"], recs["e_above_hull"], strict=True
                )
            ],
        }
    )
    log.info(
        "knowledge base: %d phases on %s join the reference (%s)",
        len(rows),
        energy_scale,
        ", ".join(rows["formula"].unique()) if len(rows) else "none",
    )
    return rows, [record_structure(r) for _, r in recs.iterrows()]


def write_extra_labels(
    entry: Mapping[str, Any] | None,
    store_path: str | Path,
    reference_csv: str | Path,
    out_csv: str | Path,
    *,
    extra_labels: str | Path | None = None,
) -> pd.DataFrame:
    """Classifier extra labels: the configured ones plus KB formula-level E_hull labels.

    KB labels are the lowest ``e_above_hull`` per reduced formula among records on the run's
    energy scale (the reference table's), ``label_source = loop:<run> (<scale>)``. They are
    added only for formulas that neither the store's label table (MP) nor ``extra_labels``
    label: an E_hull on the relaxation model's hull is not on MP's DFT scale, so it never
    replaces or joins a DFT label. Extra labels are training-only in
    :func:`matdisco.classifier.labels.load_labels` (never in the evaluated split).

    Writes ``out_csv`` with ``formula``, ``e_above_hull`` (eV/atom), ``label_source``.
    """
    from matdisco.classifier.labels import read_extra_labels
    from matdisco.known import reduced_formula
    from matdisco.relax.reference import load_reference
    from matdisco.store import read_labels

    scales = set(load_reference(reference_csv)["energy_scale"].astype(str))
    scale = scales.pop()  # load_reference refuses more than one
    frames = []
    if extra_labels:
        frames.append(read_extra_labels(extra_labels))
    known_labels: set[str] = set()
    for f in read_labels(store_path)["formula"].astype(str):
        with contextlib.suppress(ValueError):
            known_labels.add(reduced_formula(f))
    for f in frames[0]["formula"] if frames else []:
        with contextlib.suppress(ValueError):
            known_labels.add(reduced_formula(f))
    recs = read_loop_records(entry, scale)
    n_kb = 0
    if len(recs):
        best = recs.sort_values("e_above_hull", kind="stable").drop_duplicates("formula")
        new = best[~best["formula"].isin(known_labels)]
        log.info(
            "classifier labels from the knowledge base (%s): %d formulas, %d of them already "
            "labelled by MP or the extra labels (those keep their label)",
            scale,
            len(best),
            len(best) - len(new),
        )
        n_kb = len(new)
        frames.append(
            pd.DataFrame(
                {
                    "formula": new["formula"].astype(str),
                    "e_above_hull": new["e_above_hull"].astype(float),
                    "label_source": [f"loop:{r} ({scale})" for r in new["run_name"]],
                }
            )
        )
    out = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["formula", "e_above_hull", "label_source"])
    )
    with atomic_write(out_csv) as tmp:
        out[["formula", "e_above_hull", "label_source"]].to_csv(tmp, index=False)
    log.info("extra labels: %d rows (%d from the knowledge base) -> %s", len(out), n_kb, out_csv)
    return out


# ------------------------------------------------------------------------------------------
# command line


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m matdisco.loop", description="Inspect or extend a matdisco knowledge base."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("versions", help="list the versions of the knowledge base")
    v.add_argument("path")
    s = sub.add_parser("show", help="print the records (one line each)")
    s.add_argument("path")
    s.add_argument("--energy-scale", default=None)
    a = sub.add_parser("append", help="append a run's relax/ehull.h5 (see loop.enabled)")
    a.add_argument("path")
    a.add_argument("ehull_store")
    a.add_argument("--run-name", required=True)
    a.add_argument("--config-hash", default="")
    a.add_argument("--max-e-above-hull", type=float, default=None)
    a.add_argument("--dry-run", action="store_true", help="say what would be added; write nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kb = KnowledgeBase(args.path)
    if args.cmd == "versions":
        for e in kb.versions():
            print(
                f"v{e['version']:04d}  {e['date']}  run {e['run_name']}  {e['n_records']} records"
                f"  {','.join(e['energy_scales'])}  config {e['config_hash']}  {e['file']}"
            )
        if not kb.exists():
            print(f"{kb.path}: no knowledge base yet")
    elif args.cmd == "show":
        df = kb.read(energy_scale=args.energy_scale)
        cols = ["id", "formula", "e_above_hull", "energy_scale", "run_name", "candidate_id"]
        print(df[cols].to_string(index=False) if len(df) else "no records")
    else:
        r = kb.append(
            args.ehull_store,
            run_name=args.run_name,
            config_hash=args.config_hash,
            max_e_above_hull=args.max_e_above_hull,
            dry_run=args.dry_run,
        )
        print(json.dumps({k: r[k] for k in r if k != "skipped"}, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
