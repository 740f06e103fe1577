"""The one definition of "known" used by every table that says novel or unreported.

A **composition** (reduced formula) is known when any of these sources lists it; every match is
named (``;``-joined, in this order):

* ``icsd``: an entry of the store flagged experimental (``is_experimental == 1``, ICSD-linked);
* ``store``: any entry of the structure store (hypothetical ones included);
* ``labels``: the store's formula-level E_hull label table (``/labels``; for the bundled data the
  MP ``mp_e_hull`` labels, which know compounds absent from the 2018 structure set, e.g.
  MgMn2O4);
* ``user``: files of known formulas (``known.formulas_file``: one formula a line, or a CSV
  (.gz) with a ``formula`` column; the default adds the bundled Bartel et al. (2020) MP formula
  set, which knows e.g. MgMn2O3, absent from the store and the CrabNet labels).
* ``loop``: the closed loop's knowledge base (:mod:`matdisco.loop`, ``loop.use``): formulas of
  candidates relaxed by earlier runs (any energy scale: known-ness uses no energies). The
  workflow passes it as a ``loop`` entry of the ``known`` slice
  (:func:`matdisco.loop.workflow_view`; not a config key of ``known``).

A **structure** is known when the shared comparison service :mod:`matdisco.core.matching`
(pymatgen ``StructureMatcher`` on primitive, volume-scaled cells, with the pool's tolerances and
fingerprint pre-filter, :func:`matdisco.pool.match_settings`) matches it with any stored
structure of the same reduced formula, a knowledge-base structure of an earlier run
(``loop (<run>)``), or a reference structure built for a known formula that has no stored one
(:mod:`matdisco.relax.reference`, origin ``template:<parent>``); :func:`match_known_structure`
says which.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from matdisco.core.matching import MatchSettings, StructureIndex
from matdisco.settings import PoolSettings

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "SOURCES",
    "KnownCompositions",
    "reduced_formula",
    "read_formulas_file",
    "match_known_structure",
    "store_structures_by_formula",
    "annotate_compositions",
    "annotate_structures",
]

log = logging.getLogger(__name__)

SOURCES = ("icsd", "store", "labels", "user", "loop")


@functools.lru_cache(maxsize=65536)
def reduced_formula(formula: str) -> str:
    """pymatgen's reduced formula of ``formula`` (e.g. ``Mg2Mn4O8`` -> ``MgMn2O4``).

    Raises:
        ValueError: when the formula cannot be parsed (the message names it).
    """
    from pymatgen.core import Composition

    try:
        return Composition(str(formula)).reduced_formula
    except Exception as err:  # noqa: BLE001 - pymatgen raises several types
        raise ValueError(f"cannot parse formula {formula!r}: {err}") from err


def read_formulas_file(path: str | Path) -> list[str]:
    """Formulas listed in a user file: a CSV with a ``formula`` column, else one per line.

    Blank lines and lines starting with ``#`` are ignored.

    Raises:
        FileNotFoundError: when the file does not exist (the message names the key and path).
        ValueError: when a line is not a formula.
    """
    import gzip

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"known.formulas_file: {p} does not exist")
    if p.suffix == ".gz":
        with gzip.open(p, "rt", encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = p.read_text(encoding="utf-8")
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if lines and "formula" in [c.strip() for c in lines[0].split(",")]:
        raw = (
            pd.read_csv(p, comment="#", usecols=["formula"])["formula"]
            .dropna()
            .astype(str)
            .tolist()
        )
    else:
        raw = [ln.split(",")[0].strip() for ln in lines]
    out = []
    for f in raw:
        try:
            out.append(reduced_formula(f))
        except ValueError as err:
            raise ValueError(f"known.formulas_file {p}: {err}") from err
    return out


@dataclass
class KnownCompositions:
    """Reduced formulas known per source (:data:`SOURCES`).

    Attributes:
        sources: source name -> reduced formulas.
        loop_records: the knowledge-base records behind the ``loop`` source
            (:data:`matdisco.loop.RECORD_FIELDS`; empty without ``loop.use``).
    """

    sources: dict[str, set[str]] = field(default_factory=dict)
    loop_records: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    _loop_cache: dict[str, list[Any]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def loop_structures(self, formula: str) -> list[tuple[str, str, Structure]]:
        """(record id, source run, Structure) of the knowledge-base records of ``formula``."""
        from matdisco.loop import record_structure

        if self.loop_records is None or not len(self.loop_records):
            return []
        cache = self._loop_cache
        f = _safe_reduce(formula)
        if f not in cache:
            recs = self.loop_records[self.loop_records["formula"] == f]
            cache[f] = [
                (str(r["id"]), str(r["run_name"]), record_structure(r)) for _, r in recs.iterrows()
            ]
        return cache[f]

    @classmethod
    def from_store(
        cls,
        store_path: str | Path,
        *,
        labels: bool = True,
        formulas_file: str | Path | Sequence[str | Path] | None = None,
        loop: Mapping[str, Any] | None = None,
    ) -> KnownCompositions:
        """Known compositions from the entry store, its label table and an optional user file.

        Args:
            store_path: the entry store (``data/entries.h5``).
            labels: use the store's formula-level label table as a source.
            formulas_file: optional file(s) of further known formulas (``known.formulas_file``;
                plain or .gz).
            loop: the knowledge-base entry of :func:`matdisco.loop.workflow_view` (None: no
                ``loop`` source).
        """
        from matdisco.store import read_entries, read_labels

        entries = read_entries(store_path, ["formula", "is_experimental"])
        formulas = entries["formula"].astype(str).map(reduced_formula)
        exp = pd.to_numeric(entries["is_experimental"], errors="coerce").fillna(0).to_numpy() == 1
        src: dict[str, set[str]] = {
            "icsd": set(formulas[exp]),
            "store": set(formulas),
            "labels": set(),
            "user": set(),
            "loop": set(),
        }
        if labels:
            lab = read_labels(store_path)
            if len(lab):
                src["labels"] = {_safe_reduce(f) for f in lab["formula"].astype(str)} - {""}
        files = (
            [formulas_file] if isinstance(formulas_file, (str, Path)) else list(formulas_file or [])
        )
        for f in files:
            src["user"] |= set(read_formulas_file(f))
        loop_records = None
        if loop:
            from matdisco.loop import read_loop_records

            loop_records = read_loop_records(loop)
            src["loop"] = set(loop_records["formula"].astype(str))
        kc = cls(src, loop_records)
        log.info(
            "known compositions: %s",
            ", ".join(f"{k} {len(v)}" for k, v in kc.sources.items()),
        )
        return kc

    @classmethod
    def from_config(
        cls, store_path: str | Path, cfg: Mapping[str, Any] | None
    ) -> KnownCompositions:
        """From the ``known`` config section (``labels``, ``formulas_file``), plus the ``loop``
        entry the workflow adds when ``loop.use`` is on (:func:`matdisco.loop.workflow_view`)."""
        cfg = dict(cfg or {})
        return cls.from_store(
            store_path,
            labels=bool(cfg.get("labels", True)),
            formulas_file=cfg.get("formulas_file"),
            loop=cfg.get("loop"),
        )

    def source_of(self, formula: str) -> str:
        """``;``-joined names of the sources that know ``formula`` ('' = unknown to all)."""
        f = _safe_reduce(formula)
        return ";".join(s for s in SOURCES if f and f in self.sources.get(s, ()))

    def is_known(self, formula: str) -> bool:
        """Whether any source knows ``formula``."""
        return bool(self.source_of(formula))

    def all_formulas(self) -> set[str]:
        """Every known reduced formula."""
        return set().union(*self.sources.values()) if self.sources else set()


def _safe_reduce(formula: str) -> str:
    try:
        return reduced_formula(formula)
    except ValueError:
        return ""


def annotate_compositions(
    table: pd.DataFrame, known: KnownCompositions, formula_col: str = "formula"
) -> pd.DataFrame:
    """Add ``known_composition_source`` and set ``novel_composition`` from it (in place,
    returned)."""
    src = [known.source_of(f) for f in table[formula_col].astype(str)]
    table["known_composition_source"] = src
    table["novel_composition"] = [s == "" for s in src]
    return table


def _match_settings(match: PoolSettings | Mapping[str, Any] | None) -> MatchSettings:
    """The pool's comparison tolerances (``pool`` section; a mapping is coerced, None: defaults)."""
    from matdisco.pool import match_settings

    return match_settings(PoolSettings.coerce(match))


def _reference_index(
    references: Iterable[tuple[str, Structure]], formula: str, settings: MatchSettings
) -> StructureIndex | None:
    """Index of the references of one reduced formula (None when there are none)."""
    refs = [(str(rid), r) for rid, r in references if r.composition.reduced_formula == formula]
    if not refs:
        return None
    return StructureIndex(
        [r for _, r in refs],
        settings,
        ids=[rid for rid, _ in refs],
        formulas=[formula] * len(refs),
    )


def _first_match(index: StructureIndex | None, structure: Structure, formula: str) -> str:
    if index is None:
        return ""
    hit = index.find_matches([structure], formulas=[formula])[0]
    return "" if hit is None else str(hit)


def match_known_structure(
    structure: Structure,
    references: Iterable[tuple[str, Structure]],
    match: MatchSettings | None = None,
) -> str:
    """Id of the first reference structure that matches ``structure`` ('' = none).

    Only references of the same reduced formula are compared, with the shared comparison
    service :mod:`matdisco.core.matching` (``match``: tolerances and pre-filters; default: the
    pool's, :func:`matdisco.pool.match_settings`).
    """
    f = structure.composition.reduced_formula
    settings = match if match is not None else _match_settings(None)
    return _first_match(_reference_index(references, f, settings), structure, f)


def store_structures_by_formula(
    store_path: str | Path, formulas: Sequence[str]
) -> dict[str, list[tuple[str, Structure]]]:
    """Stored structures (id, Structure) of each of ``formulas`` (reduced)."""
    import numpy as np

    from matdisco.store import read_entries, read_structure_arrays

    want = {_safe_reduce(f) for f in formulas} - {""}
    entries = read_entries(store_path, ["id", "formula"])
    red = entries["formula"].astype(str).map(_safe_reduce).to_numpy()
    rows = np.flatnonzero(np.isin(red, list(want)))
    out: dict[str, list[tuple[str, Structure]]] = {f: [] for f in want}
    if not len(rows):
        return out
    structures = read_structure_arrays(store_path, rows).structures()
    for r, s in zip(rows, structures, strict=True):
        out[str(red[r])].append((str(entries["id"].iloc[r]), s))
    return out


def annotate_structures(
    table: pd.DataFrame,
    structures: Sequence[Structure | None],
    *,
    store_path: str | Path,
    known: KnownCompositions,
    pool_known_id: Mapping[str, str] | None = None,
    reference: Sequence[tuple[str, str, Structure]] = (),
    match: PoolSettings | Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Known-ness of relaxed candidates: composition and structure, each with its source.

    A candidate's structure is known when (first that applies):

    * the pool matched it, as generated, with a stored structure (``store (as generated)``);
    * its relaxed structure matches a stored structure of its formula (``store (relaxed)``), a
      knowledge-base structure of an earlier run (``loop (<run>)``, id ``kb-...``), or a
      reference phase of that formula recomputed with the backend (``reference (relaxed)``);
    * it matches a reference stand-in built from a template for a known formula without a
      stored structure (``reference template stand-in``): it is then the same guess as the
      reference phase, not a new structure.

    Args:
        table: candidates (``id``, ``formula``); a row of ``structures`` each (None = no
            relaxed structure: only the pool match is used).
        structures: relaxed structures.
        store_path: the entry store.
        known: the known compositions.
        pool_known_id: id -> the pool's ``known_id`` (match as generated).
        reference: (id, origin, relaxed structure) of the reference phases.
        match: the ``pool`` section, whose tolerances and fingerprint pre-filter the
            comparisons use (a mapping is read with :meth:`PoolSettings.coerce`).

    Returns:
        ``table`` with ``known_composition_source``, ``novel_composition``,
        ``known_structure_id``, ``known_structure_source`` and ``novel_structure`` set.
    """
    annotate_compositions(table, known)
    settings = _match_settings(match)
    formulas = table["formula"].astype(str).map(_safe_reduce).tolist()
    stored = store_structures_by_formula(store_path, formulas)
    stored_index: dict[tuple[str, str], StructureIndex | None] = {}
    refs: dict[str, list[tuple[str, str, Structure]]] = {}
    for rid, origin, s in reference:
        refs.setdefault(s.composition.reduced_formula, []).append((rid, origin, s))
    pool_known_id = dict(pool_known_id or {})
    kid, ksrc = [], []
    for cid, f, s in zip(table["id"].astype(str), formulas, structures, strict=True):
        pk = str(pool_known_id.get(cid, "") or "")
        if pk and pk != "nan":
            kid.append(pk), ksrc.append("store (as generated)")
            continue
        hit, src = "", ""
        if s is not None:
            fs = s.composition.reduced_formula  # compared with references of this formula
            if (f, fs) not in stored_index:
                stored_index[f, fs] = _reference_index(stored.get(f, []), fs, settings)
            hit = _first_match(stored_index[f, fs], s, fs)
            src = "store (relaxed)" if hit else ""
            if not hit:
                loop_refs = known.loop_structures(fs)
                if loop_refs:
                    hit = match_known_structure(s, [(i, r) for i, _, r in loop_refs], settings)
                    runs = {i: run for i, run, _ in loop_refs}
                    src = f"loop ({runs[hit]})" if hit else ""
            if not hit:
                for rid, origin, r in refs.get(f, []):
                    if match_known_structure(s, [(rid, r)], settings):
                        hit = rid
                        src = (
                            "reference template stand-in"
                            if str(origin).startswith("template")
                            else f"loop ({str(origin)[5:].split('/')[0]})"
                            if str(origin).startswith("loop:")
                            else "reference (relaxed)"
                        )
                        break
        kid.append(hit), ksrc.append(src)
    table["known_structure_id"] = kid
    table["known_structure_source"] = ksrc
    table["novel_structure"] = [k == "" for k in kid]
    return table
