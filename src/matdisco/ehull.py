"""Public E_hull API: energy above hull of pymatgen entries against a reference hull.

:func:`from_entries` takes pymatgen entries (``ComputedStructureEntry``, ``ComputedEntry``,
``PDEntry``: anything with ``composition`` and ``energy``; ``energy`` includes any energy
corrections, as in pymatgen) and returns one row per entry. The reference is

* a reference table (path or DataFrame) in the format of docs/interfaces.md ("Reference
  table"), as the ``ehull_reference`` rule writes it (:data:`REFERENCE_COLUMNS`; required
  :data:`REFERENCE_REQUIRED`), or
* a list of pymatgen entries, or
* None: the entries themselves make the hull.

E_hull uses pymatgen's ``PhaseDiagram.get_decomp_and_e_above_hull(allow_negative=True)`` (an
entry below the reference hull gets a negative value), as the pipeline's ``ehull`` rule does
(:func:`matdisco.relax.ehull.candidate_ehull`). Entries with elements outside the reference
system get NaN and a ``reason``.

Command line: ``matdisco ehull ENTRIES --reference REF [-o out.csv]`` (see ``--help``).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from matdisco.relax.ehull import candidate_ehull
from matdisco.relax.reference import (
    REFERENCE_COLUMNS,
    REFERENCE_REQUIRED,
    load_reference,
    phase_diagram,
    validate_reference,
)

__all__ = [
    "ENTRY_COLUMNS",
    "REFERENCE_COLUMNS",
    "REFERENCE_REQUIRED",
    "from_entries",
    "load_entries",
    "table_to_entries",
]

#: columns of :func:`from_entries`' result
ENTRY_COLUMNS = (
    "id",
    "formula",
    "composition",
    "energy_per_atom",
    "formation_energy_per_atom",
    "e_above_hull",
    "decomposition",
    "energy_scale",
    "reference",
    "reason",
)


def _entry_id(entry: Any, k: int) -> str:
    for attr in ("entry_id", "name"):
        v = getattr(entry, attr, None)
        if v not in (None, ""):
            return str(v)
    return str(k)


def _reference_diagram(reference: Any, energy_scale: str) -> tuple[Any, str, str]:
    """(PhaseDiagram, energy scale, label) of a reference table or entry list."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    if isinstance(reference, (str, Path)):
        ref = load_reference(reference)
        source = str(reference)
    elif isinstance(reference, pd.DataFrame):
        validate_reference(reference)
        ref, source = reference, "reference table"
    else:
        entries = list(reference)
        if not entries:
            raise ValueError("reference: no entries")
        return PhaseDiagram(entries), energy_scale, f"{len(entries)} reference entries"
    scale = str(ref["energy_scale"].astype(str).iloc[0])
    if energy_scale and energy_scale != scale:
        raise ValueError(
            f"energy scales differ: entries {energy_scale!r}, reference {scale!r} ({source})"
        )
    ok = ref[(ref["status"].astype(str) == "ok")]
    return phase_diagram(ok), scale, f"{len(ok)} phases of {source}"


def from_entries(
    entries: Sequence[Any],
    reference: str | Path | pd.DataFrame | Sequence[Any] | None = None,
    *,
    energy_scale: str = "",
) -> pd.DataFrame:
    """E_hull, formation energy and decomposition of pymatgen entries.

    Args:
        entries: pymatgen entries (``ComputedStructureEntry`` etc.); ``entry.energy`` (with
            corrections) is the total energy, eV.
        reference: reference table (path or DataFrame, docs/interfaces.md), a list of
            pymatgen entries, or None (the entries are their own hull).
        energy_scale: the entries' energy scale; when given, it must equal the reference
            table's ``energy_scale``.

    Returns:
        One row per entry, columns :data:`ENTRY_COLUMNS` (eV/atom; ``decomposition`` names
        the reference phases with amounts; ``reason`` says why E_hull is NaN).

    Raises:
        ValueError: a bad reference (missing column, no usable phase, mixed or different
            energy scales) or no entries.
    """
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    entries = list(entries)
    if not entries:
        raise ValueError("from_entries: no entries")
    if reference is None:
        pdg, scale, label = PhaseDiagram(entries), energy_scale, "the entries themselves"
    else:
        pdg, scale, label = _reference_diagram(reference, energy_scale)
    hull_els = {str(e) for e in pdg.elements}
    rows = []
    for k, entry in enumerate(entries):
        comp = entry.composition
        e_pa = float(entry.energy) / comp.num_atoms
        eh, ef, dec = candidate_ehull(pdg, comp.formula, e_pa)
        reason = ""
        if not math.isfinite(eh):
            outside = sorted({str(e) for e in comp.elements} - hull_els)
            reason = (
                f"elements outside the reference system: {outside}"
                if outside
                else "no finite energy"
            )
        rows.append(
            {
                "id": _entry_id(entry, k),
                "formula": comp.reduced_formula,
                "composition": comp.formula,
                "energy_per_atom": e_pa,
                "formation_energy_per_atom": ef,
                "e_above_hull": eh,
                "decomposition": dec,
                "energy_scale": scale,
                "reference": label,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=list(ENTRY_COLUMNS))


def table_to_entries(table: pd.DataFrame, source: str = "table") -> list[Any]:
    """pymatgen ``ComputedEntry`` objects from a table with id, composition, energy_per_atom.

    Rows with a ``status`` other than ``ok`` (e.g. failed relaxations) are skipped.
    """
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    missing = [c for c in ("id", "composition", "energy_per_atom") if c not in table.columns]
    if missing:
        raise ValueError(
            f"{source}: lacks column(s) {missing} (required: id, composition, energy_per_atom)"
        )
    if "status" in table.columns:
        table = table[table["status"].astype(str) == "ok"]
    out = []
    for i, c, e in zip(table["id"], table["composition"], table["energy_per_atom"], strict=True):
        comp = Composition(c)
        out.append(ComputedEntry(comp, float(e) * comp.num_atoms, entry_id=str(i)))
    return out


def load_entries(path: str | Path) -> list[Any]:
    """Entries from a file.

    * ``.json`` / ``.json.gz``: a JSON list of pymatgen entry dicts (``ComputedStructureEntry``,
      ``ComputedEntry``, ... as written by ``entry.as_dict()`` / monty's ``MontyEncoder``), or
      an object whose ``entries`` key holds such a list;
    * ``.h5``: an entry store with ``id``, ``composition``, ``energy_per_atom`` (e.g. the
      pipeline's ``relax/relaxed.h5``; rows whose ``status`` is not ``ok`` are skipped);
    * ``.csv``: a table with the same columns.

    Raises:
        FileNotFoundError / ValueError: naming the file and the problem.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"entries file {p} not found")
    name = p.name.lower()
    if name.endswith((".json", ".json.gz")):
        from monty.json import MontyDecoder

        opener = gzip.open if name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as fh:
            raw = json.load(fh)
        if isinstance(raw, dict):
            raw = raw.get("entries", None)
        if not isinstance(raw, list):
            raise ValueError(
                f"{p}: expected a JSON list of pymatgen entry dicts (or {{'entries': [...]}})"
            )
        entries = [MontyDecoder().process_decoded(d) for d in raw]
        bad = [
            k
            for k, e in enumerate(entries)
            if not (hasattr(e, "composition") and hasattr(e, "energy"))
        ]
        if bad:
            raise ValueError(f"{p}: items {bad[:5]} are not pymatgen entries (need @module/@class)")
        return entries
    if name.endswith(".h5"):
        from matdisco.store import read_entries

        return table_to_entries(read_entries(p), str(p))
    if name.endswith(".csv"):
        return table_to_entries(pd.read_csv(p, dtype={"id": str}), str(p))
    raise ValueError(f"{p}: unknown entries format (use .json, .json.gz, .h5 or .csv)")
