"""Evaluation helpers of the band-gap surrogate (:mod:`matdisco.screen.bandgap`): held-out
errors, MAE with row-bootstrap intervals, the composition-prior baseline and the ±1σ spread
recalibration (:func:`fit_spread_scale`, :func:`coverage`, :func:`crossfit_coverage`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ONE_SIGMA",
    "fit_spread_scale",
    "coverage",
    "crossfit_coverage",
    "composition_prior",
]


def _errors(pred: np.ndarray, y: np.ndarray, window: tuple[float, float]) -> dict[str, Any]:
    err = pred - y
    nonmetal = y > 0
    win = nonmetal & (y >= window[0]) & (y <= window[1])
    return {
        "mae": round(float(np.mean(np.abs(err))), 4),
        "rmse": round(float(np.sqrt(np.mean(err**2))), 4),
        "mae_true_nonmetals": round(float(np.mean(np.abs(err[nonmetal]))), 4)
        if nonmetal.any()
        else None,
        "mae_window": round(float(np.mean(np.abs(err[win]))), 4) if win.any() else None,
        "n_window": int(win.sum()),
        "metal_accuracy": round(float(np.mean((pred > 0) == nonmetal)), 4),
        "n": len(y),
    }


#: two-sided coverage of ±1σ of a normal distribution
ONE_SIGMA = 0.6826894921370859


def fit_spread_scale(abs_err: np.ndarray, std: np.ndarray, target: float = ONE_SIGMA) -> float:
    """The factor ``a`` such that ``|error| <= a·std`` for a ``target`` fraction of the rows.

    The ``target`` quantile of ``|error| / std`` (a row with std 0 counts as covered when its
    error is 0 and as never covered otherwise). Fit it on held-out errors, not training ones.

    Raises:
        ValueError: no rows, or too many rows with std 0 and a non-zero error for any factor to
            reach the target.
    """
    abs_err = np.abs(np.asarray(abs_err, float))
    std = np.asarray(std, float)
    if len(abs_err) == 0:
        raise ValueError("no held-out rows to fit the spread scale on")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(std > 0, abs_err / std, np.where(abs_err > 1e-12, np.inf, 0.0))
    a = float(np.quantile(ratio, target, method="higher"))
    if not np.isfinite(a):
        raise ValueError(
            f"more than {1 - target:.0%} of the held-out rows have zero spread and a non-zero "
            "error: no spread scale reaches the target coverage"
        )
    return a


def coverage(abs_err: np.ndarray, std: np.ndarray, scale: float = 1.0) -> float:
    """Fraction of rows with ``|error| <= scale·std``."""
    return (
        float(np.mean(np.abs(abs_err) <= scale * np.asarray(std) + 1e-12))
        if len(abs_err)
        else float("nan")
    )


def crossfit_coverage(
    abs_err: np.ndarray, std: np.ndarray, groups: np.ndarray, seed: int, target: float = ONE_SIGMA
) -> float:
    """Honest coverage after rescaling: fit the scale on one half of the groups, measure on the
    other half, and the reverse (row-weighted mean of the two)."""
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(uniq)[: len(uniq) // 2].tolist())
    a = np.array([g in half for g in groups])
    hits = 0.0
    for fit, ev in ((a, ~a), (~a, a)):
        if fit.any() and ev.any():
            try:
                scale = fit_spread_scale(abs_err[fit], std[fit], target)
            except ValueError:  # no factor reaches the target on this half
                return float("nan")
            hits += coverage(abs_err[ev], std[ev], scale) * ev.sum()
    return hits / len(abs_err)


def _bootstrap_mae(
    abs_err: dict[str, np.ndarray], mask: np.ndarray | None, n_boot: int, seed: int
) -> dict[str, dict[str, float]]:
    """MAE with 95% row-bootstrap interval of each error vector (same resamples for all)."""
    n = len(next(iter(abs_err.values())))
    m = np.ones(n, bool) if mask is None else mask
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    if not m.any():
        return {k: {"value": None, "lo": None, "hi": None, "n": 0} for k in abs_err}
    idx = np.flatnonzero(m)
    reps = [rng.integers(0, len(idx), len(idx)) for _ in range(n_boot)]
    for k, e in abs_err.items():
        v = float(e[idx].mean())
        b = np.array([e[idx[r]].mean() for r in reps]) if n_boot else np.array([v])
        lo, hi = np.percentile(b, [2.5, 97.5])
        out[k] = {
            "value": round(v, 4),
            "lo": round(float(lo), 4),
            "hi": round(float(hi), 4),
            "n": int(len(idx)),
        }
    return out


def composition_prior(
    train_formulas: np.ndarray,
    train_systems: np.ndarray,
    train_gaps: np.ndarray,
    formulas: np.ndarray,
    systems: np.ndarray,
) -> np.ndarray:
    """Baseline gap: mean training gap of the same reduced formula, else of the same chemical
    system, else the training median."""
    by_f = pd.Series(train_gaps).groupby(np.asarray(train_formulas)).mean()
    by_s = pd.Series(train_gaps).groupby(np.asarray(train_systems)).mean()
    out = pd.Series(np.asarray(formulas)).map(by_f)
    out = out.fillna(pd.Series(np.asarray(systems)).map(by_s))
    return out.fillna(float(np.median(train_gaps))).to_numpy(float)
