"""Typed settings of the target chemical space and the data sources.

Drafted from workflow/schemas/config.schema.yaml by scripts/gen_settings.py; the schema
and these classes are kept in agreement by tests/test_settings.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from matdisco.settings._base import SettingsBase

__all__ = [
    "TargetSettings",
    "DataBundledSettings",
    "DataMPSettings",
    "DataCifDirSettings",
    "DataDedupeSettings",
    "DataSettings",
    "KnownSettings",
    "LoopSettings",
]


@dataclass(frozen=True)
class TargetSettings(SettingsBase):
    """``target``: the chemical space in which new compounds are proposed.

    Attributes:
        elements: element symbols of the target chemical system
        oxidation_states: allowed inclusive oxidation-state range [min, max] per element
        max_atoms: largest number of atoms in a candidate formula unit / cell
    """

    section: ClassVar[str] = "target"

    elements: tuple[str, ...] = ("Mg", "Mn", "O")
    oxidation_states: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_atoms: int = 20


@dataclass(frozen=True)
class DataBundledSettings(SettingsBase):
    """Settings of config section ``data.bundled``.

    Attributes:
        structures: HDF5 file of the bundled MP structures (built by scripts/build_resources.py)
        labels: formula-level MP E_hull labels (csv.gz)
        chemsys_filter: keep only entries whose chemical system is one of these or a subsystem of
            one (e.g. [Mg-Mn-O]); null keeps every entry
    """

    section: ClassVar[str] = "data.bundled"

    structures: str = "resources/bundled/mp2018_structures.h5"
    labels: str = "resources/bundled/formula_ehull_labels.csv.gz"
    chemsys_filter: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataMPSettings(SettingsBase):
    """Settings of config section ``data.mp``.

    Attributes:
        chemsys: chemical systems to query; every subsystem is queried as well
        cache_dir: raw responses are cached in <cache_dir>/<snapshot>/ and never downloaded again
        snapshot: date folder of the cache to use (YYYY-MM-DD); null = the newest complete cached
            snapshot, else today (downloads)
        endpoint: API base URL; null = mp-api's default. Tests point it at a local server
        max_retries: retries with exponential backoff on HTTP 429/5xx and connection errors
        backoff_s: first backoff delay in seconds (doubles each retry)
        timeout_s: HTTP timeout per request, seconds
    """

    section: ClassVar[str] = "data.mp"

    chemsys: tuple[str, ...] = ("Mg-Mn-O",)
    cache_dir: str = "resources/mp"
    snapshot: str | None = None
    endpoint: str | None = None
    max_retries: int = 4
    backoff_s: float = 2.0
    timeout_s: float = 60.0


@dataclass(frozen=True)
class DataCifDirSettings(SettingsBase):
    """Settings of config section ``data.cif_dir``.

    Attributes:
        path: folder of CIF files (an ICSD or COD export), searched recursively
        experimental: mark the entries as experimentally reported (true for ICSD/COD exports)
        occupancy_tolerance: a site whose occupancies sum within this of 1 counts as fully occupied
    """

    section: ClassVar[str] = "data.cif_dir"

    path: str | None = None
    experimental: bool = True
    occupancy_tolerance: float = 0.01


@dataclass(frozen=True)
class DataDedupeSettings(SettingsBase):
    """``data.dedupe``: dedupe by reduced formula plus pymatgen StructureMatcher within a source.

    Attributes:
        enabled: switch dedupe on/off
        ltol: StructureMatcher fractional length tolerance
        stol: StructureMatcher site tolerance (fraction of (V/n)^(1/3))
        angle_tol: StructureMatcher angle tolerance
        symprec: pre-filter: only structures with the same space group at this spglib tolerance are
            compared (fast); null compares every pair with equal reduced-cell size (slow for
            polymorph-rich formulas, finds distorted duplicates too)
    """

    section: ClassVar[str] = "data.dedupe"

    enabled: bool = True
    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    symprec: float | None = 0.1


@dataclass(frozen=True)
class DataSettings(SettingsBase):
    """Settings of config section ``data``.

    Attributes:
        source: where entries come from
        bundled: ``data.bundled``
        mp: ``data.mp``
        cif_dir: ``data.cif_dir``
        dedupe: dedupe by reduced formula plus pymatgen StructureMatcher within a source
    """

    section: ClassVar[str] = "data"

    source: Literal["bundled", "mp", "cif_dir"] = "bundled"
    bundled: DataBundledSettings = field(default_factory=DataBundledSettings)
    mp: DataMPSettings = field(default_factory=DataMPSettings)
    cif_dir: DataCifDirSettings = field(default_factory=DataCifDirSettings)
    dedupe: DataDedupeSettings = field(default_factory=DataDedupeSettings)


@dataclass(frozen=True)
class KnownSettings(SettingsBase):
    """``known``: the one definition of known (:mod:`matdisco.known`).

    Attributes:
        labels: the store's formula-level E_hull label table counts as a source of known
            compositions
        formulas_file: file(s) of further known formulas (one a line, or CSV(.gz) with a
            formula column); None = none
    """

    section: ClassVar[str] = "known"

    labels: bool = True
    formulas_file: str | tuple[str, ...] | None = None


@dataclass(frozen=True)
class LoopSettings(SettingsBase):
    """``loop``: the closed loop's knowledge base (:mod:`matdisco.loop`).

    Attributes:
        enabled: append this run's relaxed candidates (relax/ehull.h5) to the knowledge base
        use: read the knowledge base (records appended by other runs) for the known set, the
            reference hull and the classifier labels
        path: knowledge-base folder (index.json + one immutable vNNNN.jsonl per append)
        max_e_above_hull: append only candidates with E_hull <= this, eV/atom; None = every
            relaxed one
        labels: with use, knowledge-base E_hull labels join the classifier's training-only
            extra labels (formulas without an MP or extra label only)
    """

    section: ClassVar[str] = "loop"

    enabled: bool = False
    use: bool = False
    path: str = "knowledge"
    max_e_above_hull: float | None = None
    labels: bool = True
