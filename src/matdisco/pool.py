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

Duplicate detection scales to ~10^4 candidates with a cheap pre-filter: structures are only
compared with ``StructureMatcher`` when they have the same reduced formula and their
*neighbour fingerprints* lie within ``fingerprint_tol`` of each other (Chebyshev distance;
a k-d tree finds the pairs, so there are no bucket boundaries to fall across). The
fingerprint of a structure is, per element (sorted by atomic number), the mean over that
element's sites of the sorted distances to the ``FP_NEIGHBOURS`` nearest neighbours, in
units of ``(V / N)^(1/3)``: invariant to the cell choice (supercells, Niggli reduction),
site order, rotation and uniform volume scaling, like ``StructureMatcher(scale=True)``.

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
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.store import StructureArrays, atomic_write, read_entries, read_structure_arrays, write_store

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "MatchSettings",
    "POOL_COLUMNS",
    "neighbour_stats",
    "StructureComparer",
    "find_duplicates",
    "primitive_size",
    "match_known",
    "charge_neutral",
    "load_candidates",
    "flag_candidates",
    "pool_metrics",
    "build_pool",
    "fill_entry_columns",
    "write_cifs",
]

log = logging.getLogger("matdisco.pool")

#: number of nearest neighbours per site in the fingerprint
FP_NEIGHBOURS = 8
#: neighbour search radius in units of (V/N)^(1/3) (a sphere holding ~24 atoms on average)
FP_RADIUS = 1.8

#: extra columns of the pool (besides the store's entry columns), with their meaning
POOL_COLUMNS: dict[str, str] = {
    "generator": "generator that proposed the structure (template, wgan_gp, ...)",
    "parent": "template entry id (templates) or '' ",
    "target_formula": "composition the generator was asked for",
    "novel_composition": "no source knows the reduced formula (matdisco.known: store, ICSD, labels, user file)",
    "known_composition_source": "sources that know the formula (icsd;store;labels;user), '' = none",
    "novel_structure": "no StructureMatcher match among the known structures of that formula",
    "known_id": "id of the matching known entry ('' when novel_structure)",
    "charge_neutral": "a charge-neutral oxidation-state assignment exists",
    "min_distance": "shortest interatomic distance, Angstrom (periodic images included)",
    "valid": "min_distance >= the configured threshold",
    "duplicate_ids": "';'-joined ids of candidates merged into this one",
}


@dataclass(frozen=True)
class MatchSettings:
    """Tolerances of the structure comparison.

    Attributes:
        ltol: StructureMatcher fractional length tolerance.
        stol: StructureMatcher site tolerance, fraction of ``(V/N)^(1/3)``.
        angle_tol: StructureMatcher angle tolerance, degrees.
        fingerprint_tol: pre-filter: only pairs whose neighbour fingerprints differ by at most
            this much in every component (units of ``(V/N)^(1/3)``) are compared.
    """

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    fingerprint_tol: float = 0.15

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> MatchSettings:
        """Settings from a config mapping (unknown keys ignored, missing keys default)."""
        cfg = cfg or {}
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg and cfg[k] is not None})


# --------------------------------------------------------------------------------------
# neighbour statistics: minimum distance and fingerprint in one neighbour search
# --------------------------------------------------------------------------------------


def _neighbours_one(lattice: np.ndarray, frac: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
    """Minimum distance (Angstrom) and fingerprint of one structure."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    n = len(z)
    vol = abs(float(np.linalg.det(lattice)))
    elements = np.unique(z)
    if n == 0 or not np.isfinite(vol) or vol < 1e-8:
        return 0.0, np.full(len(elements) * FP_NEIGHBOURS, FP_RADIUS)
    scale = (vol / n) ** (1.0 / 3.0)
    cart = np.ascontiguousarray(frac @ lattice, dtype=float)
    cutoff = FP_RADIUS * scale
    i1, i2, offsets, dist = find_points_in_spheres(
        cart, cart, r=cutoff, pbc=np.array([1, 1, 1], dtype=np.int64),
        lattice=np.ascontiguousarray(lattice, dtype=float), tol=1e-8,
    )
    self_pair = (i1 == i2) & (np.abs(offsets).sum(axis=1) == 0)
    i1, dist = i1[~self_pair], dist[~self_pair]
    min_d = float(dist.min()) if len(dist) else float(cutoff)
    # k nearest distances per site, padded with the search radius
    knn = np.full((n, FP_NEIGHBOURS), FP_RADIUS)
    if len(dist):
        order = np.lexsort((dist, i1))
        i1s, ds = i1[order], dist[order] / scale
        starts = np.searchsorted(i1s, np.arange(n))
        rank = np.arange(len(i1s)) - starts[i1s]
        keep = rank < FP_NEIGHBOURS
        knn[i1s[keep], rank[keep]] = ds[keep]
    fp = np.concatenate([knn[z == el].mean(axis=0) for el in elements])
    return min_d, fp


def neighbour_stats(arrays: StructureArrays) -> tuple[np.ndarray, list[np.ndarray]]:
    """Minimum interatomic distance and neighbour fingerprint of every structure.

    Args:
        arrays: the structures.

    Returns:
        (min_distance in Angstrom, shape (N,); fingerprints, one 1-D array per structure of
        length ``n_elements * FP_NEIGHBOURS``).
    """
    mins = np.zeros(len(arrays))
    fps: list[np.ndarray] = []
    for i in range(len(arrays)):
        a, b = arrays.site_offset[i], arrays.site_offset[i + 1]
        mins[i], fp = _neighbours_one(arrays.lattice[i], arrays.frac_coords[a:b], arrays.species_z[a:b])
        fps.append(fp)
    return mins, fps


def _reduced_formulas(arrays: StructureArrays) -> list[str]:
    """Reduced formula of every structure (from its species; cached per element-count key)."""
    from pymatgen.core import Composition, Element

    @lru_cache(maxsize=None)
    def reduce(key: tuple[tuple[int, int], ...]) -> str:
        return Composition({Element.from_Z(z): c for z, c in key}).reduced_formula

    out = []
    for i in range(len(arrays)):
        zs = arrays.species_z[arrays.site_offset[i] : arrays.site_offset[i + 1]]
        u, c = np.unique(zs, return_counts=True)
        out.append(reduce(tuple(zip(u.tolist(), c.tolist(), strict=True))))
    return out


# --------------------------------------------------------------------------------------
# structure comparison
# --------------------------------------------------------------------------------------


def _raw(structures: Sequence, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice rows, fractional coordinates, atomic numbers) of item ``i``, unbuilt if possible."""
    raw = getattr(structures, "raw", None)
    if raw is not None:
        return raw(i)
    s = structures[i]
    return s.lattice.matrix, s.frac_coords, np.array([site.specie.Z for site in s])


def _reduce(lattice: np.ndarray, frac: np.ndarray, z: np.ndarray) -> Structure:
    """The structure as StructureMatcher reduces it: Niggli cell, primitive cell, Niggli cell,
    sites grouped by element, and scaled to 1 Angstrom^3 per site (what
    ``StructureMatcher(scale=True)`` does on every call; done once here).

    The primitive reduction (pymatgen ``get_primitive_structure``, slow) is skipped when the
    screen of :func:`primitive_size` proves that the cell has no lattice translation.
    """
    from pymatgen.core import Lattice, Structure

    def niggli(lat: np.ndarray, fc: np.ndarray, zs: np.ndarray):
        red = Lattice(lat).get_niggli_reduced_lattice()
        f = red.get_fractional_coords(fc @ lat)
        f -= np.floor(f)
        order = np.argsort(zs, kind="stable")
        return red, f[order], zs[order]

    latt, frac, z = niggli(np.asarray(lattice, float), np.asarray(frac, float), np.asarray(z))
    if _primitive_size(np.asarray(latt.abc), frac, z, 2 * _PRIMITIVE_TOL) < len(z):  # maybe not primitive
        prim = Structure(latt, z.tolist(), frac).get_primitive_structure(tolerance=_PRIMITIVE_TOL)
        zp = np.array([site.specie.Z for site in prim])
        latt, frac, z = niggli(prim.lattice.matrix, prim.frac_coords, zp)
    factor = (len(z) / latt.volume) ** (1.0 / 3.0)
    return Structure(Lattice(latt.matrix * factor), z.tolist(), frac)


def _prepared_matcher_class():
    """A StructureMatcher that trusts its inputs to be reduced and scaled (no copies)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    class _PreparedMatcher(StructureMatcher):
        def _process_species(self, structures):  # no ignored species: no copies needed
            return list(structures)

        def _preprocess(self, struct1, struct2, niggli=True, skip_structure_reduction=False):
            ratio = (struct2.volume / struct1.volume) ** (1 / 6)
            if abs(ratio - 1.0) > 1e-9:  # not scaled alike: let pymatgen copy and rescale
                return super()._preprocess(struct1, struct2, niggli, skip_structure_reduction=True)
            return struct1, struct2, 1, True

    return _PreparedMatcher


class StructureComparer:
    """``StructureMatcher(primitive_cell=True, scale=True).fit`` with each structure reduced once.

    Each structure is reduced once, as StructureMatcher does on every call: Niggli cell, then
    the primitive cell (pymatgen ``get_primitive_structure``, skipped when the cheap screen of
    :func:`primitive_size` proves that the cell has no lattice translation), scaled to
    1 Angstrom^3 per site. Structures whose primitive cells differ in size never match (a
    distorted superstructure is another polymorph, as in the store's dedupe). The comparison
    itself is pymatgen's, minus the per-call copies (agreement checked in tests/test_pool.py).

    Args:
        structures: the structures to compare (indexed by position; built lazily if the
            sequence builds them lazily).
        settings: tolerances.
    """

    def __init__(self, structures: Sequence[Structure], settings: MatchSettings) -> None:
        self.structures = structures
        self.settings = settings
        self.matcher = _prepared_matcher_class()(
            ltol=settings.ltol,
            stol=settings.stol,
            angle_tol=settings.angle_tol,
            primitive_cell=False,
            scale=True,
            attempt_supercell=False,
        )
        self._cache: dict[int, Structure] = {}
        self.n_fits = 0

    def reduced(self, i: int) -> Structure:
        """Structure ``i`` reduced (primitive, Niggli) and scaled to 1 Angstrom^3 per site."""
        if i not in self._cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._cache[i] = _reduce(*_raw(self.structures, i))
        return self._cache[i]

    def forget(self, i: int) -> None:
        """Drop the cached reduction of structure ``i`` (when its slot is reused)."""
        self._cache.pop(i, None)

    def match(self, i: int, j: int) -> bool:
        """Whether structures ``i`` and ``j`` match."""
        a, b = self.reduced(i), self.reduced(j)
        if len(a) != len(b):
            return False
        self.n_fits += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return bool(self.matcher.fit(a, b, skip_structure_reduction=True))
            except Exception:  # noqa: BLE001 - degenerate cells: treat as no match
                return False


#: site tolerance of pymatgen's get_primitive_structure (its default), Angstrom
_PRIMITIVE_TOL = 0.25


def primitive_size(structure: Structure, tol: float = _PRIMITIVE_TOL) -> int:
    """Sites per lattice point: ``len(structure)`` over the number of lattice translations found.

    A candidate translation is a vector from one site of the least frequent element to
    another; it is accepted when it maps every site onto a site of the same element within
    ``tol`` Angstrom *along each cell axis* (|delta f_k| * |a_k| <= tol, the metric of
    pymatgen's ``get_primitive_structure``). With ``tol`` twice pymatgen's tolerance this is a
    cheap screen: when it finds no translation, pymatgen would not find one either.

    Args:
        structure: an ordered structure.
        tol: per-axis site tolerance, Angstrom.

    Returns:
        The number of sites per lattice point (``len(structure)`` when none is found).
    """
    z = np.array([site.specie.Z for site in structure])
    return _primitive_size(np.asarray(structure.lattice.abc), structure.frac_coords, z, tol)


def _primitive_size(abc: np.ndarray, frac: np.ndarray, z: np.ndarray, tol: float) -> int:
    """:func:`primitive_size` on arrays (cell lengths, fractional coordinates, atomic numbers)."""
    n = len(z)
    if n < 2:
        return n
    elements, counts = np.unique(z, return_counts=True)
    if counts.min() == 1:
        return n
    ftol = tol / abc
    rare = np.flatnonzero(z == elements[np.argmin(counts)])
    shifts = frac[rare[1:]] - frac[rare[0]]  # candidate translations, (m, 3)
    ok = np.ones(len(shifts), dtype=bool)
    for el in elements:
        g = frac[z == el]
        step = max(1, 2_000_000 // (len(g) ** 2))  # bounded memory for large cells
        for a in range(0, len(shifts), step):
            sel = np.flatnonzero(ok[a : a + step]) + a
            if not len(sel):
                continue
            d = g[None, :, None, :] + shifts[sel, None, None, :] - g[None, None, :, :]  # (m, n_g, n_g, 3)
            d = np.abs(d - np.round(d))
            ok[sel] = (d <= ftol).all(axis=-1).any(axis=2).all(axis=1)
        if not ok.any():
            break
    points = 1 + int(ok.sum())
    return n // points if n % points == 0 else n


def _close_pairs(fps: Sequence[np.ndarray], tol: float) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose fingerprints differ by at most ``tol`` in every component."""
    from scipy.spatial import cKDTree

    if len(fps) < 2:
        return []
    mat = np.vstack(fps)
    pairs = cKDTree(mat).query_pairs(r=tol, p=np.inf, output_type="ndarray")
    if not len(pairs):
        return []
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return [(int(a), int(b)) for a, b in pairs]


def find_duplicates(
    structures: Sequence[Structure],
    fingerprints: Sequence[np.ndarray],
    settings: MatchSettings,
) -> tuple[np.ndarray, int]:
    """Representative of every structure (all of one reduced formula, in preference order).

    Args:
        structures: structures of one reduced formula, best first.
        fingerprints: their neighbour fingerprints (:func:`neighbour_stats`).
        settings: tolerances.

    Returns:
        (``rep`` with ``rep[i]`` the index of the representative of structure ``i``, itself
        for representatives; number of StructureMatcher fits made).
    """
    n = len(structures)
    rep = np.arange(n)
    pairs = _close_pairs(fingerprints, settings.fingerprint_tol)
    if not pairs:
        return rep, 0
    neighbours: dict[int, list[int]] = {}
    for a, b in pairs:
        neighbours.setdefault(a, []).append(b)
    comparer = StructureComparer(structures, settings)
    assigned = np.zeros(n, dtype=bool)
    for i in range(n):
        if assigned[i]:
            continue
        assigned[i] = True
        for j in neighbours.get(i, []):
            if not assigned[j] and comparer.match(i, j):
                rep[j] = i
                assigned[j] = True
    return rep, comparer.n_fits


class _Chain:
    """Two sequences seen as one (indexing only; nothing is copied or built)."""

    def __init__(self, first: Sequence, second: Sequence) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, i: int):
        n = len(self.first)
        return self.first[i] if i < n else self.second[i - n]

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unbuilt arrays of item ``i`` (see :func:`_raw`)."""
        n = len(self.first)
        return _raw(self.first, i) if i < n else _raw(self.second, i - n)


def match_known(
    candidates: Sequence[Structure],
    candidate_fps: Sequence[np.ndarray],
    known: Sequence[Structure],
    known_fps: Sequence[np.ndarray],
    settings: MatchSettings,
) -> tuple[list[int], int]:
    """For each candidate, the index of the first matching known structure (-1: none).

    All structures have the same reduced formula. Known structures are tried in the given
    order among those within the fingerprint tolerance.

    Returns:
        (match index per candidate, number of StructureMatcher fits made).
    """
    from scipy.spatial import cKDTree

    out = [-1] * len(candidates)
    if not len(candidates) or not len(known):
        return out, 0
    tree = cKDTree(np.vstack(known_fps))
    close = tree.query_ball_point(np.vstack(candidate_fps), r=settings.fingerprint_tol, p=np.inf)
    comparer = StructureComparer(_Chain(candidates, known), settings)
    nc = len(candidates)
    for i, hits in enumerate(close):
        for k in sorted(hits):
            if comparer.match(i, nc + k):
                out[i] = k
                break
    return out, comparer.n_fits


# --------------------------------------------------------------------------------------
# composition checks
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def charge_neutral(formula: str, method: str = "smact") -> bool:
    """Whether a composition admits a charge-neutral set of oxidation states.

    Args:
        formula: a formula pymatgen can parse.
        method: ``smact`` (SMACT's ``smact_validity`` with its default ICSD-derived
            oxidation states, mixed valence allowed (Mn3O4, Fe3O4 are neutral; CDVAE's
            check does not allow it), no Pauling electronegativity test; single elements and
            all-metal compositions count as neutral) or ``pymatgen`` (at least one
            ``Composition.oxi_state_guesses`` solution).

    Returns:
        True when a neutral assignment exists.
    """
    from pymatgen.core import Composition

    comp = Composition(formula)
    if len(comp.elements) == 1:
        return True
    if method == "smact":
        from smact.screening import smact_validity

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ok = smact_validity(comp, use_pauling_test=False, include_alloys=True, mixed_valence=True)
                return bool(ok)
            except Exception:  # noqa: BLE001 - elements SMACT does not know
                pass
    try:
        return len(comp.oxi_state_guesses(max_sites=-50)) > 0
    except Exception:  # noqa: BLE001
        return False


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
            df["generator"] = df["source"] if "source" in df.columns and len(df) else Path(p).parent.name
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


class _LazyStructures:
    """Structures of a StructureArrays, built on first access (most never are)."""

    def __init__(self, arrays: StructureArrays) -> None:
        self.arrays = arrays
        self._built: dict[int, Structure] = {}

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> Structure:
        if i not in self._built:
            self._built[i] = self.arrays.structure(i)
        return self._built[i]

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lattice, fractional coordinates, atomic numbers) of structure ``i``, unbuilt."""
        a, b = self.arrays.site_offset[i], self.arrays.site_offset[i + 1]
        z = self.arrays.species_z[a:b].astype(np.int64)
        return self.arrays.lattice[i], self.arrays.frac_coords[a:b], z


def _group_job(args: tuple) -> tuple[np.ndarray, np.ndarray, list[int], int]:
    """One formula: fingerprints, dedupe, and matching against its known structures.

    Returns:
        (min distances, representative index per candidate, known-structure index per
        candidate (-1: none), StructureMatcher fits).
    """
    cand_arrays, known_arrays, settings = args
    mins, fps = neighbour_stats(cand_arrays)
    structs = _LazyStructures(cand_arrays)
    rep, fits = find_duplicates(structs, fps, settings)
    reps = np.flatnonzero(rep == np.arange(len(rep)))
    known_match = [-1] * len(rep)
    if known_arrays is not None and len(known_arrays):
        known_fps = neighbour_stats(known_arrays)[1]
        matched, kfits = match_known(
            _LazyStructures(cand_arrays.take(reps)),
            [fps[i] for i in reps],
            _LazyStructures(known_arrays),
            known_fps,
            settings,
        )
        fits += kfits
        for i, m in zip(reps, matched, strict=True):
            known_match[int(i)] = m
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
    formulas = _reduced_formulas(arrays)
    known_set = set(known_entries["formula"].astype(str))
    by_formula: dict[str, list[int]] = {}
    for i, f in enumerate(formulas):
        by_formula.setdefault(f, []).append(i)
    # known structures of the candidates' formulas only
    kgroups = known_entries.groupby(known_entries["formula"].astype(str)).indices
    known_rows = {f: np.asarray(kgroups[f]) for f in by_formula if f in kgroups}
    keys = sorted(by_formula, key=lambda f: -len(by_formula[f]))  # largest first: balanced
    jobs = [
        (arrays.take(by_formula[f]), known_arrays.take(known_rows[f]) if f in known_rows else None, settings)
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
            "valid_unique_novel": round(float((first_valid & first["novel_structure"]).sum()) / n, 4),
            "pool_share": round(float((first["representative"] == first["id"]).mean()), 4),
        }

    per = {str(g): rates(df) for g, df in flagged.groupby("generator", sort=True)} if len(flagged) else {}
    return {"overall": rates(flagged), "per_generator": per}


def build_pool(
    candidate_paths: Sequence[str | Path],
    store_path: str | Path,
    *,
    out_store: str | Path,
    out_csv: str | Path,
    out_metrics: str | Path,
    out_cif_dir: str | Path | None = None,
    settings: dict[str, Any] | None = None,
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
        settings: the ``pool`` config section (ltol, stol, angle_tol, fingerprint_tol,
            min_distance, charge_method, drop_invalid, drop_known, write_cifs).
        workers: processes for the structure comparisons.
        known: the ``known`` config section (:mod:`matdisco.known`: sources of known
            compositions; sets ``novel_composition`` and ``known_composition_source``).

    Returns:
        The metrics dictionary (also written to ``out_metrics``).
    """
    settings = dict(settings or {})
    known_cfg = dict(known or {})  # `known` is reused below for the store's entries
    match = MatchSettings.from_config(settings)
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
        min_distance=float(settings.get("min_distance", 0.5)),
        charge_method=str(settings.get("charge_method", "smact")),
        workers=workers,
    )
    # novel_composition: the one definition of known (matdisco.known), with its source
    from matdisco.known import KnownCompositions, annotate_compositions

    annotate_compositions(flagged, KnownCompositions.from_config(store_path, known_cfg))
    metrics = pool_metrics(flagged)
    keep = flagged["representative"] == flagged["id"]
    # merged duplicates' ids go to their representative
    merged = flagged.loc[~keep]
    dups = merged.groupby("representative")["id"].agg(";".join) if len(merged) else pd.Series(dtype=str)
    pool = flagged.loc[keep].copy()
    prior = pool["duplicate_ids"].astype(str)
    extra = [str(dups.get(i, "")) for i in pool["id"]]
    pool["duplicate_ids"] = [";".join(x for x in (a, b) if x) for a, b in zip(prior, extra, strict=True)]
    dropped = {"duplicates": int((~keep).sum())}
    if settings.get("drop_invalid"):
        bad = ~(pool["valid"] & pool["charge_neutral"])
        dropped["invalid"] = int(bad.sum())
        pool = pool.loc[~bad]
    if settings.get("drop_known"):
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
            "settings": settings,
            "summary": summary,
        },
    )
    with atomic_write(out_csv, suffix=".csv") as tmp:
        pool.to_csv(tmp, index=False)
    if out_cif_dir is not None:  # the folder always exists; empty when write_cifs is false
        ids = pool["id"].tolist() if settings.get("write_cifs", True) else []
        write_cifs(ids, pool_arrays.take(np.arange(len(ids))), out_cif_dir)
    metrics.update(
        {
            "pool_size": int(len(pool)),
            "dropped": dropped,
            "settings": {**asdict(match), "min_distance": float(settings.get("min_distance", 0.5))},
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

