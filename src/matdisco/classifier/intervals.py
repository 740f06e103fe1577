"""95% bootstrap intervals of the binary metrics (ROC-AUC, PR-AUC, ECE, Brier).

A bootstrap replicate resamples the evaluated rows with replacement; instead of copying rows,
each replicate is a vector of row multiplicities, and the metrics are computed as weighted
sums over the rows sorted once by score (ties grouped), so a replicate costs O(n) numpy work
and 1,000 replicates of 50,000 rows take seconds. With unit weights the point values equal
scikit-learn's ``roc_auc_score``, ``average_precision_score`` and
:func:`matdisco.classifier.calibration.expected_calibration_error` (tested).

Intervals are percentile intervals (2.5% and 97.5% of the replicates) of the row bootstrap:
they describe the sampling noise of the evaluated rows, not the variation over retrainings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "BinaryScorer",
    "bootstrap_binary_metrics",
    "paired_bootstrap_difference",
    "compare_with_baselines",
]

METRICS = ("roc_auc", "pr_auc", "ece", "brier")


class BinaryScorer:
    """Weighted ROC-AUC, average precision, ECE and Brier score of one (y, p) set.

    Args:
        y: 0/1 labels.
        p: scores in [0, 1] (ECE and Brier need probabilities).
        n_bins: equal-width bins of the ECE.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> None:
        y = np.asarray(y, dtype=float)
        p = np.asarray(p, dtype=float)
        if y.shape != p.shape:
            raise ValueError(f"labels {y.shape} and scores {p.shape} differ in shape")
        self.n = len(y)
        self.y = y
        self.p = p
        # tie groups of the score, ascending
        _, self.group = np.unique(p, return_inverse=True)
        self.n_groups = int(self.group.max()) + 1 if self.n else 0
        self.ece_bin = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
        self.n_bins = n_bins
        self.sq = (p - y) ** 2

    def metrics(self, w: np.ndarray | None = None) -> dict[str, float]:
        """The four metrics with row weights ``w`` (None = all 1)."""
        w = np.ones(self.n) if w is None else np.asarray(w, dtype=float)
        wp = w * self.y
        wn = w - wp
        pos = np.bincount(self.group, wp, self.n_groups)
        neg = np.bincount(self.group, wn, self.n_groups)
        P, N, W = pos.sum(), neg.sum(), w.sum()
        out = {"roc_auc": np.nan, "pr_auc": np.nan}
        if P > 0 and N > 0:
            neg_below = np.cumsum(neg) - neg
            out["roc_auc"] = float(np.sum(pos * (neg_below + 0.5 * neg)) / (P * N))
            # average precision: thresholds at each distinct score, from the top
            tp = np.cumsum(pos[::-1])
            fp = np.cumsum(neg[::-1])
            has_pos = pos[::-1] > 0
            prec = tp / np.maximum(tp + fp, 1e-300)
            out["pr_auc"] = float(np.sum((pos[::-1] / P)[has_pos] * prec[has_pos]))
        sy = np.bincount(self.ece_bin, wp, self.n_bins)
        sp = np.bincount(self.ece_bin, w * self.p, self.n_bins)
        out["ece"] = float(np.sum(np.abs(sy - sp)) / max(W, 1e-300))
        out["brier"] = float(np.sum(w * self.sq) / max(W, 1e-300))
        return out


def _weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)])


def _summary(value: float, reps: np.ndarray) -> dict[str, float]:
    reps = reps[np.isfinite(reps)]
    lo, hi = np.percentile(reps, [2.5, 97.5]) if len(reps) else (np.nan, np.nan)
    # a percentile interval can miss the full-sample value when the statistic is biased
    # (ECE is biased upwards); report it as is but never with lo > value > hi reversed
    return {
        "value": round(float(value), 6),
        "lo": round(float(min(lo, value)), 6),
        "hi": round(float(max(hi, value)), 6),
    }


def bootstrap_binary_metrics(
    y: np.ndarray, p: np.ndarray, *, n_boot: int, seed: int, n_bins: int = 10
) -> dict[str, Any]:
    """Point value and 95% row-bootstrap interval of ROC-AUC, PR-AUC, ECE and Brier.

    Args:
        y: 0/1 labels.
        p: probabilities.
        n_boot: bootstrap replicates (0 = point values only, lo = hi = value).
        seed: seed of the resampling.
        n_bins: ECE bins.

    Returns:
        ``{metric: {"value", "lo", "hi"}}`` plus ``n`` and ``n_boot``. ``lo``/``hi`` are
        widened to include the point value if the percentile interval misses it (this
        happens for ECE, a biased statistic, on well-calibrated data).
    """
    sc = BinaryScorer(y, p, n_bins)
    point = sc.metrics()
    out: dict[str, Any] = {"n": sc.n, "n_boot": int(n_boot)}
    if n_boot > 0 and sc.n:
        reps = np.array([list(sc.metrics(w).values()) for w in _weights(sc.n, n_boot, seed)])
    else:
        reps = np.array([[point[m] for m in METRICS]])
    for j, m in enumerate(point):
        out[m] = _summary(point[m], reps[:, j])
    return out


def paired_bootstrap_difference(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    n_bins: int = 10,
) -> dict[str, dict[str, float]]:
    """Metric of ``p_a`` minus metric of ``p_b`` on the same resampled rows (95% interval).

    The paired interval is what says whether a model beats a baseline on these rows: the
    two separate intervals overlap more than the noise of the difference warrants.
    """
    a, b = BinaryScorer(y, p_a, n_bins), BinaryScorer(y, p_b, n_bins)
    pa, pb = a.metrics(), b.metrics()
    ws = _weights(a.n, n_boot, seed) if n_boot > 0 and a.n else np.ones((1, a.n))
    reps = np.array(
        [
            [x - z for x, z in zip(a.metrics(w).values(), b.metrics(w).values(), strict=True)]
            for w in ws
        ]
    )
    return {m: _summary(pa[m] - pb[m], reps[:, j]) for j, m in enumerate(pa)}


def compare_with_baselines(
    y: np.ndarray,
    p_model: np.ndarray,
    baselines: dict[str, np.ndarray],
    n_boot: int,
    seed: int,
    bins: int,
) -> dict[str, Any]:
    """Model and baselines with 95% bootstrap intervals on the same rows, and the paired
    model-minus-strongest-baseline difference (strongest = the higher ROC-AUC here).

    All scores share the same resamples (one set of row weights), so the paired difference
    is read off the per-replicate metrics without recomputing them.
    """
    scorers = {"model": BinaryScorer(y, p_model, bins)}
    scorers.update({name: BinaryScorer(y, p, bins) for name, p in baselines.items()})
    n = len(np.asarray(y))
    ws = _weights(n, n_boot, seed) if n_boot > 0 and n else np.ones((1, n))
    point = {k: sc.metrics() for k, sc in scorers.items()}
    reps = {k: np.array([list(sc.metrics(w).values()) for w in ws]) for k, sc in scorers.items()}

    def block(k: str) -> dict[str, Any]:
        out: dict[str, Any] = {"n": n, "n_boot": int(n_boot)}
        for j, m in enumerate(METRICS):
            out[m] = _summary(point[k][m], reps[k][:, j])
        return out

    res: dict[str, Any] = {"model": block("model")}
    res["baselines"] = {name: block(name) for name in baselines}
    best = max(baselines, key=lambda b: point[b]["roc_auc"])
    res["strongest_baseline"] = best
    res["model_minus_strongest_baseline"] = {
        m: _summary(point["model"][m] - point[best][m], reps["model"][:, j] - reps[best][:, j])
        for j, m in enumerate(METRICS)
    }
    return res
