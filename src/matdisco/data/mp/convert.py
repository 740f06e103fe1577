"""MP summary documents -> store entries and ordered structures (rejections with reasons).

Separate from the HTTP client and the cache: works on cached documents only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.data.base import REJECTED_COLUMNS, DataSourceError, empty_entries
from matdisco.data.mp.cache import _read_json
from matdisco.data.mp.client import _one_line
from matdisco.store import ENTRY_COLUMNS

if TYPE_CHECKING:
    from pymatgen.core import Structure

logger = logging.getLogger("matdisco.data")


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _id_key(mid: str) -> tuple[str, int, str]:
    m = re.match(r"^([a-z]+)-(\d+)$", mid)
    return (m.group(1), int(m.group(2)), "") if m else (mid, -1, mid)


def _clean_structure(d: Any) -> Structure:
    """A pymatgen structure dict -> plain ordered Structure (no oxidation states, no props).

    Raises:
        _DocRejected: the structure is missing, unreadable or disordered.
    """
    from pymatgen.core import Element, Structure

    if not isinstance(d, dict):
        raise _DocRejected("parse_error", "no structure in the document")
    try:
        s = Structure.from_dict(d)
    except Exception as exc:  # noqa: BLE001 -- a malformed document is a rejection
        raise _DocRejected("parse_error", f"structure unreadable ({type(exc).__name__})") from None
    if not s.is_ordered:
        bad = next(site for site in s if not site.is_ordered)
        raise _DocRejected("partial_occupancy", f"disordered site {bad.species}")
    return Structure(s.lattice, [Element(site.specie.symbol) for site in s], s.frac_coords)


class _DocRejected(Exception):
    """Internal: a summary document is rejected for ``category``."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category


def _doc_row(doc: dict[str, Any], structure: Structure, method: str) -> dict[str, Any]:
    comp = structure.composition
    theoretical = doc.get("theoretical")
    e_hull = _float(doc.get("energy_above_hull"))
    return {
        "id": str(doc["material_id"]),
        "source": "mp",
        "formula": comp.reduced_formula,
        "composition": comp.formula,
        "chemsys": comp.chemical_system,
        "nelements": len(comp.elements),
        "nsites": len(structure),
        "energy_per_atom": _float(doc.get("energy_per_atom")),
        "formation_energy_per_atom": _float(doc.get("formation_energy_per_atom")),
        "e_above_hull": e_hull,
        "e_above_hull_method": "" if np.isnan(e_hull) else method,
        "band_gap": _float(doc.get("band_gap")),
        "is_experimental": -1 if theoretical is None else (0 if theoretical else 1),
        "has_partial_occupancy": False,
        "duplicate_ids": "",
    }


def _entries_from_cache(
    cache_dir: Path, snap_dir: Path, subs: list[str], method: str
) -> tuple[pd.DataFrame, list[Structure], pd.DataFrame, Counter[str]]:
    rows: list[dict[str, Any]] = []
    structures: list[Structure] = []
    rejected: list[dict[str, str]] = []
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    for cs in subs:
        path = snap_dir / f"{cs}.json.gz"
        rel = path.relative_to(cache_dir).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        payload = _read_json(path)
        docs = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            raise DataSourceError(
                f"MP cache file {path} has no list of documents; delete the snapshot folder"
            )
        for doc in sorted(docs, key=lambda d: _id_key(str(d.get("material_id") or ""))):
            mid = str(doc.get("material_id") or "")
            try:
                if not mid:
                    raise _DocRejected("parse_error", "document without material_id")
                if mid in seen:
                    logger.debug("mp: %s listed twice; kept the first", mid)
                    continue
                seen.add(mid)
                structure = _clean_structure(doc.get("structure"))
            except _DocRejected as rej:
                reason = f"{rej.category}: {mid or '?'}: {_one_line(str(rej), None)}"
                rejected.append({"file": rel, "reason": reason})
                reasons[rej.category] += 1
                logger.warning("mp: rejected %s", reason)
                continue
            row = _doc_row(doc, structure, method)
            row.update({"source_file": rel, "source_hash": digest})
            rows.append(row)
            structures.append(structure)
    entries = pd.DataFrame(rows, columns=list(ENTRY_COLUMNS)) if rows else empty_entries()
    if rows:
        ints = {"nelements": np.int64, "nsites": np.int64, "is_experimental": np.int64}
        entries = entries.astype(ints)
    return entries, structures, pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)), reasons
