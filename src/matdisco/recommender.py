"""Tensor recommender of unreported ternary compositions (Seko et al., PRM 2, 013805 (2018)).

The known ternary compositions (by default the experimentally reported entries of the store,
``is_experimental == 1``) are the ``y = 1`` entries of a sparse binary tensor

    X[A, B, C, r] = 1  if the composition A_a B_b C_c with (a, b, c) = ratio r is known,

where the three elements are put in a canonical order (Pauling electronegativity by default,
so O, S, halogens come last) and ``r`` indexes a fixed grid of reduced integer ratios with at
most ``max_atoms`` atoms per formula unit. Every other cell is unknown (0). A Tucker
decomposition of that tensor (higher-order orthogonal iteration on the sparse tensor, exact:
unknown cells count as zeros, as in Seko et al.) reconstructs a score for every cell; unknown
cells with a high score are compositions that "look like" known compounds across elements and
ratios: a recommender of compositions to try.

For comparison the module also fits the matrix variant (chemical system x ratio, truncated SVD)
and a popularity baseline (product of element and ratio marginals), and evaluates all of them
on held-out known compositions (random 10 % of compositions, or 10 % of whole chemical systems):
recall of the held-out cells in the top-k of all unknown-plus-held-out cells and the enrichment
over random order. The E_hull classifier's probability and its combination with the recommender
are evaluated on a uniform sample of the same candidates.

Scores are reported raw, as percentiles among all unknown cells of the tensor, and squashed to
0..1 relative to the typical score of a known compound (:func:`squash`), the scale on which they
are combined with the classifier probability; the uncertainty is the spread of the squashed score
over bootstrap refits.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from matdisco.store import atomic_write, read_entries

__all__ = [
    "ELEMENT_ORDERS",
    "KNOWN_SOURCES",
    "DEFAULT_SETTINGS",
    "ratio_grid",
    "integer_composition",
    "TernarySpace",
    "known_formulas",
    "TuckerModel",
    "MatrixModel",
    "tucker_hooi",
    "fit_matrix",
    "fit_popularity",
    "Recommender",
    "fit_recommender",
    "train_recommender",
    "load_recommender",
    "rank_counts",
    "expected_recall",
    "combine_scores",
    "squash",
    "classifier_scores",
    "evaluate_recommender",
    "plot_enrichment",
]

log = logging.getLogger("matdisco.recommender")

ELEMENT_ORDERS = ("electronegativity", "mendeleev")
KNOWN_SOURCES = ("experimental", "all")

#: Defaults of the ``recommender:`` config section (the schema carries the same values).
DEFAULT_SETTINGS: dict[str, Any] = {
    "known": "experimental",
    "max_atoms": 20,
    "element_order": "electronegativity",
    "ranks": [12, 12, 12, 20],
    "matrix_rank": 20,
    "n_iter": 10,
    "tol": 1e-4,
    "n_bootstrap": 3,
    "n_quantile_samples": 100000,
    "seed": 0,
    "evaluation": {
        "holdout_fraction": 0.1,
        "top_k": [0.001, 0.01, 0.05],
        "n_sample_candidates": 100000,
        "n_classifier_candidates": 20000,
        "combination_weight": 0.5,
        "exact": False,
        "seed": 1,
    },
}


def _settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    out = json.loads(json.dumps(DEFAULT_SETTINGS))
    for key, value in (settings or {}).items():
        if key == "evaluation" and isinstance(value, dict):
            out["evaluation"].update(value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# The composition space: elements in canonical order x ratio grid
# --------------------------------------------------------------------------------------------


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


@cache
def _parse(formula: str) -> tuple[tuple[str, float], ...]:
    from pymatgen.core import Composition

    comp = Composition(formula)
    return tuple((str(el), float(amt)) for el, amt in comp.get_el_amt_dict().items() if amt > 0)


def integer_composition(formula: str) -> dict[str, int] | None:
    """Reduced integer amounts of a formula (``None`` if the amounts are not integers).

    Example: ``"Mg2Mn4O8"`` -> ``{"Mg": 1, "Mn": 2, "O": 4}``.
    """
    try:
        items = _parse(formula)
    except Exception:  # noqa: BLE001 - an unparsable formula is simply not in the space
        return None
    if not items:
        return None
    amounts = [a for _, a in items]
    if any(abs(a - round(a)) > 1e-6 for a in amounts):
        return None
    ints = [int(round(a)) for a in amounts]
    g = math.gcd(*ints)
    return {el: n // g for (el, _), n in zip(items, ints, strict=True)}


def _order_key(symbol: str, order: str) -> tuple[float, int]:
    from pymatgen.core import Element

    el = Element(symbol)
    if order == "electronegativity":
        x = el.X
        value = float(x) if x == x and x is not None else 10.0  # noble gases (no X) last
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
        """Cells of many formulas: ``(cells (m, 4), positions in formulas (m,))`` of those in the space."""
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
        from pymatgen.core import Composition

        i, j, k, q = (int(x) for x in cell)
        a, b, c = (int(x) for x in self.ratios[q])
        return Composition(
            {self.elements[i]: a, self.elements[j]: b, self.elements[k]: c}
        ).reduced_formula


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


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class CellScorer(Protocol):
    """Anything that scores cells of a :class:`TernarySpace`."""

    def score_cells(self, cells: np.ndarray) -> np.ndarray:
        """Scores of ``(m, 4)`` cells."""
        ...

    def score_block(self, space: TernarySpace, i: int) -> np.ndarray:
        """Scores ``(n_systems_i, n_ratios)`` of all systems whose first element is ``i``."""
        ...


@dataclass
class TuckerModel:
    """A (not necessarily orthogonal) Tucker model: ``X ~ core x_1 U1 x_2 U2 x_3 U3 x_4 U4``.

    Attributes:
        core: ``(R1, R2, R3, R4)`` core tensor.
        factors: four factor matrices ``(I_n, R_n)``.
        rel_error: ``||X - X_hat|| / ||X||`` on the training tensor (NaN if not computed).
        history: relative error after each iteration.
    """

    core: np.ndarray
    factors: list[np.ndarray]
    rel_error: float = float("nan")
    history: list[float] = field(default_factory=list)

    @property
    def ranks(self) -> tuple[int, ...]:
        """Core shape."""
        return tuple(int(r) for r in self.core.shape)

    def score_cells(self, cells: np.ndarray) -> np.ndarray:
        """Reconstructed values at ``(m, 4)`` cells."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
        u1, u2, u3, u4 = self.factors
        r1, r2, r3, r4 = self.core.shape
        out = np.empty(len(cells))
        # group by the first index: the core contracted with U1[i] is shared by the group, and
        # the second contraction becomes one matrix product per group
        order = np.argsort(cells[:, 0], kind="stable")
        firsts, starts = np.unique(cells[order, 0], return_index=True)
        bounds = [*starts[1:], len(order)]
        core = self.core.reshape(r1, -1)
        for i, a, b in zip(firsts, starts, bounds, strict=True):
            for s in range(a, b, 8192):
                idx = order[s : min(b, s + 8192)]
                c = cells[idx]
                t = (u1[i] @ core).reshape(r2, r3 * r4)  # (R2, R3 R4)
                t = (u2[c[:, 1]] @ t).reshape(-1, r3, r4)  # (m, R3, R4)
                t = np.einsum("mc,mcd->md", u3[c[:, 2]], t)
                out[idx] = np.einsum("md,md->m", u4[c[:, 3]], t)
        return out

    def score_block(self, space: TernarySpace, i: int) -> np.ndarray:
        """Reconstructed values of all systems ``(i, j > i, k > j)`` x all ratios."""
        n = len(space.elements)
        u1, u2, u3, u4 = self.factors
        t = np.tensordot(u1[i], self.core, axes=(0, 0))  # (R2, R3, R4)
        p = np.tensordot(u2[i + 1 :], t, axes=(1, 0))  # (J, R3, R4)
        q = np.einsum("jcd,kc->jkd", p, u3[i + 1 :])  # (J, K, R4)
        jj, kk = np.triu_indices(n - i - 1, k=1)
        return q[jj, kk] @ u4.T  # (n_sys_i, L)


@dataclass
class MatrixModel:
    """Truncated SVD of the (chemical system x ratio) matrix: ``X_hat = X V V^T``.

    Attributes:
        rows: flat system ids that have known compositions (sorted).
        xv: ``X V`` for those rows, ``(len(rows), k)``.
        v: right singular vectors ``(L, k)``.
    """

    rows: np.ndarray
    xv: np.ndarray
    v: np.ndarray
    n_ratios: int

    def _row_values(self, sys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.rows, sys)
        pos = np.clip(pos, 0, max(len(self.rows) - 1, 0))
        hit = (self.rows[pos] == sys) if len(self.rows) else np.zeros(len(sys), bool)
        xv = np.zeros((len(sys), self.v.shape[1]))
        if len(self.rows):
            xv[hit] = self.xv[pos[hit]]
        return xv

    def score_cells(self, cells: np.ndarray, space: TernarySpace | None = None) -> np.ndarray:
        """Reconstructed values at ``(m, 4)`` cells (needs the space to find system ids)."""
        if space is None:
            raise ValueError("MatrixModel.score_cells needs the TernarySpace")
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
        sys = space.flat(cells) // space.ratios.shape[0]
        xv = self._row_values(sys)
        return np.einsum("mk,mk->m", xv, self.v[cells[:, 3]])

    def score_block(self, space: TernarySpace, i: int) -> np.ndarray:
        """Reconstructed values of all systems whose first element is ``i``."""
        start, stop = space.system_ids(i)
        xv = self._row_values(np.arange(start, stop))
        return xv @ self.v.T


class _BoundMatrix:
    """A MatrixModel bound to its space so that it satisfies :class:`CellScorer`."""

    def __init__(self, model: MatrixModel, space: TernarySpace) -> None:
        self.model, self.space = model, space

    def score_cells(self, cells: np.ndarray) -> np.ndarray:
        return self.model.score_cells(cells, self.space)

    def score_block(self, space: TernarySpace, i: int) -> np.ndarray:
        return self.model.score_block(space, i)


def _clip_ranks(
    shape: Sequence[int], ranks: Sequence[int], nonzero_rows: Sequence[int]
) -> list[int]:
    r = [
        max(1, min(int(rk), int(s), max(1, int(nz))))
        for rk, s, nz in zip(ranks, shape, nonzero_rows, strict=True)
    ]
    # a mode's rank cannot exceed the product of the other ranks
    for _ in range(4):
        for n in range(4):
            others = int(np.prod([r[m] for m in range(4) if m != n]))
            r[n] = min(r[n], others)
    return r


def _top_eigh(gram: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``rank`` eigenpairs of a symmetric matrix, in decreasing order."""
    from scipy.linalg import eigh

    n = gram.shape[0]
    rank = min(rank, n)
    w, vec = eigh(gram, subset_by_index=[n - rank, n - 1], driver="evr")
    return w[::-1], vec[:, ::-1]


def _leading_left_vectors(y: np.ndarray, rank: int) -> np.ndarray:
    """Top ``rank`` left singular vectors of ``y`` (via the smaller Gram matrix; zero rows stay 0)."""
    rows = np.flatnonzero(np.any(y != 0, axis=1))
    u = np.zeros((y.shape[0], rank))
    if len(rows) == 0:
        return u
    ys = y[rows]
    if ys.shape[0] <= ys.shape[1]:
        _, vec = _top_eigh(ys @ ys.T, rank)
        u[rows, : vec.shape[1]] = vec
    else:
        w, vec = _top_eigh(ys.T @ ys, rank)
        s = np.sqrt(np.clip(w, 1e-300, None))
        u[rows, : vec.shape[1]] = (ys @ vec) / s
    return u


def _sparse_unfold_gram(
    shape: Sequence[int], coords: np.ndarray, values: np.ndarray, mode: int
) -> np.ndarray:
    from scipy import sparse

    others = [m for m in range(4) if m != mode]
    col = np.ravel_multi_index(tuple(coords[:, m] for m in others), tuple(shape[m] for m in others))
    x = sparse.csr_matrix(
        (values, (coords[:, mode], col)),
        shape=(shape[mode], int(np.prod([shape[m] for m in others]))),
    )
    return (x @ x.T).toarray()


def _ttm_all_but(
    shape: Sequence[int],
    coords: np.ndarray,
    values: np.ndarray,
    factors: Sequence[np.ndarray],
    mode: int,
    chunk: int = 2048,
    dtype: type = np.float32,
) -> np.ndarray:
    """``Y_(mode)``: the sparse tensor times ``U_m^T`` in every mode but ``mode``, unfolded.

    The Khatri-Rao rows are built in ``dtype`` (float32 halves the memory traffic of this
    memory-bound step during the sweeps; the final core is computed in float64).
    """
    from scipy import sparse

    others = [m for m in range(4) if m != mode]
    ncols = int(np.prod([factors[m].shape[1] for m in others]))
    y = np.zeros((shape[mode], ncols))
    factors32 = [np.asarray(f, dtype=dtype) for f in factors]
    values32 = np.asarray(values, dtype=dtype)
    for s in range(0, len(values), chunk):
        sl = slice(s, s + chunk)
        # rows of the Khatri-Rao product of the other factors (float32: memory-bound step)
        a, b, c = (factors32[m][coords[sl, m]] for m in others)
        w = (a[:, :, None] * b[:, None, :]).reshape(len(a), -1)
        w = (w[:, :, None] * c[:, None, :]).reshape(len(a), -1)
        scatter = sparse.csr_matrix(
            (values32[sl], (coords[sl, mode], np.arange(len(w)))), shape=(shape[mode], len(w))
        )
        y += scatter @ w
    return y


def tucker_hooi(
    shape: Sequence[int],
    coords: np.ndarray,
    values: np.ndarray | None = None,
    ranks: Sequence[int] = (24, 24, 24, 32),
    *,
    n_iter: int = 15,
    tol: float = 1e-5,
    init: Sequence[np.ndarray] | None = None,
) -> TuckerModel:
    """Tucker decomposition of a sparse 4-way tensor by higher-order orthogonal iteration.

    Unobserved cells are zeros (the tensor is complete), so the result is the ordinary
    (orthogonal) Tucker approximation; it is computed without ever forming the dense tensor.
    Initialisation is the truncated HOSVD (or ``init`` for warm starts), so the result is
    deterministic.

    Args:
        shape: tensor shape.
        coords: ``(nnz, 4)`` integer coordinates of the non-zero cells.
        values: their values (default 1).
        ranks: requested multilinear ranks; clipped to what the data supports.
        n_iter: maximum number of HOOI sweeps.
        tol: stop when the relative error changes by less than this.
        init: optional starting factor matrices (same shapes as the result's).

    Returns:
        The fitted :class:`TuckerModel` (orthonormal factors; rows of never-seen indices are 0).
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 4)
    values = np.ones(len(coords)) if values is None else np.asarray(values, dtype=np.float64)
    shape = tuple(int(s) for s in shape)
    norm2 = float(values @ values)
    nonzero_rows = [len(np.unique(coords[:, n])) for n in range(4)]
    r = _clip_ranks(shape, ranks, nonzero_rows)
    if len(values) == 0:
        return TuckerModel(
            np.zeros(r), [np.zeros((s, rk)) for s, rk in zip(shape, r, strict=True)], 0.0, []
        )
    if init is not None and all(
        f.shape == (s, rk) for f, s, rk in zip(init, shape, r, strict=True)
    ):
        factors = [np.array(f, dtype=np.float64) for f in init]
    else:
        factors = []
        for n in range(4):
            rows = np.unique(coords[:, n])
            gram = _sparse_unfold_gram(shape, coords, values, n)[np.ix_(rows, rows)]
            _, vec = _top_eigh(gram, r[n])
            f = np.zeros((shape[n], r[n]))
            f[rows, : vec.shape[1]] = vec
            factors.append(f)
    history: list[float] = []
    core = np.zeros(r)
    for _ in range(max(1, n_iter)):
        for n in range(4):
            y = _ttm_all_but(shape, coords, values, factors, n)
            factors[n] = _leading_left_vectors(y, r[n])
        # core from the last mode's projection: G_(4) = U4^T Y_(4)
        g = factors[3].T @ y  # (R4, R1 R2 R3)
        core = np.moveaxis(g.reshape(r[3], r[0], r[1], r[2]), 0, 3)
        err = math.sqrt(max(norm2 - float((core**2).sum()), 0.0) / norm2)
        history.append(err)
        if len(history) > 1 and abs(history[-2] - history[-1]) < tol:
            break
    # exact core (float64) for the final factors; ||X - X_hat||^2 = ||X||^2 - ||G||^2
    y = _ttm_all_but(shape, coords, values, factors, 3, dtype=np.float64)
    core = np.moveaxis((factors[3].T @ y).reshape(r[3], r[0], r[1], r[2]), 0, 3)
    err = math.sqrt(max(norm2 - float((core**2).sum()), 0.0) / norm2)
    history[-1] = err
    return TuckerModel(core, factors, err, history)


def fit_matrix(space: TernarySpace, cells: np.ndarray, rank: int = 32) -> MatrixModel:
    """Truncated SVD of the binary (system x ratio) matrix of known cells (Seko's matrix variant)."""
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
    L = len(space.ratios)
    if len(cells) == 0:
        return MatrixModel(np.zeros(0, np.int64), np.zeros((0, 1)), np.zeros((L, 1)), L)
    sys = space.flat(cells) // L
    rows, inv = np.unique(sys, return_inverse=True)
    x = np.zeros((len(rows), L))
    x[inv, cells[:, 3]] = 1.0
    k = max(1, min(rank, *x.shape))
    if x.shape[0] < x.shape[1]:  # right singular vectors through the smaller Gram matrix
        w, u = _top_eigh(x @ x.T, k)
        keep = w > 1e-12 * max(float(w.max()), 1e-300)
        v = (x.T @ u[:, keep]) / np.sqrt(w[keep])
    else:
        _, v = _top_eigh(x.T @ x, k)
    return MatrixModel(rows, x @ v, v, L)


def fit_popularity(space: TernarySpace, cells: np.ndarray, pseudo: float = 0.5) -> TuckerModel:
    """Baseline: product of the marginal frequencies of each tensor index (a rank-1 model)."""
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
    factors = []
    for n, size in enumerate(space.shape):
        counts = np.bincount(cells[:, n], minlength=size).astype(float) + pseudo
        factors.append((counts / counts.sum())[:, None])
    return TuckerModel(np.ones((1, 1, 1, 1)), factors)


# --------------------------------------------------------------------------------------------
# Ranking metrics
# --------------------------------------------------------------------------------------------


def rank_counts(
    pos_scores: np.ndarray, neg_scores: np.ndarray | Iterable[np.ndarray], neg_weight: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """For every positive: weight of items scoring strictly higher, and of items tying with it.

    Items are all positives (weight 1, each tying with itself) plus the negatives (each standing
    for ``neg_weight`` candidates, e.g. ``N / n_sampled`` for a uniform sample). ``neg_scores``
    may be an iterable of chunks, so the negatives never need to be in memory at once.

    Returns:
        ``(greater, equal)`` arrays aligned with ``pos_scores``; ``equal`` includes the item itself.
    """
    pos = np.asarray(pos_scores, dtype=np.float64)
    order = np.argsort(pos, kind="stable")
    sp = pos[order]
    m = len(sp)
    above = np.zeros(m + 1)  # above[t]: weight of values v with (#positives < v) == t
    eq_diff = np.zeros(m + 1)

    def add(values: np.ndarray, weight: float) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if not len(values):
            return
        a = np.searchsorted(sp, values, side="left")  # positives strictly below v
        b = np.searchsorted(sp, values, side="right")  # positives <= v
        above[:] += weight * np.bincount(a, minlength=m + 1)
        eq = a < b
        eq_diff[:] += weight * (
            np.bincount(a[eq], minlength=m + 1) - np.bincount(b[eq], minlength=m + 1)
        )

    add(sp, 1.0)
    if isinstance(neg_scores, np.ndarray):
        add(neg_scores, neg_weight)
    else:
        for chunk in neg_scores:
            add(chunk, neg_weight)
    # greater for the positive at sorted position t = weight of values with a(v) > t
    tail = np.cumsum(above[::-1])[::-1]  # tail[t] = sum_{s >= t} above[s]
    greater_sorted = tail[1:]
    equal_sorted = np.cumsum(eq_diff)[:m]
    greater = np.empty(m)
    equal = np.empty(m)
    greater[order] = greater_sorted
    equal[order] = np.maximum(equal_sorted, 1.0)
    return greater, equal


def expected_recall(greater: np.ndarray, equal: np.ndarray, k: float) -> float:
    """Expected fraction of positives in the top ``k`` when ties are broken at random."""
    if len(greater) == 0:
        return float("nan")
    p = np.clip((k - greater) / equal, 0.0, 1.0)
    return float(p.mean())


def _metrics_from_counts(
    greater: np.ndarray, equal: np.ndarray, n_candidates: float, fractions: Sequence[float]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fractions:
        k = max(1.0, round(f * n_candidates))
        recall = expected_recall(greater, equal, k)
        tag = f"{100 * f:g}%"
        out[f"recall@{tag}"] = recall
        out[f"enrichment@{tag}"] = recall / (k / n_candidates) if n_candidates else float("nan")
    if len(greater):
        pct = (
            greater + (equal + 1) / 2
        ) / n_candidates  # mean position as a fraction of candidates
        out["median_rank_fraction"] = float(np.median(pct))
        out["mean_rank_fraction"] = float(np.mean(pct))
    return out


def _random_metrics(n_candidates: float, fractions: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fractions:
        k = max(1.0, round(f * n_candidates))
        tag = f"{100 * f:g}%"
        out[f"recall@{tag}"] = k / n_candidates
        out[f"enrichment@{tag}"] = 1.0
    out["median_rank_fraction"] = 0.5
    out["mean_rank_fraction"] = 0.5
    return out


def _stream_unknown(
    scorer: CellScorer, space: TernarySpace, exclude_flat: np.ndarray
) -> Iterable[np.ndarray]:
    """Scores of every cell of the space except ``exclude_flat`` (sorted), block by block."""
    L = len(space.ratios)
    for i in range(len(space.elements)):
        start, stop = space.system_ids(i)
        if stop <= start:
            continue
        block = scorer.score_block(space, i).ravel()
        lo, hi = np.searchsorted(exclude_flat, [start * L, stop * L])
        if hi > lo:
            keep = np.ones(block.size, bool)
            keep[exclude_flat[lo:hi] - start * L] = False
            block = block[keep]
        yield block


def _sample_unknown(
    space: TernarySpace, exclude_flat: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform sample (without replacement, sorted) of flat cells not in ``exclude_flat`` (sorted)."""
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


# --------------------------------------------------------------------------------------------
# The recommender: main model + bootstrap ensemble + score percentiles
# --------------------------------------------------------------------------------------------


@dataclass
class Recommender:
    """A fitted composition recommender (pickled by ``train_recommender``).

    Attributes:
        space: the composition tensor index.
        known_flat: sorted flat indices of the known (training) cells.
        known: the known reduced formulas (all element counts, for ``known`` flags downstream).
        model: Tucker model fitted on all known cells.
        bootstrap: Tucker models fitted on bootstrap resamples of the known cells.
        quantiles: per model (main first), sorted scores of a uniform sample of unknown cells,
            used to turn a score into a percentile among all unknown cells.
        scales: per model (main first), the median reconstructed score of the known cells: the
            unit of :func:`squash`.
        settings: the settings it was trained with.
        info: counts and timings.
    """

    space: TernarySpace
    known_flat: np.ndarray
    known: list[str]
    model: TuckerModel
    bootstrap: list[TuckerModel]
    quantiles: list[np.ndarray]
    scales: list[float]
    settings: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def score_formulas(self, formulas: Sequence[str]) -> pd.DataFrame:
        """Recommender scores of formulas.

        Returns:
            DataFrame with columns formula, in_space (ternary on the ratio grid with elements of
            the space), recommender_raw (Tucker reconstruction of the main model),
            recommender_percentile (fraction of all unknown cells scoring lower), recommender_score
            (:func:`squash` of the raw score, 0..1: 0 for a score <= 0, 0.63 for a score equal to
            the median score of the known compounds), recommender_std and recommender_mean
            (standard deviation and mean of that squashed score over the bootstrap models; NaN
            without bootstrap). Formulas outside the space get NaN.
        """
        formulas = list(formulas)
        cells, pos = self.space.cells(formulas)
        n = len(formulas)
        cols = {c: np.full(n, np.nan) for c in ("raw", "pct", "score", "std", "mean")}
        if len(cells):
            raw = self.model.score_cells(cells)
            cols["raw"][pos] = raw
            cols["pct"][pos] = _percentile(self.quantiles[0], raw)
            cols["score"][pos] = squash(raw, self.scales[0])
            if self.bootstrap:
                sq = np.stack(
                    [
                        squash(m.score_cells(cells), sc)
                        for m, sc in zip(self.bootstrap, self.scales[1:], strict=True)
                    ]
                )
                cols["std"][pos] = sq.std(axis=0, ddof=1) if len(sq) > 1 else 0.0
                cols["mean"][pos] = sq.mean(axis=0)
        in_space = np.zeros(n, bool)
        in_space[pos] = True
        return pd.DataFrame(
            {
                "formula": formulas,
                "in_space": in_space,
                "recommender_raw": cols["raw"],
                "recommender_percentile": cols["pct"],
                "recommender_score": cols["score"],
                "recommender_std": cols["std"],
                "recommender_mean": cols["mean"],
            }
        )

    def top_unknown(self, n: int = 20) -> pd.DataFrame:
        """The ``n`` best-scoring unknown cells of the whole tensor (a full sweep)."""
        best_scores = np.zeros(0)
        best_flat = np.zeros(0, np.int64)
        L = len(self.space.ratios)
        for i in range(len(self.space.elements)):
            start, stop = self.space.system_ids(i)
            if stop <= start:
                continue
            block = self.model.score_block(self.space, i).ravel()
            lo, hi = np.searchsorted(self.known_flat, [start * L, stop * L])
            # only cells above the current n-th best can enter (cheap filter first: a selection
            # over millions of tied zeros is slow)
            threshold = best_scores.min() if len(best_scores) >= n else -np.inf
            top = (
                np.flatnonzero(block > threshold)
                if np.isfinite(threshold)
                else np.arange(len(block))
            )
            # the best n + (known cells in this block) cells contain the best n unknown ones
            m = min(len(top), n + int(hi - lo))
            if m < len(top):
                top = top[np.argpartition(block[top], -m)[-m:]]
            flat = top + start * L
            keep = ~np.isin(flat, self.known_flat[lo:hi])
            block, flat = block[top][keep], flat[keep]
            best_scores = np.concatenate([best_scores, block])
            best_flat = np.concatenate([best_flat, flat])
            if len(best_scores) > n:
                top = np.argpartition(best_scores, -n)[-n:]
                best_scores, best_flat = best_scores[top], best_flat[top]
        order = np.argsort(-best_scores)
        cells = self.space.unflat(best_flat[order])
        return pd.DataFrame(
            {
                "formula": [self.space.formula(c) for c in cells],
                "recommender_raw": best_scores[order],
            }
        )


def squash(raw: np.ndarray, scale: float) -> np.ndarray:
    """Map Tucker scores to 0..1: ``1 - exp(-max(raw, 0) / scale)``.

    ``scale`` is the median reconstructed score of the known compounds, so the score reads as
    "how much this cell looks like a known compound": 0 for cells the model does not recommend,
    0.63 at the median known compound. Unlike the percentile among the ~10^8 unknown cells (most
    of which sit at 0), it is smooth in the raw score, so the spread over bootstrap models is a
    usable uncertainty on the same scale as a probability.
    """
    scale = float(scale) if scale and scale > 0 else 1.0
    return 1.0 - np.exp(-np.clip(np.asarray(raw, dtype=float), 0.0, None) / scale)


def _known_scale(model: TuckerModel, cells: np.ndarray) -> float:
    if len(cells) == 0:
        return 1.0
    med = float(np.median(model.score_cells(cells)))
    return med if med > 0 else 1.0


def _percentile(sorted_sample: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Fraction of the sample scoring below each score (ties count half)."""
    if len(sorted_sample) == 0:
        return np.full(len(scores), 0.5)
    lo = np.searchsorted(sorted_sample, scores, side="left")
    hi = np.searchsorted(sorted_sample, scores, side="right")
    return (lo + hi) / (2.0 * len(sorted_sample))


def _ternary_formulas(entries: pd.DataFrame, known: str) -> list[str]:
    formulas = known_formulas(entries, known)
    return [f for f in formulas if (c := integer_composition(f)) is not None and len(c) == 3]


def _space_for(
    formulas: Sequence[str], settings: dict[str, Any], extra_elements: Iterable[str] = ()
) -> TernarySpace:
    elements: set[str] = set(extra_elements)
    for f in formulas:
        comp = integer_composition(f)
        if comp is not None:
            elements.update(comp)
    return TernarySpace.build(elements, int(settings["max_atoms"]), settings["element_order"])


def fit_recommender(
    known: Sequence[str],
    settings: dict[str, Any] | None = None,
    *,
    extra_elements: Iterable[str] = (),
    space: TernarySpace | None = None,
    warm_start: Recommender | None = None,
) -> Recommender:
    """Fit the Tucker recommender (plus bootstrap refits) on known formulas.

    Args:
        known: known reduced formulas (non-ternary or off-grid ones are ignored by the tensor but
            kept in ``Recommender.known``).
        settings: the ``recommender`` config section (defaults: :data:`DEFAULT_SETTINGS`).
        extra_elements: elements to include in the space even if no known ternary has them
            (e.g. the target elements).
        space: use this space instead of building one from the formulas.
        warm_start: a recommender on the same space whose factors start the iterations
            (refits after a few new compositions converge in a sweep or two).

    Returns:
        The fitted :class:`Recommender`.
    """
    s = _settings(settings)
    t0 = time.perf_counter()
    known = sorted(set(known))
    ternary = [f for f in known if (c := integer_composition(f)) is not None and len(c) == 3]
    space = space or _space_for(ternary, s, extra_elements)
    cells, _ = space.cells(ternary)
    flat = np.unique(space.flat(cells))
    cells = space.unflat(flat)
    log.info(
        "tensor %s: %d known ternary cells (%d ternary formulas off the grid or outside the space)",
        space.shape,
        len(flat),
        len(ternary) - len(flat),
    )
    warm = warm_start if warm_start is not None and warm_start.space.shape == space.shape else None
    model = tucker_hooi(
        space.shape,
        cells,
        ranks=s["ranks"],
        n_iter=s["n_iter"],
        tol=s["tol"],
        init=warm.model.factors if warm is not None else None,
    )
    log.info(
        "Tucker ranks %s: relative error %.4f after %d sweeps",
        model.ranks,
        model.rel_error,
        len(model.history),
    )
    rng = np.random.default_rng(int(s["seed"]))
    boot = []
    for b in range(int(s["n_bootstrap"])):
        weights = np.bincount(rng.integers(0, len(cells), len(cells)), minlength=len(cells)).astype(
            float
        )
        keep = weights > 0
        boot.append(
            tucker_hooi(
                space.shape,
                cells[keep],
                weights[keep],
                ranks=model.ranks,
                n_iter=max(2, int(s["n_iter"]) // 3),
                tol=s["tol"],
                init=warm.bootstrap[b].factors
                if warm is not None and b < len(warm.bootstrap)
                else model.factors,
            )
        )
        log.info("bootstrap %d: relative error %.4f", b, boot[-1].rel_error)
    sample = _sample_unknown(space, flat, int(s["n_quantile_samples"]), rng)
    sample_cells = space.unflat(sample)
    quantiles = [np.sort(m.score_cells(sample_cells)).astype(np.float64) for m in [model, *boot]]
    scales = [_known_scale(m, cells) for m in [model, *boot]]
    info = {
        "tensor_shape": list(space.shape),
        "n_cells": int(space.n_cells),
        "n_known_formulas": len(known),
        "n_known_ternary": len(ternary),
        "n_known_cells": int(len(flat)),
        "n_off_grid": int(len(ternary) - len(flat)),
        "ranks": list(model.ranks),
        "known_score_scale": scales[0],
        "rel_error": model.rel_error,
        "sweeps": len(model.history),
        "bootstrap_rel_error": [m.rel_error for m in boot],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return Recommender(space, flat, known, model, boot, quantiles, scales, s, info)


def train_recommender(
    store: str | Path,
    out_model: str | Path,
    settings: dict[str, Any] | None = None,
    *,
    target_elements: Sequence[str] = (),
    out_summary: str | Path | None = None,
) -> Recommender:
    """Fit the recommender on the store's known compositions and pickle it.

    Args:
        store: entry store (``entries.h5``).
        out_model: output pickle.
        settings: the ``recommender`` config section.
        target_elements: elements always included in the tensor.
        out_summary: optional JSON with counts, fit error and the top unknown cells.
    """
    s = _settings(settings)
    entries = read_entries(store, ["formula", "is_experimental"])
    rec = fit_recommender(known_formulas(entries, s["known"]), s, extra_elements=target_elements)
    with atomic_write(out_model) as tmp, open(tmp, "wb") as fh:
        pickle.dump(rec, fh, protocol=pickle.HIGHEST_PROTOCOL)
    if out_summary is not None:
        top = rec.top_unknown(25)
        # "unknown" to the model (its known set) is not "unreported": name every source that
        # knows a listed formula (matdisco.known) and list the unreported ones apart
        from matdisco.known import KnownCompositions

        kc = KnownCompositions.from_store(store)
        top["known_composition_source"] = [kc.source_of(f) for f in top["formula"].astype(str)]
        summary = {
            **rec.info,
            "settings": s,
            "top_unknown": top.to_dict(orient="records"),
            "top_unreported": top[top["known_composition_source"] == ""].to_dict(orient="records"),
        }
        with atomic_write(out_summary) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    log.info("recommender written: %s (%.1f s)", out_model, rec.info["seconds"])
    return rec


def load_recommender(path: str | Path) -> Recommender:
    """Load a pickled :class:`Recommender`."""
    with open(path, "rb") as fh:
        rec = pickle.load(fh)
    if not isinstance(rec, Recommender):
        raise TypeError(f"{path} does not hold a Recommender")
    return rec


# --------------------------------------------------------------------------------------------
# Classifier scores and combination
# --------------------------------------------------------------------------------------------


def classifier_scores(
    model_path: str | Path | None, formulas: Sequence[str]
) -> pd.DataFrame | None:
    """E_hull classifier probabilities for formulas, or ``None`` without a classifier.

    Uses :func:`matdisco.classifier.predict_stability`; missing probabilities (invalid
    formulas) become 0 with uncertainty 0.
    """
    if model_path is None or not Path(model_path).exists():
        return None
    try:
        from matdisco.classifier import predict_stability
    except ImportError:
        log.warning("matdisco.classifier is not available: classifier scores skipped")
        return None
    df = predict_stability(model_path, list(formulas)).reset_index(drop=True)
    df["p_stable"] = pd.to_numeric(df["p_stable"], errors="coerce").fillna(0.0)
    df["p_stable_std"] = pd.to_numeric(df["p_stable_std"], errors="coerce").fillna(0.0)
    return df


def combine_scores(p_stable: np.ndarray, rec_score: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Weighted mean of the classifier probability and the recommender percentile.

    ``weight`` is the classifier's share (1: classifier alone, 0: recommender alone). A NaN
    on one side falls back to the other side alone.
    """
    p = np.asarray(p_stable, dtype=float)
    q = np.asarray(rec_score, dtype=float)
    out = weight * p + (1 - weight) * q
    out = np.where(np.isnan(p), q, out)
    return np.where(np.isnan(q), p, out)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _split(
    flat: np.ndarray, space: TernarySpace, kind: str, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask over ``flat`` of the held-out cells."""
    n = len(flat)
    hide = np.zeros(n, bool)
    if n < 2:
        return hide
    if kind == "random":
        m = min(n - 1, max(1, round(fraction * n)))
        hide[rng.choice(n, m, replace=False)] = True
    elif kind == "chemsys":
        sys = flat // len(space.ratios)
        systems = np.unique(sys)
        if len(systems) < 2:
            return hide
        m = min(len(systems) - 1, max(1, round(fraction * len(systems))))
        hide = np.isin(sys, rng.choice(systems, m, replace=False))
    else:
        raise ValueError(kind)
    return hide


def _evaluate_split(
    kind: str,
    space: TernarySpace,
    flat: np.ndarray,
    s: dict[str, Any],
    rng: np.random.Generator,
    classifier_model: str | Path | None,
) -> dict[str, Any]:
    ev = s["evaluation"]
    fractions = [float(f) for f in ev["top_k"]]
    hide = _split(flat, space, kind, float(ev["holdout_fraction"]), rng)
    train_flat, hidden_flat = flat[~hide], flat[hide]
    if len(hidden_flat) == 0:
        return {"skipped": "fewer than two known cells (or systems) to split"}
    train_cells, hidden_cells = space.unflat(train_flat), space.unflat(hidden_flat)
    n_candidates = space.n_cells - len(train_flat)
    t0 = time.perf_counter()
    tucker = tucker_hooi(
        space.shape, train_cells, ranks=s["ranks"], n_iter=s["n_iter"], tol=s["tol"]
    )
    t_fit = time.perf_counter() - t0
    matrix = _BoundMatrix(fit_matrix(space, train_cells, int(s["matrix_rank"])), space)
    popularity = fit_popularity(space, train_cells)
    models: dict[str, CellScorer] = {"tensor": tucker, "matrix": matrix, "popularity": popularity}
    exclude = np.sort(np.concatenate([train_flat, hidden_flat]))
    # hidden cells against a uniform sample of the other unknown cells (weighted up to all of them)
    sample = _sample_unknown(space, exclude, int(ev["n_sample_candidates"]), rng)
    weight = (n_candidates - len(hidden_flat)) / max(len(sample), 1)
    sample_cells = space.unflat(sample)
    methods: dict[str, Any] = {"random": _random_metrics(n_candidates, fractions)}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, model in models.items():
        scores[name] = (model.score_cells(hidden_cells), model.score_cells(sample_cells))
        g, e = rank_counts(*scores[name], weight)
        methods[name] = _metrics_from_counts(g, e, n_candidates, fractions)
    clf_note = "no classifier model given"
    n_clf = 0
    if classifier_model is not None:
        # the classifier is slow per formula: a uniform subsample of the sampled negatives
        sub = np.sort(rng.permutation(len(sample))[: int(ev["n_classifier_candidates"])])
        n_clf = len(sub)
        weight_clf = (n_candidates - len(hidden_flat)) / max(n_clf, 1)
        clf = classifier_scores(
            classifier_model,
            space.formula_strings(hidden_cells) + space.formula_strings(sample_cells[sub]),
        )
        if clf is None:
            clf_note = "classifier unavailable"
        else:
            p = clf["p_stable"].to_numpy()
            p_pos, p_neg = p[: len(hidden_cells)], p[len(hidden_cells) :]
            g, e = rank_counts(p_pos, p_neg, weight_clf)
            methods["classifier"] = _metrics_from_counts(g, e, n_candidates, fractions)
            # the recommender on its 0..1 scale (as in `propose`), mixed with p_stable
            t_pos, t_neg = scores["tensor"][0], scores["tensor"][1][sub]
            scale = _known_scale(tucker, train_cells)
            w = float(ev["combination_weight"])
            c_pos = combine_scores(p_pos, squash(t_pos, scale), w)
            c_neg = combine_scores(p_neg, squash(t_neg, scale), w)
            g, e = rank_counts(c_pos, c_neg, weight_clf)
            methods["combination"] = _metrics_from_counts(g, e, n_candidates, fractions)
            # the tensor alone on the same subsample, for a like-for-like comparison
            g, e = rank_counts(t_pos, t_neg, weight_clf)
            methods["tensor_on_classifier_sample"] = _metrics_from_counts(
                g, e, n_candidates, fractions
            )
            clf_note = (
                "the classifier was trained on MP E_hull labels that include most held-out compositions "
                "(their stability is not hidden from it), so its numbers are optimistic"
            )
    out: dict[str, Any] = {
        "n_train_cells": int(len(train_flat)),
        "n_hidden_cells": int(len(hidden_flat)),
        "n_hidden_systems": int(len(np.unique(hidden_flat // len(space.ratios)))),
        "n_candidates": int(n_candidates),
        "n_sampled_unknown": int(len(sample)),
        "weight_per_sample": float(weight),
        "n_classifier_sampled": int(n_clf),
        "tensor_ranks": list(tucker.ranks),
        "tensor_rel_error": tucker.rel_error,
        "tensor_fit_seconds": round(t_fit, 2),
        "methods": methods,
        "classifier_note": clf_note,
    }
    if ev.get("exact", False):
        # every unknown cell ranked (no sampling): tensor, matrix and popularity only
        exact: dict[str, Any] = {"random": _random_metrics(n_candidates, fractions)}
        for name, model in models.items():
            g, e = rank_counts(scores[name][0], _stream_unknown(model, space, exclude))
            exact[name] = _metrics_from_counts(g, e, n_candidates, fractions)
        out["exact"] = exact
    return out


def evaluate_recommender(
    store: str | Path,
    out_metrics: str | Path,
    settings: dict[str, Any] | None = None,
    *,
    classifier_model: str | Path | None = None,
    target_elements: Sequence[str] = (),
) -> dict[str, Any]:
    """Held-out evaluation of the recommender (and the classifier) on known compositions.

    Two splits: ``random`` hides ``holdout_fraction`` of the known cells; ``chemsys`` hides every
    known cell of ``holdout_fraction`` of the known chemical systems. For each, the models are
    refitted on the rest and the hidden cells are ranked among all unknown-plus-hidden cells
    (``N`` candidates). Scoring ~10^8 cells with the classifier is impractical, so every method
    ranks the hidden cells against a uniform sample of ``n_sample_candidates`` unknown cells, each
    standing for ``(N - hidden) / n_sampled`` candidates (an unbiased estimate of the ranks);
    the classifier and the combination use a subsample of ``n_classifier_candidates`` of them
    (``tensor_on_classifier_sample`` is the tensor model on that same subsample);
    with ``exact: true`` the tensor, matrix and popularity models are also ranked against every
    cell (``exact`` block). Ties are broken at random in expectation.

    Args:
        store: entry store.
        out_metrics: output JSON.
        settings: the ``recommender`` config section.
        classifier_model: the E_hull classifier's model file (optional).
        target_elements: elements always included in the tensor.

    Returns:
        The metrics dictionary that was written.
    """
    s = _settings(settings)
    t0 = time.perf_counter()
    entries = read_entries(store, ["formula", "is_experimental"])
    ternary = _ternary_formulas(entries, s["known"])
    space = _space_for(ternary, s, target_elements)
    cells, _ = space.cells(ternary)
    flat = np.unique(space.flat(cells))
    rng = np.random.default_rng(int(s["evaluation"]["seed"]))
    metrics: dict[str, Any] = {
        "description": (
            "recall@k: expected fraction of held-out known compositions ranked in the top k of all "
            "unknown plus held-out cells (k = fraction of candidates); enrichment = recall / (k / N), "
            "1 for random order"
        ),
        "settings": s,
        "tensor_shape": list(space.shape),
        "n_cells": int(space.n_cells),
        "n_known_cells": int(len(flat)),
        "known": s["known"],
        "splits": {},
    }
    for kind in ("random", "chemsys"):
        ts = time.perf_counter()
        metrics["splits"][kind] = _evaluate_split(kind, space, flat, s, rng, classifier_model)
        metrics["splits"][kind]["seconds"] = round(time.perf_counter() - ts, 2)
        log.info(
            "split %s: %s",
            kind,
            json.dumps(metrics["splits"][kind].get("methods", {}).get("tensor", {})),
        )
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    with atomic_write(out_metrics) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    return metrics


def plot_enrichment(metrics: dict[str, Any], path: str | Path) -> None:
    """Bar chart of the enrichment over random order per method, split and top-k fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = {k: v for k, v in metrics.get("splits", {}).items() if "methods" in v}
    fig, axes = plt.subplots(
        1, max(len(splits), 1), figsize=(5.5 * max(len(splits), 1), 4.2), squeeze=False
    )
    for ax, (kind, res) in zip(axes[0], splits.items(), strict=False):
        methods = [m for m in res["methods"] if m != "random"]
        tags = [k.split("@")[1] for k in res["methods"]["random"] if k.startswith("enrichment@")]
        width = 0.8 / max(len(tags), 1)
        for t, tag in enumerate(tags):
            vals = [max(res["methods"][m].get(f"enrichment@{tag}", np.nan), 1e-2) for m in methods]
            ax.bar(np.arange(len(methods)) + t * width, vals, width, label=f"top {tag}")
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(methods)) + width * (len(tags) - 1) / 2, methods, rotation=20)
        ax.set_ylabel("enrichment over random order")
        ax.set_title(
            f"{kind} split: {res['n_hidden_cells']} held-out of {res['n_candidates']:.3g} candidates",
            fontsize=9,
        )
        ax.legend(fontsize=8)
    if not splits:
        axes[0][0].text(0.5, 0.5, "no split could be evaluated", ha="center")
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
