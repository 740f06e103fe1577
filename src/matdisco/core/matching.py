"""One structure-matching service: dedupe and novelty with pymatgen's ``StructureMatcher``.

Used by the data stage (:mod:`matdisco.data.dedupe`), the candidate pool
(:mod:`matdisco.pool`), the GAN (:mod:`matdisco.generate.gan`) and the template generator.

Two structures *match* when all of these hold, cheapest first:

1. the same reduced formula (the grouping key; callers may pass their own formula labels);
2. neighbour fingerprints within ``fingerprint_tol`` in every component (optional pre-filter,
   see :func:`neighbour_stats`);
3. primitive cells of the same number of sites (a distorted superstructure is another
   polymorph: ``StructureMatcher`` without supercell attempts needs equal counts);
4. the same space-group number at spglib tolerance ``symprec`` (optional pre-filter). When
   spglib fails on a structure its space group is *unknown* (:data:`SPACEGROUP_UNKNOWN`,
   ``None``) and this pre-filter is skipped for every pair involving it: the structure is
   compared like one without a space-group pre-filter. This is the one fallback; it cannot
   hide a duplicate and it is deterministic (no bucket is invented for failures);
5. ``StructureMatcher(ltol, stol, angle_tol, primitive_cell=True, scale=True,
   attempt_supercell=False).fit`` on the reduced cells.

Each structure is reduced once (Niggli cell, primitive cell, Niggli cell, scaled to
1 Angstrom^3 per site, what ``StructureMatcher`` does on every call); pymatgen's slow
``get_primitive_structure`` is skipped when the cheap screen of :func:`primitive_size` proves
that the cell has no lattice translation. Reductions are lazy: structures that never pass the
pre-filters are never reduced.

Dedupe is leader clustering in input (preference) order: the first structure not yet
assigned becomes a representative and every later unassigned structure that matches it
directly joins its cluster. Novelty (:class:`StructureIndex`) returns the first structure of
a reference set, in reference order, that matches the query.

The module stays whole (~670 lines, over the ~600-line guide) on purpose: it is the project's
one definition of "the same structure", and its pre-filters, reductions, dedupe and novelty
index must agree with each other exactly; one file keeps them from drifting apart again.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from matdisco.store import StructureArrays

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "FP_NEIGHBOURS",
    "FP_RADIUS",
    "SPACEGROUP_UNKNOWN",
    "Clusters",
    "MatchSettings",
    "Prepared",
    "StructureComparer",
    "StructureIndex",
    "dedupe",
    "neighbour_stats",
    "primitive_size",
    "reduced_formulas",
    "spacegroup_number",
]

#: number of nearest neighbours per site in the fingerprint
FP_NEIGHBOURS = 8
#: neighbour search radius in units of (V/N)^(1/3) (a sphere holding ~24 atoms on average)
FP_RADIUS = 1.8
#: the space group of a structure on which spglib fails: compatible with every space group
SPACEGROUP_UNKNOWN = None
#: site tolerance of pymatgen's get_primitive_structure (its default), Angstrom
_PRIMITIVE_TOL = 0.25


@dataclass(frozen=True)
class MatchSettings:
    """Tolerances of the structure comparison.

    Attributes:
        ltol: StructureMatcher fractional length tolerance.
        stol: StructureMatcher site tolerance, fraction of ``(V/N)^(1/3)``.
        angle_tol: StructureMatcher angle tolerance, degrees.
        fingerprint_tol: pre-filter: only pairs whose neighbour fingerprints differ by at most
            this much in every component (units of ``(V/N)^(1/3)``) are compared; None: off.
        symprec: pre-filter: only pairs with the same space group at this spglib tolerance
            (Angstrom, on the reduced unscaled cells) are compared; None: off. Structures on
            which spglib fails are compared with every structure (see module docstring).
        primitive_tol: site tolerance of the primitive-cell reduction (pymatgen
            ``get_primitive_structure``), Angstrom; 0.25 is pymatgen's and StructureMatcher's.
    """

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    fingerprint_tol: float | None = 0.15
    symprec: float | None = None
    primitive_tol: float = 0.25

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> MatchSettings:
        """Settings from a config mapping (unknown keys ignored, missing or null keys default)."""
        cfg = cfg or {}
        return cls(
            **{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg and cfg[k] is not None}
        )

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for summaries)."""
        return asdict(self)


# --------------------------------------------------------------------------------------
# neighbour statistics: minimum distance and fingerprint in one neighbour search
# --------------------------------------------------------------------------------------


def _neighbours_one(
    lattice: np.ndarray, frac: np.ndarray, z: np.ndarray
) -> tuple[float, np.ndarray]:
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
        cart,
        cart,
        r=cutoff,
        pbc=np.array([1, 1, 1], dtype=np.int64),
        lattice=np.ascontiguousarray(lattice, dtype=float),
        tol=1e-8,
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

    The fingerprint of a structure is, per element (sorted by atomic number), the mean over
    that element's sites of the sorted distances to the ``FP_NEIGHBOURS`` nearest neighbours,
    in units of ``(V / N)^(1/3)``: invariant to the cell choice (supercells, Niggli
    reduction), site order, rotation and uniform volume scaling, like
    ``StructureMatcher(scale=True)``.

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
        mins[i], fp = _neighbours_one(
            arrays.lattice[i], arrays.frac_coords[a:b], arrays.species_z[a:b]
        )
        fps.append(fp)
    return mins, fps


@cache
def _reduce_formula(key: tuple[tuple[int, int], ...]) -> str:
    from pymatgen.core import Composition, Element

    return Composition({Element.from_Z(z): c for z, c in key}).reduced_formula


def reduced_formulas(arrays: StructureArrays) -> list[str]:
    """Reduced formula of every structure (from its species; cached per element-count key)."""
    out = []
    for i in range(len(arrays)):
        zs = arrays.species_z[arrays.site_offset[i] : arrays.site_offset[i + 1]]
        u, c = np.unique(zs, return_counts=True)
        out.append(_reduce_formula(tuple(zip(u.tolist(), c.tolist(), strict=True))))
    return out


# --------------------------------------------------------------------------------------
# one structure: reduction, space group
# --------------------------------------------------------------------------------------


def spacegroup_number(structure: Structure, symprec: float) -> int | None:
    """Space-group number at spglib tolerance ``symprec``; :data:`SPACEGROUP_UNKNOWN` on failure."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:  # noqa: BLE001 - spglib failure: the documented fallback
        return SPACEGROUP_UNKNOWN


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
            d = (
                g[None, :, None, :] + shifts[sel, None, None, :] - g[None, None, :, :]
            )  # (m, n_g, n_g, 3)
            d = np.abs(d - np.round(d))
            ok[sel] = (d <= ftol).all(axis=-1).any(axis=2).all(axis=1)
        if not ok.any():
            break
    points = 1 + int(ok.sum())
    return n // points if n % points == 0 else n


@dataclass
class Prepared:
    """One structure ready for comparison.

    Attributes:
        reduced: Niggli-primitive-Niggli cell scaled to 1 Angstrom^3 per site, sites grouped
            by element.
        spacegroup: space-group number of the unscaled reduced cell (None: not requested or
            spglib failed).
    """

    reduced: Structure
    spacegroup: int | None


def prepare(
    lattice: np.ndarray,
    frac: np.ndarray,
    z: np.ndarray,
    symprec: float | None = None,
    primitive_tol: float = _PRIMITIVE_TOL,
) -> Prepared:
    """Reduce one structure as StructureMatcher does (once) and find its space group.

    Args:
        lattice: lattice rows, Angstrom.
        frac: fractional coordinates.
        z: atomic numbers.
        symprec: spglib tolerance for the space group (None: not computed).
        primitive_tol: site tolerance of the primitive-cell reduction, Angstrom.
    """
    from pymatgen.core import Lattice, Structure

    def niggli(lat: np.ndarray, fc: np.ndarray, zs: np.ndarray):
        red = Lattice(lat).get_niggli_reduced_lattice()
        f = red.get_fractional_coords(fc @ lat)
        f -= np.floor(f)
        order = np.argsort(zs, kind="stable")
        return red, f[order], zs[order]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latt, frac, z = niggli(np.asarray(lattice, float), np.asarray(frac, float), np.asarray(z))
        if _primitive_size(np.asarray(latt.abc), frac, z, 2 * primitive_tol) < len(
            z
        ):  # maybe not primitive
            prim = Structure(latt, z.tolist(), frac).get_primitive_structure(
                tolerance=primitive_tol
            )
            zp = np.array([site.specie.Z for site in prim])
            latt, frac, z = niggli(prim.lattice.matrix, prim.frac_coords, zp)
        sg = None
        if symprec:
            sg = spacegroup_number(Structure(latt, z.tolist(), frac), symprec)
    factor = (len(z) / latt.volume) ** (1.0 / 3.0)
    return Prepared(Structure(Lattice(latt.matrix * factor), z.tolist(), frac), sg)


def _raw(structures: Any, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice rows, fractional coordinates, atomic numbers) of item ``i``, unbuilt if possible."""
    if isinstance(structures, StructureArrays):
        a, b = structures.site_offset[i], structures.site_offset[i + 1]
        return (
            structures.lattice[i],
            structures.frac_coords[a:b],
            structures.species_z[a:b].astype(np.int64),
        )
    raw = getattr(structures, "raw", None)
    if raw is not None:
        return raw(i)
    s = structures[i]
    return s.lattice.matrix, s.frac_coords, np.array([site.specie.Z for site in s])


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


# --------------------------------------------------------------------------------------
# pairwise comparison
# --------------------------------------------------------------------------------------


class StructureComparer:
    """Pairwise matching of indexed structures, each prepared (reduced, space group) once.

    The comparison is pymatgen's ``StructureMatcher.fit`` minus the per-call copies
    (agreement checked in tests/test_pool.py). Pre-filters 3 and 4 of the module docstring
    are applied here; formula and fingerprint pre-filters are the caller's (see
    :func:`dedupe`, :class:`StructureIndex`).

    Args:
        structures: the structures to compare: a sequence of pymatgen structures, a
            :class:`~matdisco.store.StructureArrays`, or any sequence with a ``raw(i)`` method
            (built lazily when the sequence builds lazily). It may grow; see :meth:`forget`.
        settings: tolerances.
    """

    def __init__(self, structures: Any, settings: MatchSettings | None = None) -> None:
        self.structures = structures
        self.settings = settings or MatchSettings()
        self.matcher = _prepared_matcher_class()(
            ltol=self.settings.ltol,
            stol=self.settings.stol,
            angle_tol=self.settings.angle_tol,
            primitive_cell=False,
            scale=True,
            attempt_supercell=False,
        )
        self._cache: dict[int, Prepared] = {}
        self.n_fits = 0

    def prepared(self, i: int) -> Prepared:
        """Structure ``i`` prepared for comparison (cached)."""
        if i not in self._cache:
            self._cache[i] = prepare(
                *_raw(self.structures, i), self.settings.symprec, self.settings.primitive_tol
            )
        return self._cache[i]

    def reduced(self, i: int) -> Structure:
        """Structure ``i`` reduced (primitive, Niggli) and scaled to 1 Angstrom^3 per site."""
        return self.prepared(i).reduced

    def forget(self, i: int) -> None:
        """Drop the cached preparation of structure ``i`` (when its slot is reused)."""
        self._cache.pop(i, None)

    def fit(self, a: Prepared, b: Prepared) -> bool:
        """Whether two prepared structures match (size and space-group checks included)."""
        if len(a.reduced) != len(b.reduced):
            return False
        if a.spacegroup is not None and b.spacegroup is not None and a.spacegroup != b.spacegroup:
            return False
        self.n_fits += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return bool(self.matcher.fit(a.reduced, b.reduced, skip_structure_reduction=True))
            except Exception:  # noqa: BLE001 - degenerate cells: treat as no match
                return False

    def match(self, i: int, j: int) -> bool:
        """Whether structures ``i`` and ``j`` match."""
        return self.fit(self.prepared(i), self.prepared(j))


# --------------------------------------------------------------------------------------
# dedupe
# --------------------------------------------------------------------------------------


@dataclass
class Clusters:
    """Result of :func:`dedupe`.

    Attributes:
        rep: ``rep[i]`` is the index of the representative of structure ``i`` (itself for
            representatives); it doubles as the cluster label.
        n_fits: number of StructureMatcher fits made.
    """

    rep: np.ndarray
    n_fits: int = 0

    @property
    def representatives(self) -> np.ndarray:
        """Indices of the representatives, ascending."""
        return np.flatnonzero(self.rep == np.arange(len(self.rep)))

    def groups(self) -> list[list[int]]:
        """Member indices per cluster (representative first), clusters in representative order."""
        out: dict[int, list[int]] = {int(r): [] for r in self.representatives}
        for i, r in enumerate(self.rep):
            out[int(r)].append(i)
        return list(out.values())


def _as_arrays(structures: StructureArrays | Sequence[Structure]) -> StructureArrays:
    if isinstance(structures, StructureArrays):
        return structures
    return StructureArrays.from_structures(list(structures))


def _close_pairs(fps: Sequence[np.ndarray], tol: float) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose fingerprints differ by at most ``tol`` in every component."""
    from scipy.spatial import cKDTree

    if len(fps) < 2:
        return []
    pairs = cKDTree(np.vstack(fps)).query_pairs(r=tol, p=np.inf, output_type="ndarray")
    if not len(pairs):
        return []
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return [(int(a), int(b)) for a, b in pairs]


def _dedupe_one_formula(
    args: tuple[StructureArrays, list[np.ndarray] | None, MatchSettings],
) -> tuple[np.ndarray, int]:
    """Leader clustering of structures sharing one formula (local indices, fits)."""
    arrays, fps, settings = args
    n = len(arrays)
    rep = np.arange(n)
    if n < 2:
        return rep, 0
    if settings.fingerprint_tol is not None:
        if fps is None:
            fps = neighbour_stats(arrays)[1]
        neighbours: dict[int, list[int]] = {}
        for a, b in _close_pairs(fps, settings.fingerprint_tol):
            neighbours.setdefault(a, []).append(b)
    else:
        neighbours = {i: list(range(i + 1, n)) for i in range(n)}
    if not neighbours:
        return rep, 0
    comparer = StructureComparer(arrays, settings)
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


def dedupe(
    structures: StructureArrays | Sequence[Structure],
    settings: MatchSettings | None = None,
    *,
    formulas: Sequence[str] | None = None,
    fingerprints: Sequence[np.ndarray] | None = None,
    workers: int = 1,
) -> Clusters:
    """Cluster matching structures; the first of each cluster (input order) represents it.

    Args:
        structures: the structures, best first (pymatgen structures or StructureArrays).
        settings: tolerances and pre-filters (default :class:`MatchSettings`).
        formulas: grouping label per structure (default: reduced formula of its species).
        fingerprints: neighbour fingerprints (:func:`neighbour_stats`), computed when needed
            and not given.
        workers: processes comparing formula groups in parallel (used when > 1 and there
            are more than 8 groups with two or more members).

    Returns:
        The clusters (representative index per structure, fits made).
    """
    settings = settings or MatchSettings()
    arrays = _as_arrays(structures)
    n = len(arrays)
    labels = list(formulas) if formulas is not None else reduced_formulas(arrays)
    if len(labels) != n:
        raise ValueError(f"dedupe: {len(labels)} formulas for {n} structures")
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(labels):
        groups.setdefault(str(f), []).append(i)
    multi = [rows for rows in groups.values() if len(rows) > 1]
    jobs = [
        (
            arrays.take(rows),
            [fingerprints[i] for i in rows] if fingerprints is not None else None,
            settings,
        )
        for rows in multi
    ]
    if workers > 1 and len(jobs) > 8:
        by_size = sorted(range(len(jobs)), key=lambda k: -len(multi[k]))  # largest first: balanced
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = dict(
                zip(
                    by_size,
                    pool.map(_dedupe_one_formula, [jobs[k] for k in by_size], chunksize=4),
                    strict=True,
                )
            )
        results = [done[k] for k in range(len(jobs))]
    else:
        results = [_dedupe_one_formula(j) for j in jobs]
    rep = np.arange(n)
    fits = 0
    for rows, (local, f) in zip(multi, results, strict=True):
        rows_a = np.asarray(rows)
        rep[rows_a] = rows_a[local]
        fits += f
    return Clusters(rep=rep, n_fits=fits)


# --------------------------------------------------------------------------------------
# novelty: matching against a reference set
# --------------------------------------------------------------------------------------


class StructureIndex:
    """A reference set of structures to look queries up in (novelty checks).

    Args:
        structures: the reference structures (pymatgen structures or StructureArrays); their
            order is the preference order of matches.
        settings: tolerances and pre-filters.
        ids: an id per reference structure (default: its position).
        formulas: grouping label per reference structure (default: reduced formula).
        fingerprints: reference fingerprints (computed when needed and not given).
    """

    def __init__(
        self,
        structures: StructureArrays | Sequence[Structure],
        settings: MatchSettings | None = None,
        *,
        ids: Sequence[Any] | None = None,
        formulas: Sequence[str] | None = None,
        fingerprints: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.settings = settings or MatchSettings()
        self.arrays = _as_arrays(structures)
        n = len(self.arrays)
        self.ids = list(ids) if ids is not None else list(range(n))
        labels = list(formulas) if formulas is not None else reduced_formulas(self.arrays)
        if len(self.ids) != n or len(labels) != n:
            raise ValueError(
                f"StructureIndex: {len(self.ids)} ids, {len(labels)} formulas for {n} structures"
            )
        rows: dict[str, list[int]] = {}
        for i, f in enumerate(labels):
            rows.setdefault(str(f), []).append(i)
        self._rows = {f: np.asarray(r, dtype=np.int64) for f, r in rows.items()}
        self._fps = list(fingerprints) if fingerprints is not None else None
        self._trees: dict[str, Any] = {}
        self.comparer = StructureComparer(self.arrays, self.settings)

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def n_fits(self) -> int:
        """StructureMatcher fits made so far."""
        return self.comparer.n_fits

    def _candidates(self, formula: str, fp: np.ndarray | None) -> np.ndarray:
        rows = self._rows.get(formula)
        if rows is None or self.settings.fingerprint_tol is None:
            return rows if rows is not None else np.zeros(0, dtype=np.int64)
        if formula not in self._trees:
            from scipy.spatial import cKDTree

            if self._fps is None:
                self._fps = neighbour_stats(self.arrays)[1]
            self._trees[formula] = cKDTree(np.vstack([self._fps[i] for i in rows]))
        hits = self._trees[formula].query_ball_point(fp, r=self.settings.fingerprint_tol, p=np.inf)
        return rows[np.sort(np.asarray(hits, dtype=np.int64))]

    def find_matches(
        self,
        structures: StructureArrays | Sequence[Structure],
        *,
        formulas: Sequence[str] | None = None,
        fingerprints: Sequence[np.ndarray] | None = None,
    ) -> list[Any]:
        """Id of the first matching reference structure per query (None: novel).

        Args:
            structures: the queries.
            formulas: their grouping labels (default: reduced formulas).
            fingerprints: their fingerprints (computed when needed and not given).
        """
        arrays = _as_arrays(structures)
        labels = list(formulas) if formulas is not None else reduced_formulas(arrays)
        if self.settings.fingerprint_tol is not None and fingerprints is None:
            fingerprints = neighbour_stats(arrays)[1]
        out: list[Any] = []
        for q in range(len(arrays)):
            fp = fingerprints[q] if fingerprints is not None else None
            cand = self._candidates(str(labels[q]), fp)
            hit = None
            if len(cand):
                query = prepare(
                    *_raw(arrays, q), self.settings.symprec, self.settings.primitive_tol
                )
                for k in cand:
                    if self.comparer.fit(query, self.comparer.prepared(int(k))):
                        hit = self.ids[int(k)]
                        break
            out.append(hit)
        return out

    def find_match(self, structure: Structure) -> Any:
        """Id of the first matching reference structure, or None when ``structure`` is novel."""
        return self.find_matches([structure])[0]
