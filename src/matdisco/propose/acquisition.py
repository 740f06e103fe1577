"""Acquisition functions over the combined classifier + recommender score, and the ranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ACQUISITIONS", "acquisition_scores", "rank_candidates"]

ACQUISITIONS = ("exploit", "explore", "ucb")


def acquisition_scores(
    p_stable: np.ndarray | None,
    p_std: np.ndarray | None,
    rec_score: np.ndarray | None,
    rec_std: np.ndarray | None,
    *,
    kind: str = "ucb",
    classifier_weight: float = 0.5,
    kappa: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combined mean, spread and acquisition value of candidates.

    ``mu = w p + (1 - w) q`` and ``sigma = sqrt(w^2 sd_p^2 + (1 - w)^2 sd_q^2)``; where one of the
    two scores is missing (None or NaN) the other is used alone. Missing spreads count as 0.

    Args:
        p_stable: classifier probabilities (or None).
        p_std: their uncertainty (or None).
        rec_score: recommender percentiles in 0..1 (or None).
        rec_std: their uncertainty (or None).
        kind: ``exploit`` (mu), ``explore`` (sigma) or ``ucb`` (mu + kappa sigma).
        classifier_weight: ``w``, the classifier's share of the mean.
        kappa: exploration weight of ``ucb``.

    Returns:
        ``(mu, sigma, acquisition)`` arrays.
    """
    if kind not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {kind!r}")
    arrays = [a for a in (p_stable, p_std, rec_score, rec_std) if a is not None]
    if not arrays:
        raise ValueError("need at least one of p_stable and rec_score")
    n = len(arrays[0])

    def arr(a: np.ndarray | None) -> np.ndarray:
        return np.full(n, np.nan) if a is None else np.asarray(a, dtype=float)

    p, sp, q, sq = arr(p_stable), arr(p_std), arr(rec_score), arr(rec_std)
    sp, sq = np.nan_to_num(sp, nan=0.0), np.nan_to_num(sq, nan=0.0)
    w = float(classifier_weight)
    has_p, has_q = ~np.isnan(p), ~np.isnan(q)
    wp = np.where(has_p & has_q, w, np.where(has_p, 1.0, 0.0))
    wq = np.where(has_p & has_q, 1.0 - w, np.where(has_q, 1.0, 0.0))
    mu = wp * np.nan_to_num(p) + wq * np.nan_to_num(q)
    mu[~has_p & ~has_q] = np.nan
    sigma = np.sqrt((wp * sp) ** 2 + (wq * sq) ** 2)
    if kind == "exploit":
        acq = mu.copy()
    elif kind == "explore":
        acq = sigma.copy()
    else:
        acq = mu + float(kappa) * sigma
    return mu, sigma, acq


def rank_candidates(
    acquisition: np.ndarray, mean: np.ndarray, formulas: Sequence[str]
) -> np.ndarray:
    """Order (indices, best first): acquisition, then mean, then formula; NaNs last."""
    acq = np.nan_to_num(np.asarray(acquisition, dtype=float), nan=-np.inf)
    mu = np.nan_to_num(np.asarray(mean, dtype=float), nan=-np.inf)
    names = np.asarray(list(formulas), dtype=object)
    return np.asarray(
        sorted(range(len(acq)), key=lambda i: (-acq[i], -mu[i], str(names[i]))), dtype=np.int64
    )
