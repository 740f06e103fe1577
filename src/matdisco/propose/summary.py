"""Summary of a proposals ranking beside its baseline: random order over the charge-balanced pool.

The proposals of the target system cannot be scored against ground truth (they are unknown), so
the summary is small and labelled: the pool sizes, the random-pick expectation over the
charge-balanced pool, and the one measurable target, the positions the ranking gives to the
known compounds of the pool. That figure is *in-sample* (the recommender was fitted on those
compounds and the classifier trained on their labels), so it is an upper bound; the held-out
comparison with the same baselines is ``recommender/metrics.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ranking_summary"]


def ranking_summary(
    acquisition: np.ndarray, known: np.ndarray, n_enumerated: int, n_top: int
) -> dict[str, Any]:
    """Compare the acquisition ranking of the charge-balanced pool with random order.

    Args:
        acquisition: acquisition value of every pool candidate (higher = proposed first).
        known: whether each candidate is a known compound.
        n_enumerated: compositions enumerated before the charge-balance filter.
        n_top: number of proposals selected.

    Returns:
        JSON-ready dictionary: ``known_rank_fraction`` is the mean position of the known compounds
        among all pool candidates (0 = first, ties count half), 0.5 in expectation for random
        order over the pool; ``known_in_top`` counts known compounds ranked within ``n_top`` of
        the whole pool against the random expectation ``n_known * n_top / n_pool``.
    """
    acq = np.asarray(acquisition, dtype=float)
    known = np.asarray(known, dtype=bool)
    n_pool = len(acq)
    n_known = int(known.sum())
    n_unknown = n_pool - n_known
    out: dict[str, Any] = {
        "n_enumerated": int(n_enumerated),
        "n_pool_charge_balanced": n_pool,
        "n_known_in_pool": n_known,
        "n_unknown_in_pool": n_unknown,
        "n_selected": int(min(n_top, n_unknown)),
        "random_baseline": (
            "random order over the charge-balanced pool: each unknown candidate is selected with "
            f"probability {min(n_top, n_unknown)}/{n_unknown}"
            if n_unknown
            else "empty pool"
        ),
        "note": (
            "known compounds are in-sample (the recommender was fitted on them): their positions "
            "bound the ranking's quality from above; held-out figures with the same baselines are "
            "in recommender/metrics.json"
        ),
    }
    if n_known and n_pool:
        a = np.where(np.isnan(acq), -np.inf, acq)
        s = np.sort(a)
        higher = n_pool - np.searchsorted(s, a[known], side="right")
        ties = np.searchsorted(s, a[known], side="right") - np.searchsorted(s, a[known], "left")
        position = (higher + (ties - 1) / 2) / max(n_pool - 1, 1)
        k = min(n_top, n_pool)
        p_top = np.clip((k - higher) / ties, 0.0, 1.0)
        out["known_rank_fraction"] = float(position.mean())
        out["known_rank_fraction_random"] = 0.5
        out["known_in_top"] = float(p_top.sum())
        out["known_in_top_random"] = n_known * k / n_pool
    return out
