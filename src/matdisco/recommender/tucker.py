"""Models of the composition tensor: Tucker decomposition (HOOI on the sparse tensor), the
(chemical system x ratio) matrix SVD and the popularity baseline, with their linear algebra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from matdisco.recommender.space import TernarySpace

__all__ = [
    "CellScorer",
    "MatrixModel",
    "TuckerModel",
    "fit_matrix",
    "fit_popularity",
    "tucker_hooi",
]


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
    """Top ``rank`` left singular vectors of ``y`` (via the smaller Gram matrix; zero rows
    stay 0)."""
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
    """Truncated SVD of the binary (system x ratio) matrix of known cells (Seko's matrix
    variant)."""
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
