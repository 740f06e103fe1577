"""Entries from a folder of CIF files (an ICSD or COD export).

Every ``*.cif`` file (suffix matched case-insensitively) below the folder is parsed with
pymatgen's :class:`~pymatgen.io.cif.CifParser`, one data block at a time. A block becomes an
entry only when its structure is *ordered*; everything else is rejected with a reason, logged
(logger ``matdisco.data``) and counted, and the loader never raises for a bad file.

Rejection reasons (the ``reason`` column starts with the category):

``read_error``
    the file could not be read.
``parse_error``
    not a CIF (no ``data_`` block) or pymatgen could not build a structure from the block.
``no_structure``
    the file holds no block with a cell and atom sites.
``partial_occupancy``
    a site whose occupancies do not sum to 1 within ``occupancy_tolerance``, a site shared by
    several species, or a raw ``_atom_site_occupancy`` value away from 1 (checked on the raw
    values too, because pymatgen merges atoms that share a position). Such sites are never
    rounded to full occupancy.
``implicit_hydrogens``
    hydrogens given only as counts (``_atom_site_attached_hydrogens``, ``Wat``/``O-H``
    labels): the stored formula would lack them.
``unsupported_species``
    a site that is not a real element (a dummy species such as ``X``); D and T count as H.
``formula_mismatch``
    the cell's elements or element ratios differ (beyond 2 %) from ``_chemical_formula_sum``:
    typically hydrogens without positions, or atom labels that pymatgen misread (``HOh1``
    read as holmium), or symmetry it could not apply.
``non_integer_formula``
    the cell composition is not integral (a last guard; cannot happen for ordered cells).

Block ids: ``cif-<file stem>`` for files with one structural block, ``cif-<stem>-<i>`` (i = 1,
2, ... over the structural blocks) otherwise; ids are made unique by appending ``-2``, ``-3``...
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.data.base import REJECTED_COLUMNS, SourceResult, empty_entries
from matdisco.settings import DataCifDirSettings
from matdisco.store import ENTRY_COLUMNS, StructureArrays

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["REASONS", "load_cif_dir"]

logger = logging.getLogger("matdisco.data")

#: rejection categories, in the order the checks run
REASONS: tuple[str, ...] = (
    "read_error",
    "parse_error",
    "no_structure",
    "partial_occupancy",
    "implicit_hydrogens",
    "unsupported_species",
    "formula_mismatch",
    "non_integer_formula",
)

_DATA_RE = re.compile(r"^data_(\S*)", re.IGNORECASE)
#: hydrogen isotopes are stored as H (the store keeps atomic numbers only)
_ISOTOPES = {"D": "H", "T": "H"}
#: relative tolerance between the cell's element ratios and _chemical_formula_sum
_FORMULA_RTOL = 0.02


class _Reject(Exception):
    """Internal: a block is rejected for ``category`` with ``detail``."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail


def _split_blocks(text: str) -> list[tuple[str, str]]:
    """Split CIF text into ``(block name, block text)`` pairs.

    A line starting with ``data_`` opens a block unless it lies inside a semicolon-delimited
    text field. Text before the first block (comments) is dropped.
    """
    blocks: list[tuple[str, list[str]]] = []
    in_text_field = False
    for line in text.splitlines():
        if line.startswith(";"):
            in_text_field = not in_text_field
        elif not in_text_field:
            m = _DATA_RE.match(line)
            if m:
                blocks.append((m.group(1), []))
        if blocks:
            blocks[-1][1].append(line)
    return [(name, "\n".join(lines) + "\n") for name, lines in blocks]


def _is_structural(block_text: str) -> bool:
    """Whether a block has a cell and atom site coordinates (else it is e.g. a global block)."""
    low = block_text.lower()
    return "_cell_length_a" in low and "_atom_site_fract_x" in low


def _str2float(value: Any) -> float | None:
    """A CIF number without its standard uncertainty; None for '?', '.' and non-numbers."""
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if value is None:
        return None
    s = re.sub(r"\(.*\)?$", "", str(value).strip())
    if s in {"", "?", "."}:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _check_raw(block: dict[str, Any], tol: float) -> None:
    """Checks on the raw CIF items that pymatgen's parsed structure can hide."""
    labels = _as_list(block.get("_atom_site_label", []))
    occus = _as_list(block.get("_atom_site_occupancy", []))
    for i, raw in enumerate(occus):
        occu = _str2float(raw)
        if occu is None or occu == 0:
            # unknown -> full (CIF default); 0 -> the atom is absent (pymatgen skips it)
            continue
        if abs(occu - 1.0) > tol:
            label = labels[i] if i < len(labels) else f"#{i + 1}"
            raise _Reject(
                "partial_occupancy",
                f"atom site {label} has _atom_site_occupancy {raw} (tolerance {tol})",
            )
    attached = _as_list(block.get("_atom_site_attached_hydrogens", []))
    n_attached = sum(v for v in (_str2float(x) for x in attached) if v)
    if n_attached:
        raise _Reject(
            "implicit_hydrogens",
            f"{n_attached:g} hydrogens given only as _atom_site_attached_hydrogens",
        )


def _ordered_copy(structure: Structure, tol: float) -> Structure:
    """Check a parsed structure site by site and return a clean, ordered copy.

    Raises:
        _Reject: for partially occupied or mixed sites, implicit hydrogens, non-elements.
        Single-species sites within ``tol`` of full occupancy are stored fully occupied.
    """
    from pymatgen.core import Element, Structure

    if len(structure) == 0:
        raise _Reject("no_structure", "the block has no atom sites")
    implicit_h = structure.site_properties.get("implicit_hydrogens")
    if implicit_h is not None and any(implicit_h):
        raise _Reject("implicit_hydrogens", "sites carry implicit hydrogens (Wat/O-H labels)")
    species: list[Element] = []
    for i, site in enumerate(structure):
        comp = site.species
        label = getattr(site, "label", None) or f"site {i}"
        if len(comp) > 1:
            desc = ", ".join(f"{sp}:{occ:.3g}" for sp, occ in comp.items())
            raise _Reject("partial_occupancy", f"mixed-species site {label} ({desc})")
        ((sp, occ),) = comp.items()
        if abs(occ - 1.0) > tol:
            raise _Reject("partial_occupancy", f"site {label} ({sp}) has occupancy {occ:.4g}")
        symbol = getattr(sp, "symbol", None)
        z = getattr(sp, "Z", 0) or 0
        if not symbol or z <= 0 or not Element.is_valid_symbol(symbol):
            raise _Reject("unsupported_species", f"site {label} has species {sp!s}")
        species.append(Element(_ISOTOPES.get(symbol, symbol)))
    return Structure(structure.lattice, species, structure.frac_coords)


def _check_formula(structure: Structure, block: dict[str, Any], tol: float) -> str | None:
    """Compare the parsed cell with ``_chemical_formula_sum``; return a note or raise.

    A structure whose elements or element ratios differ from the formula the CIF declares
    is rejected: typically hydrogens without positions, or labels that pymatgen misread
    (e.g. ``HOh1`` read as holmium). A formula that cannot be read only gives a note.
    """
    amounts = structure.composition.get_el_amt_dict()
    bad = {el: n for el, n in amounts.items() if abs(n - round(n)) > tol}
    if bad:
        raise _Reject("non_integer_formula", f"cell composition {structure.composition} {bad}")
    declared = block.get("_chemical_formula_sum") or block.get("_chemical_formula_structural")
    if not declared or not isinstance(declared, str) or declared.strip() in {"?", "."}:
        return None
    from pymatgen.core import Composition

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cif_comp = Composition(declared.replace("'", "").replace('"', ""))
        cif_amounts = {el.symbol: float(n) for el, n in cif_comp.items()}
    except Exception:  # noqa: BLE001 -- an unreadable formula is only worth a note
        return f"cannot read _chemical_formula_sum {declared!r}; not compared"
    missing = sorted(set(cif_amounts) - set(amounts))
    if missing:
        raise _Reject(
            "formula_mismatch",
            f"{', '.join(missing)} in _chemical_formula_sum ({declared}) but on no site",
        )
    extra = sorted(set(amounts) - set(cif_amounts))
    if extra:
        raise _Reject(
            "formula_mismatch",
            f"{', '.join(extra)} on sites but not in _chemical_formula_sum ({declared})",
        )
    ratios = [amounts[el] / n for el, n in cif_amounts.items() if n > 0]
    if ratios and max(ratios) - min(ratios) > _FORMULA_RTOL * max(ratios):
        raise _Reject(
            "formula_mismatch",
            f"cell formula {structure.composition.reduced_formula} differs from "
            f"_chemical_formula_sum ({declared})",
        )
    return None


def _parse_block(text: str, tol: float) -> tuple[Structure, list[str], str | None]:
    """Parse one data block into an ordered structure (or raise :class:`_Reject`).

    Returns:
        The ordered structure, pymatgen's warnings, and a note when the declared formula
        could not be compared.
    """
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text, occupancy_tolerance=1.0 + tol, check_cif=False)
            raw = next(iter(parser.as_dict().values()), {})
        except Exception as exc:  # noqa: BLE001 -- any parser failure is a rejection
            raise _Reject("parse_error", f"CIF syntax not readable ({_describe(exc)})") from None
        _check_raw(raw, tol)
        try:
            structures = parser.parse_structures(primitive=False, check_occu=True, on_error="raise")
        except Exception as exc:  # noqa: BLE001
            msg = _one_line(exc)
            if "Invalid CIF file with no structures" in msg:
                raise _Reject("no_structure", "pymatgen found no structure in the block") from None
            if "exceeded tolerance" in msg:
                raise _Reject("partial_occupancy", msg) from None
            raise _Reject(
                "parse_error", f"pymatgen could not build a structure ({_describe(exc)})"
            ) from None
    notes = [_one_line(w.message) for w in caught]
    if any("Defaulting to P1" in n for n in notes):
        declared = _declared_space_group(raw)
        if declared is not None:
            raise _Reject(
                "parse_error",
                f"no symmetry operations and space group {declared!r} could not be applied",
            )
    if not structures:
        raise _Reject("no_structure", "pymatgen found no structure in the block")
    structure = _ordered_copy(structures[0], tol)
    return structure, notes, _check_formula(structure, raw, tol)


_SG_KEYS = (
    "_space_group_name_H-M_alt",
    "_symmetry_space_group_name_H-M",
    "_space_group_name_Hall",
    "_symmetry_space_group_name_Hall",
    "_space_group_IT_number",
    "_symmetry_Int_Tables_number",
)


def _declared_space_group(block: dict[str, Any]) -> str | None:
    """The space group a block declares, or None when it declares none or P1."""
    for key in _SG_KEYS:
        value = block.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, str):
            continue
        text = value.strip().strip("'\"").strip()
        if text in {"", "?", "."}:
            continue
        if text.replace(" ", "").upper() in {"P1", "1", "P1(NO.1)"}:
            return None
        return text
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: Any) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _read_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _find_cifs(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.suffix.lower() == ".cif" and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _unique_id(base: str, used: set[str]) -> str:
    ident, k = base, 2
    while ident in used:
        ident, k = f"{base}-{k}", k + 1
    used.add(ident)
    return ident


def load_cif_dir(settings: DataCifDirSettings | Mapping[str, Any]) -> SourceResult:
    """Load every ordered structure from a folder of CIF files.

    Args:
        settings: ``data.cif_dir`` (a mapping is read with
            :meth:`DataCifDirSettings.from_config`): ``path``, the folder searched
            recursively for ``*.cif`` (any case); ``experimental``, mark the entries as
            experimentally reported (``is_experimental`` 1, else 0; true for ICSD/COD
            exports); ``occupancy_tolerance``, a site counts as fully occupied when its
            occupancy is within this of 1 (such sites are stored as fully occupied), anything
            further away is rejected as partial occupancy.

    Returns:
        A :class:`~matdisco.data.base.SourceResult`: entries (``source`` "cif_dir", energies
        and band gap NaN), ordered structures, rejected (file, reason) rows and provenance
        (folder, file/entry/rejection counts, counts by reason).

    Raises:
        FileNotFoundError: ``path`` is not set or not a folder. Bad files never raise.
        ValueError: ``occupancy_tolerance`` outside [0, 0.5).
    """
    s = DataCifDirSettings.coerce(settings)
    experimental, occupancy_tolerance = s.experimental, s.occupancy_tolerance
    if s.path is None:
        raise FileNotFoundError("data.cif_dir.path: not set (a folder of CIF files is needed)")
    folder = Path(s.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.cif_dir.path: {folder} is not a folder")
    tol = float(occupancy_tolerance)
    if not 0 <= tol < 0.5 or math.isnan(tol):
        raise ValueError(
            f"data.cif_dir.occupancy_tolerance must be in [0, 0.5), got {occupancy_tolerance}"
        )

    files = _find_cifs(folder)
    rows: list[dict[str, Any]] = []
    structures: list[Structure] = []
    rejected: list[dict[str, str]] = []
    reasons: Counter[str] = Counter()
    used_ids: set[str] = set()
    n_warned = 0

    def reject(rel: str, category: str, detail: str) -> None:
        reason = f"{category}: {detail}"
        rejected.append({"file": rel, "reason": reason})
        reasons[category] += 1
        logger.warning("cif_dir: rejected %s -- %s", rel, reason)

    for file in files:
        rel = file.relative_to(folder).as_posix()
        try:
            data = file.read_bytes()
        except OSError as exc:
            reject(rel, "read_error", _one_line(exc))
            continue
        digest = hashlib.sha256(data).hexdigest()
        blocks = _split_blocks(_read_text(data))
        if not blocks:
            reject(rel, "parse_error", "no data_ block: not a CIF file")
            continue
        structural = [(name, text) for name, text in blocks if _is_structural(text)]
        if not structural:
            reject(
                rel,
                "no_structure",
                f"none of its {len(blocks)} data block(s) has a cell and fractional atom sites",
            )
            continue
        stem = re.sub(r"\s+", "_", file.stem)
        for i, (name, text) in enumerate(structural, start=1):
            where = rel if len(structural) == 1 else f"{rel} [block {i}: data_{name}]"
            try:
                structure, notes, formula_note = _parse_block(text, tol)
            except _Reject as rej:
                reject(
                    rel,
                    rej.category,
                    rej.detail
                    if len(structural) == 1
                    else f"block {i} (data_{name}): {rej.detail}",
                )
                continue
            except Exception as exc:  # noqa: BLE001 -- never crash on one file
                reject(rel, "parse_error", f"unexpected {type(exc).__name__}: {_one_line(exc)}")
                continue
            for note in notes:
                logger.debug("cif_dir: %s: %s", where, note)
            if formula_note:
                n_warned += 1
                logger.warning("cif_dir: %s accepted, but %s", where, formula_note)
            base_id = f"cif-{stem}" if len(structural) == 1 else f"cif-{stem}-{i}"
            comp = structure.composition
            rows.append(
                {
                    "id": _unique_id(base_id, used_ids),
                    "source": "cif_dir",
                    "formula": comp.reduced_formula,
                    "composition": comp.formula,
                    "chemsys": comp.chemical_system,
                    "nelements": len(comp.elements),
                    "nsites": len(structure),
                    "energy_per_atom": np.nan,
                    "formation_energy_per_atom": np.nan,
                    "e_above_hull": np.nan,
                    "e_above_hull_method": "",
                    "band_gap": np.nan,
                    "is_experimental": 1 if experimental else 0,
                    "has_partial_occupancy": False,
                    "duplicate_ids": "",
                    "source_file": rel,
                    "source_hash": digest,
                }
            )
            structures.append(structure)

    entries = pd.DataFrame(rows, columns=list(ENTRY_COLUMNS)) if rows else empty_entries()
    if rows:
        entries = entries.astype(
            {"nelements": np.int64, "nsites": np.int64, "is_experimental": np.int64}
        )
    rejected_df = pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS))
    provenance = {
        "source": "cif_dir",
        "folder": str(folder.resolve()),
        "n_files": len(files),
        "n_accepted": len(rows),
        "n_rejected": len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "n_formula_not_compared": n_warned,
        "experimental": bool(experimental),
        "occupancy_tolerance": tol,
        "parser": "pymatgen CifParser " + _pymatgen_version(),
    }
    logger.info(
        "cif_dir: %d files in %s -> %d entries, %d rejected %s",
        len(files),
        folder,
        len(rows),
        len(rejected),
        dict(reasons),
    )
    return SourceResult(
        entries, StructureArrays.from_structures(structures), rejected_df, provenance
    )


def _pymatgen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pymatgen")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
