"""Formulas parsed once into a sparse composition matrix (CSR), composition keys, chemical
systems and ElMD profiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matdisco.core.composition import (
    FormulaError,
    element_amounts,
    scale_cdf,
)
from matdisco.features.elements import ElementTable

__all__ = [
    "ParsedFormulas",
    "parse_formulas",
    "composition_keys",
    "keys_and_systems",
    "pettifor_cdf",
]


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


def keys_and_systems(
    parsed: ParsedFormulas, table: ElementTable, digits: int = 6
) -> tuple[list[str], list[str]]:
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


def pettifor_cdf(
    parsed: ParsedFormulas,
    table: ElementTable,
    scale: str = "elmd_mod_petti",
    dtype: type = np.float32,
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
