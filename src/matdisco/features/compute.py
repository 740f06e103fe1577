"""The vectorised feature computation (:func:`featurize`) and ElMD between formula lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from matdisco.features.elements import STATS, ElementTable
from matdisco.features.parse import (
    ParsedFormulas,
    keys_and_systems,
    parse_formulas,
    pettifor_cdf,
)

__all__ = ["FeatureSet", "featurize", "elmd"]


@dataclass
class FeatureSet:
    """A feature matrix with its formulas and rejects.

    Attributes:
        formulas: formulas as given (row order).
        X: (n, n_features) float32; NaN rows for invalid formulas (NaN also marks a feature
            that is undefined for a row, e.g. a valence fraction with no valence electrons).
        feature_names: column names.
        valid: (n,) bool.
        reasons: '' for valid rows, else the reject reason.
        keys: canonical composition key per row ('' if invalid), see :func:`composition_keys`.
        elements: per row, the '-'-joined sorted element symbols (its chemical system).
    """

    formulas: list[str]
    X: np.ndarray
    feature_names: list[str]
    valid: np.ndarray
    reasons: list[str]
    keys: list[str]
    elements: list[str]

    def frame(self) -> pd.DataFrame:
        """The feature matrix as a DataFrame indexed by formula."""
        return pd.DataFrame(
            self.X, index=pd.Index(self.formulas, name="formula"), columns=self.feature_names
        )

    def rejects(self) -> pd.DataFrame:
        """Rejected formulas with their reasons."""
        bad = ~self.valid
        return pd.DataFrame(
            {
                "formula": np.asarray(self.formulas, dtype=object)[bad],
                "reason": np.asarray(self.reasons, dtype=object)[bad],
            }
        )

    def take(self, index: Sequence[int] | np.ndarray) -> FeatureSet:
        """Rows in ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        pick = lambda xs: [xs[i] for i in index]  # noqa: E731
        return FeatureSet(
            pick(self.formulas),
            self.X[index],
            list(self.feature_names),
            self.valid[index],
            pick(self.reasons),
            pick(self.keys),
            pick(self.elements),
        )


def _segment(op: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return op.reduceat(values, starts, axis=0)


def _combo_charges(contrib: np.ndarray) -> np.ndarray:
    """(m, k, w) per-element charge contributions -> (m, w**k) charge of every combination."""
    m = contrib.shape[0]
    charge = np.zeros((m, 1))
    for j in range(contrib.shape[1]):
        charge = (charge[:, :, None] + contrib[:, j, None, :]).reshape(m, -1)
    return charge


def _charge_balanced(
    parsed: ParsedFormulas, table: ElementTable, rows: np.ndarray, max_elements: int = 8
) -> np.ndarray:
    """1.0 if some choice of one common oxidation state per element sums to zero charge.

    Meet in the middle: the charges of all state combinations of the first half of the
    elements are matched against the negated charges of the second half (quantised to
    1e-7 e/atom, neighbours included), so a k-element formula costs ~2 w^(k/2), not w^k.
    Rows with more than ``max_elements`` elements get NaN.
    """
    out = np.full(len(rows), np.nan)
    width = max((len(v) for v in table.oxidation_states.values()), default=1)
    states = np.full((len(table.symbols), width), np.nan)
    for s, i in table.index.items():
        ox = table.oxidation_states.get(s, [0])
        states[i, : len(ox)] = ox
    k_all = parsed.n_elements[rows]
    ptr = parsed.row_ptr
    scale, off = 1e7, np.int64(1) << np.int64(34)
    for k in range(1, max_elements + 1):
        sel = np.flatnonzero(k_all == k)
        if not len(sel):
            continue
        h = k // 2
        chunk = max(1, 1_000_000 // width ** (k - h))
        for a in range(0, len(sel), chunk):
            part = sel[a : a + chunk]
            m = len(part)
            idx = ptr[rows[part]][:, None] + np.arange(k)[None, :]  # (m, k) positions in CSR
            contrib = parsed.frac[idx][:, :, None] * states[parsed.elem[idx]]  # (m, k, width)
            left, right = _combo_charges(contrib[:, :h]), -_combo_charges(contrib[:, h:])
            rid = np.arange(m, dtype=np.int64)
            codes = []
            for arr in (left, right):
                r = np.broadcast_to(rid[:, None], arr.shape)
                ok = np.isfinite(arr)
                codes.append(r[ok] * (off * 4) + np.rint(arr[ok] * scale).astype(np.int64) + off)
            found = np.zeros(m, dtype=bool)
            for d in (-1, 0, 1):
                hit = np.isin(codes[0], codes[1] + d)
                found[codes[0][hit] // (off * 4)] = True
            out[part] = found
    return out


def featurize(
    formulas: Sequence[str],
    table: ElementTable,
    *,
    stats: Sequence[str] = STATS,
    stoichiometry_norms: Sequence[int] = (0, 2, 3, 5, 7, 10),
    valence_orbitals: bool = True,
    ionic: bool = True,
    charge_balance: bool = True,
    element_fractions: bool = True,
    formula_unit: bool = True,
    dtype: type = np.float32,
) -> FeatureSet:
    """Featurise formulas (vectorised; each distinct formula parsed once).

    Args:
        formulas: chemical formulas (any order, repeats allowed).
        table: element properties (:meth:`ElementTable.from_files`).
        stats: which element-property statistics (subset of :data:`STATS`).
        stoichiometry_norms: p values of the L_p norms of the fraction vector (0 = count).
        valence_orbitals: add s/p/d/f valence-electron fractions (needs N*Valence columns).
        ionic: add max/avg ionic character (needs Electronegativity).
        charge_balance: add the charge-balance flag from common oxidation states.
        element_fractions: add the atomic fraction of every element (``frac_<symbol>``).
        formula_unit: add the size of the reduced formula unit (``formula_unit_atoms``,
            ``formula_unit_max_count``, ``formula_unit_min_count``; NaN for non-integer
            amounts).
        dtype: float dtype of the matrix.

    Returns:
        A :class:`FeatureSet`; invalid formulas are rows of NaN with a reason.
    """
    unknown = [s for s in stats if s not in STATS]
    if unknown:
        raise ValueError(f"unknown statistics {unknown} (allowed: {list(STATS)})")
    parsed = parse_formulas(formulas, table)
    n = len(parsed)
    rows = np.flatnonzero(parsed.valid)
    starts = parsed.row_ptr[rows]
    cnt = parsed.n_elements[rows]
    rep = np.repeat(np.arange(len(rows)), cnt)  # entry -> position among valid rows
    frac = parsed.frac
    P = table.values[parsed.elem]  # (nnz, n_props)
    names: list[str] = []
    blocks: list[np.ndarray] = []
    if len(rows):
        wf = frac[:, None]
        mean = _segment(np.add, wf * P, starts) if len(P) else np.zeros((0, P.shape[1]))
        computed: dict[str, np.ndarray] = {"mean": mean}
        if "avg_dev" in stats:
            computed["avg_dev"] = _segment(np.add, wf * np.abs(P - mean[rep]), starts)
        if {"minimum", "range"} & set(stats):
            computed["minimum"] = _segment(np.minimum, P, starts)
        if {"maximum", "range"} & set(stats):
            computed["maximum"] = _segment(np.maximum, P, starts)
        if "range" in stats:
            computed["range"] = computed["maximum"] - computed["minimum"]
        if "mode" in stats:
            fmax = _segment(np.maximum, frac, starts)
            is_max = frac >= fmax[rep] - 1e-12
            computed["mode"] = _segment(np.minimum, np.where(is_max[:, None], P, np.inf), starts)
        for s in stats:
            blocks.append(computed[s])
            names.extend(f"{s}_{p}" for p in table.properties)
        for p in stoichiometry_norms:
            names.append(f"L{p}_norm")
            if p == 0:
                blocks.append(cnt[:, None].astype(float))
            else:
                blocks.append((_segment(np.add, frac**p, starts) ** (1.0 / p))[:, None])
        if valence_orbitals:
            props = table.properties
            tot = mean[:, props.index("NValence")]
            with np.errstate(divide="ignore", invalid="ignore"):
                for orb in "spdf":
                    v = mean[:, props.index(f"N{orb}Valence")] / tot
                    blocks.append(np.where(tot > 0, v, np.nan)[:, None])
                    names.append(f"frac_{orb}_valence")
        if ionic:
            chi = table.column("Electronegativity")
            chi_e = chi[parsed.elem]
            dchi = _segment(np.maximum, chi_e, starts) - _segment(np.minimum, chi_e, starts)
            blocks.append((1.0 - np.exp(-0.25 * dchi**2))[:, None])
            names.append("max_ionic_char")
            kernel = np.exp(-0.25 * (chi[:, None] - chi[None, :]) ** 2)  # (E, E)
            # sum_ij f_i f_j K_ij via a sparse-times-dense product, chunked to bound memory
            quad = np.empty(len(rows))
            n_el = len(table.symbols)
            for a in range(0, len(rows), 20000):
                b = min(a + 20000, len(rows))
                lo, hi = parsed.row_ptr[rows[a]], parsed.row_ptr[rows[b - 1] + 1]
                dense = np.zeros((b - a, n_el))
                dense[rep[lo:hi] - a, parsed.elem[lo:hi]] = frac[lo:hi]
                quad[a:b] = np.einsum("ij,ij->i", dense @ kernel, dense)
            blocks.append((0.5 * (1.0 - quad))[:, None])
            names.append("avg_ionic_char")
        if charge_balance:
            blocks.append(_charge_balanced(parsed, table, rows)[:, None])
            names.append("charge_balanced")
        if formula_unit:
            amt = parsed.amount
            isint = np.abs(amt - np.rint(amt)) < 1e-6
            allint = np.logical_and.reduceat(isint, starts)
            gcd = np.gcd.reduceat(np.where(isint, np.rint(amt), 1).astype(np.int64), starts)
            red = amt / gcd[rep]
            unit = np.column_stack(
                [
                    _segment(np.add, red, starts),
                    _segment(np.maximum, red, starts),
                    _segment(np.minimum, red, starts),
                ]
            )
            blocks.append(np.where(allint[:, None], unit, np.nan))
            names += ["formula_unit_atoms", "formula_unit_max_count", "formula_unit_min_count"]
        if element_fractions:
            dense = np.zeros((len(rows), len(table.symbols)))
            dense[rep, parsed.elem] = frac
            blocks.append(dense)
            names += [f"frac_{e}" for e in table.symbols]
        Xv = np.hstack(blocks)
    else:
        Xv = None
        names = _feature_names(
            table,
            stats,
            stoichiometry_norms,
            valence_orbitals,
            ionic,
            charge_balance,
            element_fractions,
            formula_unit,
        )
    X = np.full((n, len(names)), np.nan, dtype=dtype)
    if Xv is not None:
        X[rows] = Xv
    keys, systems = keys_and_systems(parsed, table)
    return FeatureSet(
        list(parsed.formulas), X, names, parsed.valid.copy(), parsed.reasons, keys, systems
    )


def _feature_names(
    table, stats, norms, valence_orbitals, ionic, charge_balance, element_fractions, formula_unit
) -> list[str]:  # noqa: ANN001
    names = [f"{s}_{p}" for s in stats for p in table.properties]
    names += [f"L{p}_norm" for p in norms]
    if valence_orbitals:
        names += [f"frac_{o}_valence" for o in "spdf"]
    if ionic:
        names += ["max_ionic_char", "avg_ionic_char"]
    if charge_balance:
        names += ["charge_balanced"]
    if formula_unit:
        names += ["formula_unit_atoms", "formula_unit_max_count", "formula_unit_min_count"]
    if element_fractions:
        names += [f"frac_{e}" for e in table.symbols]
    return names


def elmd(
    a: Sequence[str], b: Sequence[str], table: ElementTable, scale: str = "elmd_mod_petti"
) -> np.ndarray:
    """Element Mover's Distance between paired formulas on a scalar scale (vectorised).

    On a 1-D scale with |x - y| ground distance, the earth mover's distance between two
    compositions is the integral of |CDF_a - CDF_b|; this equals ``ElMD(a).elmd(b)`` of the
    ElMD package for its default ``mod_petti`` metric.

    Args:
        a: formulas.
        b: formulas, same length as ``a`` (paired).
        table: element table holding the scale as a property.
        scale: property name of the scale.

    Returns:
        (n,) distances; NaN where either formula is invalid.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} vs {len(b)} formulas")
    pa, pb = parse_formulas(a, table), parse_formulas(b, table)
    ca, gaps = pettifor_cdf(pa, table, scale, np.float64)
    cb, _ = pettifor_cdf(pb, table, scale, np.float64)
    d = np.abs(ca - cb) @ gaps
    d[~(pa.valid & pb.valid)] = np.nan
    return d
