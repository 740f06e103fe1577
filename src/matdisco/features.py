"""Composition features: Magpie-style element-property statistics, vectorised.

Each formula is parsed once (:func:`matdisco.core.composition.element_amounts`, the one
parser of matdisco) into a sparse composition matrix (CSR: row pointer, element index, atomic fraction).
Every feature is then a handful of NumPy operations over all rows at once:

* element-property statistics from the bundled Magpie table, plus the modified Pettifor
  number of the ElMD scale (the 1-D space in which ElMD is an earth mover's distance):
  fraction-weighted ``mean``, mean absolute deviation ``avg_dev`` (= the ElMD between the
  composition and a point mass at its mean, for the Pettifor scale), ``minimum``,
  ``maximum``, ``range`` and ``mode`` (property of the most abundant element; ties take the
  smallest value), as in matminer's ``ElementProperty.from_preset("magpie")``;
* stoichiometry norms ``L_p = (sum_i f_i^p)^(1/p)`` for p in (0, 2, 3, 5, 7, 10); L0 is the
  number of elements;
* valence-orbital fractions ``frac_{s,p,d,f}_valence = <N_x valence> / <N valence>``;
* ionic character (matminer ``IonProperty``): ``max_ionic_char = 1 - exp(-(dchi_max)^2/4)``,
  ``avg_ionic_char = sum_{i<j} f_i f_j (1 - exp(-(chi_i - chi_j)^2/4))`` and
  ``charge_balanced`` (1 if one common oxidation state per element makes the formula
  neutral, 0 if none does, NaN for formulas with more than 8 elements);
* the size of the reduced formula unit (atoms, largest and smallest element count), which
  separates simple stoichiometries from large enumerated (often hypothetical) cells;
* the atomic fraction of every element (``frac_<symbol>``), so trees can learn
  element-specific effects the statistics average away.

A formula that cannot be featurised (syntax error, unknown element, element without data,
no positive amount) is never an exception: its row is NaN, ``valid`` is False and
``reasons`` says why. :func:`write_features` / :func:`read_features` cache a
:class:`FeatureSet` in HDF5.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.core.composition import (
    ELEMENT_SYMBOLS,
    FormulaError,
    common_oxidation_states,
    element_amounts,
    scale_cdf,
)
from matdisco.settings import FeaturesSettings

__all__ = [
    "ElementTable",
    "ParsedFormulas",
    "FeatureSet",
    "parse_formulas",
    "composition_keys",
    "featurize",
    "write_features",
    "read_features",
    "write_rejects",
    "elmd",
    "feature_kwargs",
    "featurize_store",
    "read_feature_meta",
    "pettifor_cdf",
    "keys_and_systems",
]

log = logging.getLogger("matdisco.features")

#: element symbols by atomic number (index 0 = Z 1)
SYMBOLS: tuple[str, ...] = ELEMENT_SYMBOLS
_Z = {s: i + 1 for i, s in enumerate(SYMBOLS)}

#: the Magpie element properties used (columns of the bundled table)
MAGPIE_PROPERTIES: tuple[str, ...] = (
    "Number",
    "MendeleevNumber",
    "AtomicWeight",
    "MeltingT",
    "Column",
    "Row",
    "CovalentRadius",
    "Electronegativity",
    "NsValence",
    "NpValence",
    "NdValence",
    "NfValence",
    "NValence",
    "NsUnfilled",
    "NpUnfilled",
    "NdUnfilled",
    "NfUnfilled",
    "NUnfilled",
    "GSvolume_pa",
    "GSbandgap",
    "GSmagmom",
    "SpaceGroupNumber",
)
STATS: tuple[str, ...] = ("mean", "avg_dev", "minimum", "maximum", "range", "mode")


# --------------------------------------------------------------------------------------
# element table
# --------------------------------------------------------------------------------------


@dataclass
class ElementTable:
    """Element properties, one row per element with data.

    Attributes:
        symbols: element symbols (rows).
        properties: property names (columns).
        values: (n_elements, n_properties) float array.
        oxidation_states: common oxidation states per symbol (pymatgen), for charge balance.
    """

    symbols: list[str]
    properties: list[str]
    values: np.ndarray
    oxidation_states: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def column(self, name: str) -> np.ndarray:
        """Values of one property for every element."""
        return self.values[:, self.properties.index(name)]

    @classmethod
    def from_files(
        cls,
        magpie_table: str | Path,
        elmd_table: str | Path | None = None,
        elmd_scale: str = "mod_petti",
    ) -> ElementTable:
        """Read the bundled Magpie table (csv) and optionally one ElMD scale (json[.gz]).

        Args:
            magpie_table: CSV with an ``element`` column and the Magpie properties.
            elmd_table: JSON (optionally gzipped) mapping scale -> {element: value}; the
                scale ``elmd_scale`` becomes one more property named ``elmd_<scale>``.
            elmd_scale: which ElMD scale to add (a scalar scale such as mod_petti).

        Returns:
            The table (elements without a value on the ElMD scale are dropped).
        """
        df = pd.read_csv(magpie_table, keep_default_na=False, na_values=[""])
        missing = [p for p in MAGPIE_PROPERTIES if p not in df.columns]
        if missing:
            raise ValueError(f"{magpie_table}: Magpie columns missing: {missing}")
        df = df.set_index("element")[list(MAGPIE_PROPERTIES)].astype(float)
        if elmd_table is not None:
            opener = gzip.open if str(elmd_table).endswith(".gz") else open
            with opener(elmd_table, "rt", encoding="utf-8") as fh:
                scales = json.load(fh)
            if elmd_scale not in scales:
                raise ValueError(f"{elmd_table}: no ElMD scale {elmd_scale!r} (have {sorted(scales)})")
            scale = scales[elmd_scale]
            if not all(isinstance(v, int | float) for v in scale.values()):
                raise ValueError(f"ElMD scale {elmd_scale!r} is not scalar; pick e.g. mod_petti")
            df[f"elmd_{elmd_scale}"] = pd.Series({k: float(v) for k, v in scale.items()})
            dropped = df.index[df[f"elmd_{elmd_scale}"].isna()].tolist()
            if dropped:
                log.warning("elements without an ElMD %s value dropped: %s", elmd_scale, dropped)
            df = df.dropna(subset=[f"elmd_{elmd_scale}"])
        unknown = [s for s in df.index if s not in _Z]
        if unknown:
            raise ValueError(f"{magpie_table}: unknown element symbols {unknown}")
        symbols = list(df.index)
        return cls(symbols, list(df.columns), df.to_numpy(dtype=np.float64), _oxidation_states(tuple(symbols)))

    def to_dict(self) -> dict[str, Any]:
        """Plain (picklable, JSON-able) form."""
        return {
            "symbols": list(self.symbols),
            "properties": list(self.properties),
            "values": self.values.tolist(),
            "oxidation_states": {k: list(v) for k, v in self.oxidation_states.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElementTable:
        """Inverse of :meth:`to_dict`."""
        return cls(list(d["symbols"]), list(d["properties"]), np.asarray(d["values"], float), dict(d["oxidation_states"]))


def _oxidation_states(symbols: tuple[str, ...]) -> dict[str, list[int]]:
    """pymatgen's common oxidation states ([0] for elements without any)."""
    return {s: list(common_oxidation_states(s)) for s in symbols}


# --------------------------------------------------------------------------------------
# formula parsing: one parser for all of matdisco (matdisco.core.composition)
# --------------------------------------------------------------------------------------


@dataclass
class ParsedFormulas:
    """Formulas parsed into a sparse composition matrix (CSR over the element table).

    Attributes:
        formulas: the formulas as given.
        valid: (n,) bool.
        reasons: '' for valid rows, else why the formula was rejected.
        row_ptr: (n + 1,) offsets; row i owns entries row_ptr[i]:row_ptr[i+1] (invalid rows none).
        elem: (nnz,) row index into the element table.
        amount: (nnz,) amount as written (after expanding groups).
        frac: (nnz,) atomic fraction within its row.
    """

    formulas: list[str]
    valid: np.ndarray
    reasons: list[str]
    row_ptr: np.ndarray
    elem: np.ndarray
    amount: np.ndarray
    frac: np.ndarray

    def __len__(self) -> int:
        return len(self.formulas)

    @property
    def n_elements(self) -> np.ndarray:
        """Number of distinct elements per row (0 for invalid rows)."""
        return np.diff(self.row_ptr)

    @property
    def row(self) -> np.ndarray:
        """(nnz,) row index of each entry."""
        return np.repeat(np.arange(len(self)), self.n_elements)

    def dense_fractions(self, n_elements: int) -> np.ndarray:
        """(n, n_elements) atomic-fraction matrix (zeros for invalid rows)."""
        out = np.zeros((len(self), n_elements))
        out[self.row, self.elem] = self.frac
        return out


def parse_formulas(formulas: Sequence[str], table: ElementTable) -> ParsedFormulas:
    """Parse many formulas (each distinct string once) against an element table.

    A formula with an element that has no row in ``table`` is rejected with that reason.
    """
    formulas = list(formulas)
    cache: dict[Any, tuple[list[int], list[float]] | str] = {}
    index = table.index
    counts = np.zeros(len(formulas), dtype=np.int64)
    elems: list[int] = []
    amts: list[float] = []
    reasons = [""] * len(formulas)
    for i, f in enumerate(formulas):
        try:
            res = cache[f]
        except KeyError:
            try:
                amounts = element_amounts(f)
                nodata = [s for s in amounts if s not in index]
                if nodata:
                    res = f"no element data for {', '.join(nodata)}"
                else:
                    res = ([index[s] for s in amounts], list(amounts.values()))
            except FormulaError as err:
                res = err.reason
            except TypeError:  # unhashable or odd object
                res = f"not a string ({type(f).__name__})"
            try:
                cache[f] = res
            except TypeError:
                pass
        if isinstance(res, str):
            reasons[i] = res
        else:
            counts[i] = len(res[0])
            elems.extend(res[0])
            amts.extend(res[1])
    row_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    elem = np.asarray(elems, dtype=np.int64)
    amount = np.asarray(amts, dtype=np.float64)
    valid = counts > 0
    frac = np.zeros_like(amount)
    if len(amount):
        starts = row_ptr[:-1][valid]
        totals = np.add.reduceat(amount, starts)
        frac = amount / np.repeat(totals, counts[valid])
    return ParsedFormulas(formulas, valid, reasons, row_ptr, elem, amount, frac)


def composition_keys(parsed: ParsedFormulas, table: ElementTable, digits: int = 6) -> list[str]:
    """Canonical key per formula: sorted symbols with atomic fractions (rounded).

    Two formulas have the same key exactly when they reduce to the same composition
    (``"Fe2O3"``, ``"Fe4O6"``, ``"O3Fe2"``); invalid formulas get ''.
    """
    return keys_and_systems(parsed, table, digits)[0]


def keys_and_systems(parsed: ParsedFormulas, table: ElementTable, digits: int = 6) -> tuple[list[str], list[str]]:
    """Composition keys (see :func:`composition_keys`) and chemical systems ('-'-joined sorted
    symbols) per row, built in one pass over the entries; '' for invalid rows."""
    syms = table.symbols
    rank = np.argsort(np.argsort(np.asarray(syms)))  # alphabetical rank of each table row
    order = np.lexsort((rank[parsed.elem], parsed.row))
    elem = parsed.elem[order]
    frac = np.round(parsed.frac[order], digits)
    memo: dict[tuple[int, float], str] = {}
    parts = []
    for e, f in zip(elem.tolist(), frac.tolist(), strict=True):
        key = (e, f)
        txt = memo.get(key)
        if txt is None:
            txt = memo[key] = f"{syms[e]}{f:g}"
        parts.append(txt)
    names = [syms[e] for e in elem.tolist()]
    ptr = parsed.row_ptr.tolist()
    keys = ["".join(parts[a:b]) for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
    systems = ["-".join(names[a:b]) for a, b in zip(ptr[:-1], ptr[1:], strict=True)]
    return keys, systems


# --------------------------------------------------------------------------------------
# featurisation
# --------------------------------------------------------------------------------------


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
        return pd.DataFrame(self.X, index=pd.Index(self.formulas, name="formula"), columns=self.feature_names)

    def rejects(self) -> pd.DataFrame:
        """Rejected formulas with their reasons."""
        bad = ~self.valid
        return pd.DataFrame(
            {"formula": np.asarray(self.formulas, dtype=object)[bad], "reason": np.asarray(self.reasons, dtype=object)[bad]}
        )

    def take(self, index: Sequence[int] | np.ndarray) -> FeatureSet:
        """Rows in ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        pick = lambda xs: [xs[i] for i in index]  # noqa: E731
        return FeatureSet(
            pick(self.formulas), self.X[index], list(self.feature_names), self.valid[index],
            pick(self.reasons), pick(self.keys), pick(self.elements),
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


def _charge_balanced(parsed: ParsedFormulas, table: ElementTable, rows: np.ndarray, max_elements: int = 8) -> np.ndarray:
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
                [_segment(np.add, red, starts), _segment(np.maximum, red, starts), _segment(np.minimum, red, starts)]
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
            table, stats, stoichiometry_norms, valence_orbitals, ionic, charge_balance, element_fractions, formula_unit
        )
    X = np.full((n, len(names)), np.nan, dtype=dtype)
    if Xv is not None:
        X[rows] = Xv
    keys, systems = keys_and_systems(parsed, table)
    return FeatureSet(list(parsed.formulas), X, names, parsed.valid.copy(), parsed.reasons, keys, systems)


def _feature_names(table, stats, norms, valence_orbitals, ionic, charge_balance, element_fractions, formula_unit) -> list[str]:  # noqa: ANN001
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


def elmd(a: Sequence[str], b: Sequence[str], table: ElementTable, scale: str = "elmd_mod_petti") -> np.ndarray:
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


# --------------------------------------------------------------------------------------
# HDF5 cache
# --------------------------------------------------------------------------------------


def write_features(path: str | Path, fs: FeatureSet, attrs: dict[str, Any] | None = None) -> None:
    """Write a FeatureSet to HDF5 atomically (``attrs`` as JSON in the root attributes)."""
    import h5py

    from matdisco.store import atomic_write

    s = h5py.string_dtype(encoding="utf-8")
    comp = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        kw = comp if len(fs.formulas) else {}
        h5.create_dataset("X", data=fs.X, **kw)
        h5.create_dataset("feature_names", data=np.asarray(fs.feature_names, dtype=object), dtype=s)
        for name in ("formulas", "reasons", "keys", "elements"):
            h5.create_dataset(name, data=np.asarray(getattr(fs, name), dtype=object), dtype=s, **kw)
        h5.create_dataset("valid", data=fs.valid, **kw)
        h5.attrs["format"] = "matdisco.features/1"
        h5.attrs["meta"] = json.dumps(attrs or {}, sort_keys=True, default=str)


def read_features(path: str | Path) -> FeatureSet:
    """Read a FeatureSet written by :func:`write_features`."""
    import h5py

    with h5py.File(path, "r") as h5:
        if h5.attrs.get("format") != "matdisco.features/1":
            raise ValueError(f"{path}: not a matdisco feature file")
        strs = {k: list(h5[k].asstr()[()]) for k in ("formulas", "reasons", "keys", "elements", "feature_names")}
        return FeatureSet(
            strs["formulas"], h5["X"][()], strs["feature_names"], h5["valid"][()].astype(bool),
            strs["reasons"], strs["keys"], strs["elements"],
        )


def write_rejects(path: str | Path, fs: FeatureSet) -> None:
    """CSV of rejected formulas (formula, reason); header only when none."""
    from matdisco.store import atomic_write

    with atomic_write(path) as tmp:
        fs.rejects().to_csv(tmp, index=False)


def feature_kwargs(settings: FeaturesSettings | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`featurize` from the ``features`` settings.

    Args:
        settings: :class:`~matdisco.settings.FeaturesSettings`, or a mapping read with its
            ``from_config`` (e.g. the settings stored in a model file); None = the defaults.
    """
    s = FeaturesSettings.coerce(settings)
    return {
        "stats": list(s.stats),
        "stoichiometry_norms": list(s.stoichiometry_norms),
        "valence_orbitals": s.valence_orbitals,
        "ionic": s.ionic,
        "charge_balance": s.charge_balance,
        "element_fractions": s.element_fractions,
        "formula_unit": s.formula_unit,
    }


def featurize_store(
    *,
    store: str | Path,
    extra_labels: str | Path | None,
    magpie_table: str | Path,
    elmd_table: str | Path | None,
    settings: FeaturesSettings | Mapping[str, Any] | None,
    out_features: str | Path,
    out_rejects: str | Path,
) -> FeatureSet:
    """The featurize stage: features of every distinct formula the pipeline knows.

    Formulas come from the store's ``/labels`` and ``/entries`` tables and from the optional
    extra label csv (column ``formula``). Rejected formulas go to ``out_rejects`` with their
    reason; they never stop the stage.
    """
    import time

    from matdisco.store import read_entries, read_labels

    t0 = time.perf_counter()
    s = FeaturesSettings.coerce(settings)
    if elmd_table:
        table = ElementTable.from_files(magpie_table, elmd_table, s.elmd_scale)
    else:
        table = ElementTable.from_files(magpie_table)
    formulas = list(read_labels(store)["formula"].astype(str)) + list(read_entries(store, ["formula"])["formula"].astype(str))
    if extra_labels:
        formulas += list(pd.read_csv(extra_labels, usecols=["formula"], keep_default_na=False, na_values=[""])["formula"].astype(str))
    formulas = list(dict.fromkeys(formulas))  # distinct, first-seen order
    t1 = time.perf_counter()
    fs = featurize(formulas, table, **feature_kwargs(s))
    dt = time.perf_counter() - t1
    write_features(
        out_features,
        fs,
        {"settings": s.to_dict(), "element_table": table.to_dict(), "n_formulas": len(formulas), "rejected": int((~fs.valid).sum())},
    )
    write_rejects(out_rejects, fs)
    log.info(
        "%d formulas, %d features, %d rejected; featurised in %.2f s (%.0f formulas/s), stage %.1f s",
        len(formulas), len(fs.feature_names), int((~fs.valid).sum()), dt, len(formulas) / max(dt, 1e-9),
        time.perf_counter() - t0,
    )
    return fs


def read_feature_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored with a feature file (settings, element table, counts)."""
    import h5py

    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs.get("meta", "{}"))


def pettifor_cdf(
    parsed: ParsedFormulas, table: ElementTable, scale: str = "elmd_mod_petti", dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative atomic-fraction profiles along a scalar element scale (for ElMD).

    The ElMD between formulas a and b is then ``np.abs(cdf[a] - cdf[b]) @ gaps``.

    Args:
        parsed: parsed formulas.
        table: element table holding ``scale`` as a property.
        scale: property name of the scale (default: the modified Pettifor number).
        dtype: float dtype of the result (float32 keeps memory small for many rows).

    Returns:
        ``(cdf, gaps)``: (n, G - 1) cumulative fractions over the G distinct scale
        values (rows of invalid formulas are zero) and the (G - 1,) gaps between them.
    """
    return scale_cdf(parsed.row, parsed.elem, parsed.frac, len(parsed), table.column(scale), dtype)
