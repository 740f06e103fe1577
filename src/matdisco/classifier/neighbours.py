"""Label-dependent neighbour features: the labelled compounds of the same chemical system,
always computed from the training rows of the fold at hand (:func:`neighbour_features`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from matdisco.features import ElementTable

__all__ = ["NEIGHBOUR_FEATURES", "Compositions", "neighbour_features"]

#: columns appended when ``neighbour_features`` is on
NEIGHBOUR_FEATURES: tuple[str, ...] = (
    "nb_n_same_chemsys",
    "nb_stable_fraction_same_chemsys",
    "nb_elmd_nearest",
    "nb_elmd_nearest_stable",
    "nb_ehull_nearest",
    "nb_n_stable_subsystems",
)


@dataclass
class Compositions:
    """What neighbour features need of a set of formulas: key, chemical system, ElMD profile."""

    keys: np.ndarray  # (n,) object
    chemsys: np.ndarray  # (n,) object
    cdf: np.ndarray  # (n, G-1) float32, see matdisco.features.pettifor_cdf
    gaps: np.ndarray  # (G-1,)

    @classmethod
    def from_formulas(cls, formulas: Sequence[str], table: ElementTable) -> Compositions:
        """Parse formulas (invalid ones get key '' and chemsys '')."""
        from matdisco.features import keys_and_systems, parse_formulas, pettifor_cdf

        if "elmd_mod_petti" not in table.properties:
            raise ValueError(
                "neighbour features need the ElMD mod_petti scale (set features.elmd_table)"
            )
        parsed = parse_formulas(formulas, table)
        keys, systems = keys_and_systems(parsed, table)
        cdf, gaps = pettifor_cdf(parsed, table)
        return cls(np.asarray(keys, dtype=object), np.asarray(systems, dtype=object), cdf, gaps)

    def take(self, index: np.ndarray) -> Compositions:
        """Rows in ``index``."""
        return Compositions(self.keys[index], self.chemsys[index], self.cdf[index], self.gaps)


def neighbour_features(
    query: Compositions,
    ref: Compositions,
    ref_y: np.ndarray,
    ref_ehull: np.ndarray,
    chunk: int = 50_000,
) -> np.ndarray:
    """Features of each query formula from the labelled reference formulas around it.

    Only references with the same chemical system count as neighbours, and a reference with
    the query's own composition never does (so a training formula never sees its own label,
    and a known formula at prediction time is judged by the other compounds of its system).

    Columns (:data:`NEIGHBOUR_FEATURES`): number of neighbours; their stable fraction; ElMD
    (modified Pettifor scale) to the nearest neighbour and to the nearest stable neighbour;
    E_hull of the nearest neighbour; number of stable references in proper subsystems with
    at least two elements. Undefined values are NaN.

    Args:
        query: formulas to describe.
        ref: labelled reference formulas.
        ref_y: (n_ref,) 0/1 stability labels.
        ref_ehull: (n_ref,) E_hull, eV/atom.
        chunk: pairs per distance batch (bounds memory).

    Returns:
        (n_query, 6) float32.
    """
    from itertools import combinations

    nq = len(query.keys)
    out = np.full((nq, len(NEIGHBOUR_FEATURES)), np.nan, dtype=np.float32)
    sys_codes, _ = pd.factorize(np.concatenate([query.chemsys, ref.chemsys]))
    key_codes, _ = pd.factorize(np.concatenate([query.keys, ref.keys]))
    qc, rc = sys_codes[:nq], sys_codes[nq:]
    qk, rk = key_codes[:nq], key_codes[nq:]
    order = np.argsort(rc, kind="stable")
    rcs = rc[order]
    lo = np.searchsorted(rcs, qc, "left")
    cnt = np.searchsorted(rcs, qc, "right") - lo
    cnt[query.chemsys == ""] = 0
    total = int(cnt.sum())
    pq = np.repeat(np.arange(nq), cnt)
    pr = order[np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)]
    keep = qk[pq] != rk[pr]
    pq, pr = pq[keep], pr[keep]
    d = np.empty(len(pq), dtype=np.float32)
    for a in range(0, len(pq), chunk):
        b = min(a + chunk, len(pq))
        d[a:b] = np.abs(query.cdf[pq[a:b]] - ref.cdf[pr[a:b]]) @ query.gaps
    ys = np.asarray(ref_y, float)[pr]
    n_same = np.bincount(pq, minlength=nq).astype(np.float32)
    n_stable = np.bincount(pq, weights=ys, minlength=nq)
    out[:, 0] = n_same
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, 1] = np.where(n_same > 0, n_stable / np.maximum(n_same, 1), np.nan)
    srt = np.lexsort((pr, d, pq))  # by query, then distance (ties: reference order)
    first_q, first = np.unique(pq[srt], return_index=True)
    out[first_q, 2] = d[srt][first]
    out[first_q, 4] = np.asarray(ref_ehull, float)[pr[srt][first]]
    stab = srt[ys[srt] > 0]
    first_q, first = np.unique(pq[stab], return_index=True)
    out[first_q, 3] = d[stab][first]
    # stable references in proper subsystems (>= 2 elements)
    stable_sys = pd.Series(ref.chemsys[np.asarray(ref_y) > 0]).value_counts().to_dict()
    memo: dict[str, int] = {}
    for i, cs in enumerate(query.chemsys):
        if not cs:
            continue
        v = memo.get(cs)
        if v is None:
            els = cs.split("-")
            v = sum(
                stable_sys.get("-".join(sub), 0)
                for k in range(2, len(els))
                for sub in combinations(els, k)
            )
            memo[cs] = v
        out[i, 5] = v
    return out
