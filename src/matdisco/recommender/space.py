"""The composition space of the recommender: elements in canonical order x ratio grid.

:class:`TernarySpace` indexes the cells of the tensor of ternary compositions, :func:`ratio_grid`
enumerates the reduced integer ratios, :func:`known_formulas` picks the store entries that count
as known, and :func:`_sample_unknown` draws uniform samples of the unknown cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from matdisco.core.composition import integer_composition, normalize_formula
from matdisco.settings import RecommenderSettings

__all__ = [
    "ChargeBalance",
    "ELEMENT_ORDERS",
    "KNOWN_SOURCES",
    "TernarySpace",
    "known_formulas",
    "ratio_grid",
]

ELEMENT_ORDERS = ("electronegativity", "mendeleev")
KNOWN_SOURCES = ("experimental", "all")


def ratio_grid(max_atoms: int, n_components: int = 3) -> np.ndarray:
    """All reduced ordered integer ratios with every amount >= 1 and at most ``max_atoms`` atoms.

    Args:
        max_atoms: largest sum of the amounts (atoms per reduced formula unit).
        n_components: number of elements.

    Returns:
        ``(L, n_components)`` int array, sorted by total atoms then lexicographically; each row
        has greatest common divisor 1.
    """
    if max_atoms < n_components:
        return np.zeros((0, n_components), dtype=np.int64)
    rows: list[tuple[int, ...]] = []

    def rec(prefix: tuple[int, ...], left: int) -> None:
        k = n_components - len(prefix)
        if k == 1:
            for a in range(1, left + 1):
                rows.append((*prefix, a))
            return
        for a in range(1, left - (k - 1) + 1):
            rec((*prefix, a), left - a)

    rec((), max_atoms)
    rows = [r for r in rows if math.gcd(*r) == 1]
    rows.sort(key=lambda r: (sum(r), r))
    return np.asarray(rows, dtype=np.int64).reshape(-1, n_components)


def _order_key(symbol: str, order: str) -> tuple[float, int]:
    from pymatgen.core import Element

    el = Element(symbol)
    if order == "electronegativity":
        x = el.X
        value = float(x) if x is not None and not math.isnan(x) else 10.0  # noble gases last
    elif order == "mendeleev":
        value = float(el.mendeleev_no or 200)
    else:
        raise ValueError(f"unknown element order {order!r} (allowed: {', '.join(ELEMENT_ORDERS)})")
    return value, int(el.Z)


@dataclass
class TernarySpace:
    """Index of the ternary composition tensor: elements in canonical order x ratio grid.

    A cell ``(i, j, k, l)`` with ``i < j < k`` is the composition
    ``elements[i]_a elements[j]_b elements[k]_c`` with ``(a, b, c) = ratios[l]``. Systems
    (``i < j < k``) are numbered lexicographically; the flat index of a cell is
    ``system * n_ratios + l``.
    """

    elements: tuple[str, ...]
    ratios: np.ndarray
    element_order: str = "electronegativity"
    max_atoms: int = 20
    _sys_id: np.ndarray = field(init=False, repr=False)
    _sys_ijk: np.ndarray = field(init=False, repr=False)
    _ratio_index: dict[tuple[int, ...], int] = field(init=False, repr=False)
    _el_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.elements)
        self.ratios = np.asarray(self.ratios, dtype=np.int64).reshape(-1, 3)
        self._el_index = {e: i for i, e in enumerate(self.elements)}
        self._ratio_index = {tuple(int(x) for x in r): q for q, r in enumerate(self.ratios)}
        ijk = [(i, j, k) for i in range(n) for j in range(i + 1, n) for k in range(j + 1, n)]
        self._sys_ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
        sys_id = np.full((n, n, n), -1, dtype=np.int64)
        if len(ijk):
            sys_id[self._sys_ijk[:, 0], self._sys_ijk[:, 1], self._sys_ijk[:, 2]] = np.arange(
                len(ijk)
            )
        self._sys_id = sys_id

    @classmethod
    def build(
        cls, elements: Iterable[str], max_atoms: int = 20, element_order: str = "electronegativity"
    ) -> TernarySpace:
        """Space over the given elements (sorted into canonical order) and the ratio grid."""
        els = sorted(set(elements), key=lambda e: _order_key(e, element_order))
        return cls(tuple(els), ratio_grid(max_atoms, 3), element_order, max_atoms)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Tensor shape (n_elements, n_elements, n_elements, n_ratios)."""
        n = len(self.elements)
        return (n, n, n, len(self.ratios))

    @property
    def n_systems(self) -> int:
        """Number of ternary systems (element triples)."""
        return len(self._sys_ijk)

    @property
    def n_cells(self) -> int:
        """Number of cells (systems x ratios)."""
        return self.n_systems * len(self.ratios)

    def system_ids(self, i: int) -> tuple[int, int]:
        """Flat system ids ``[start, stop)`` of the systems whose first element is ``i``."""
        n = len(self.elements)
        before = sum((n - a - 1) * (n - a - 2) // 2 for a in range(i))
        return before, before + (n - i - 1) * (n - i - 2) // 2

    def cell(self, formula: str) -> tuple[int, int, int, int] | None:
        """The cell of a ternary formula, or ``None`` if it is not in this space."""
        comp = integer_composition(formula)
        if comp is None or len(comp) != 3:
            return None
        try:
            idx = sorted((self._el_index[e], n) for e, n in comp.items())
        except KeyError:
            return None
        q = self._ratio_index.get(tuple(n for _, n in idx))
        if q is None:
            return None
        return idx[0][0], idx[1][0], idx[2][0], q

    def cells(self, formulas: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cells of many formulas: ``(cells (m, 4), positions in formulas (m,))`` of those in the
        space."""
        out, pos = [], []
        for p, f in enumerate(formulas):
            c = self.cell(f)
            if c is not None:
                out.append(c)
                pos.append(p)
        return np.asarray(out, dtype=np.int64).reshape(-1, 4), np.asarray(pos, dtype=np.int64)

    def flat(self, cells: np.ndarray) -> np.ndarray:
        """Flat cell index of ``(m, 4)`` cells."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
        sys = self._sys_id[cells[:, 0], cells[:, 1], cells[:, 2]]
        if (sys < 0).any():
            raise ValueError("cells must have i < j < k")
        return sys * len(self.ratios) + cells[:, 3]

    def unflat(self, flat: np.ndarray) -> np.ndarray:
        """Cells ``(m, 4)`` of flat indices."""
        flat = np.asarray(flat, dtype=np.int64)
        sys, q = np.divmod(flat, len(self.ratios))
        return np.column_stack([self._sys_ijk[sys], q])

    def formula_strings(self, cells: np.ndarray) -> list[str]:
        """Plain formulas ``A{a}B{b}C{c}`` of ``(m, 4)`` cells (fast; not pymatgen-normalised)."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
        el, r = self.elements, self.ratios
        return [
            f"{el[i]}{r[q, 0]}{el[j]}{r[q, 1]}{el[k]}{r[q, 2]}" for i, j, k, q in cells.tolist()
        ]

    def formula(self, cell: Sequence[int]) -> str:
        """Reduced formula (pymatgen) of a cell."""
        i, j, k, q = (int(x) for x in cell)
        a, b, c = (int(x) for x in self.ratios[q])
        return normalize_formula({self.elements[i]: a, self.elements[j]: b, self.elements[k]: c})


def known_formulas(entries: pd.DataFrame, known: str = "experimental") -> list[str]:
    """Distinct reduced formulas counted as known.

    Args:
        entries: store entries (columns formula, is_experimental).
        known: ``"experimental"`` (is_experimental == 1) or ``"all"`` (every entry).
    """
    if known not in KNOWN_SOURCES:
        raise ValueError(f"known must be one of {KNOWN_SOURCES}, got {known!r}")
    df = entries if known == "all" else entries[entries["is_experimental"] == 1]
    return sorted(set(df["formula"].astype(str)))


def _sample_unknown(
    space: TernarySpace, exclude_flat: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform sample (without replacement, sorted) of flat cells not in ``exclude_flat``
    (sorted)."""
    exclude_flat = np.asarray(exclude_flat, dtype=np.int64)
    total = space.n_cells - len(exclude_flat)
    n = int(min(n, total))
    if n <= 0:
        return np.zeros(0, np.int64)
    if 4 * n >= total:  # small space or a large sample: choose from the explicit complement
        rest = np.setdiff1d(
            np.arange(space.n_cells, dtype=np.int64), exclude_flat, assume_unique=True
        )
        return np.sort(rng.choice(rest, n, replace=False))
    picks = np.zeros(0, np.int64)
    while len(picks) < n:
        draw = rng.integers(0, space.n_cells, size=2 * (n - len(picks)) + 16)
        pos = np.clip(np.searchsorted(exclude_flat, draw), 0, max(len(exclude_flat) - 1, 0))
        if len(exclude_flat):
            draw = draw[exclude_flat[pos] != draw]
        # keep first occurrences in draw order so the sample stays uniform
        _, first = np.unique(draw, return_index=True)
        draw = draw[np.sort(first)]
        draw = draw[~np.isin(draw, picks)]
        picks = np.concatenate([picks, draw[: n - len(picks)]])
    return np.sort(picks)


def _ternary_formulas(entries: pd.DataFrame, known: str) -> list[str]:
    """Known formulas (:func:`known_formulas`) with exactly three elements."""
    formulas = known_formulas(entries, known)
    return [f for f in formulas if (c := integer_composition(f)) is not None and len(c) == 3]


def _space_for(
    formulas: Sequence[str], settings: RecommenderSettings, extra_elements: Iterable[str] = ()
) -> TernarySpace:
    """Space over the elements of ``formulas`` plus ``extra_elements`` (settings: grid, order)."""
    elements: set[str] = set(extra_elements)
    for f in formulas:
        comp = integer_composition(f)
        if comp is not None:
            elements.update(comp)
    return TernarySpace.build(elements, settings.max_atoms, settings.element_order)


class ChargeBalance:
    """Vectorised charge-balance test of tensor cells (the criterion of
    :func:`matdisco.core.composition.charge_balance_possible` without windows: every element takes
    its ICSD-common oxidation states, each site independently, mixed valence allowed).

    The achievable total charges of ``n`` sites of an element, ``{q}``, are encoded as the
    polynomial ``sum_q x^(q - q_min)`` packed into a Python integer (one ``2^digit``-ary digit
    per charge, wide enough that no coefficient of a product of three overflows), so the sum-set
    of the three elements is one integer product and the test reads one digit. The per
    (element, count) polynomials are cached.
    """

    def __init__(self, space: TernarySpace) -> None:
        from matdisco.core.composition import _achievable_charges, allowed_oxidation_states

        self.space = space
        self._states = [allowed_oxidation_states(e) for e in space.elements]
        self._achievable = _achievable_charges
        self._ratios = [tuple(int(x) for x in r) for r in space.ratios]
        n_max = max((max(r) for r in self._ratios), default=1)
        spread = max((max(st) - min(st) for st in self._states if st), default=0)
        largest_set = spread * n_max + 1  # a coefficient of P1 P2 P3 is at most |S1| |S2|
        self._digit = max(8, int(largest_set**2).bit_length() + 1)
        self._cache: dict[tuple[int, int], tuple[int, int]] = {}

    def _poly(self, element: int, n: int) -> tuple[int, int]:
        key = (element, n)
        hit = self._cache.get(key)
        if hit is None:
            charges = self._achievable(self._states[element], n)
            low = min(charges, default=0)  # no states (noble gases): empty set, never balanced
            poly = 0
            for q in charges:
                poly |= 1 << (self._digit * (q - low))
            hit = self._cache[key] = (poly, low)
        return hit

    def __call__(self, cells: np.ndarray) -> np.ndarray:
        """Boolean array: whether each ``(m, 4)`` cell can be charge-balanced."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
        mask = (1 << self._digit) - 1
        out = np.zeros(len(cells), bool)
        poly, ratios, digit = self._poly, self._ratios, self._digit
        for m, (i, j, k, q) in enumerate(cells.tolist()):
            a, b, c = ratios[q]
            p1, l1 = poly(i, a)
            p2, l2 = poly(j, b)
            p3, l3 = poly(k, c)
            zero = -(l1 + l2 + l3)  # digit of total charge 0
            if zero >= 0:
                out[m] = ((p1 * p2 * p3) >> (digit * zero)) & mask != 0
        return out
