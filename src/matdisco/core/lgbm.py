"""The one LightGBM-ensemble helper of matdisco (stability classifier and band-gap surrogate).

Every LightGBM model of the pipeline is built by :func:`lgbm_estimator`, so both users share
the same conventions:

* seeded (``random_state``) and ``deterministic=True``: the same data, parameters and seed
  give the same trees;
* ``force_col_wise=True`` (column-wise histograms: no per-tree heuristics) and
  ``OMP_WAIT_POLICY=PASSIVE`` (set on import when not set: LightGBM's OpenMP threads spin
  while waiting by default, which made 2 threads 5-10x slower than 1 on a shared machine
  in our measurements; passive waiting costs nothing on an idle one);
* row bagging (``subsample_freq=1``) only when ``subsample < 1``;
* ``n_jobs`` = the rule's threads (at least 1), silent (``verbose=-1``).

:func:`fit_member` fits one seeded member, :func:`fit_ensemble` one member per row subset
(its own seed each), :func:`fit_members_parallel` several members at once (Python threads,
one LightGBM thread each, so a member's trees do not depend on the thread count),
:func:`predict_members` stacks the members' predictions and
:func:`ensemble_mean_std` reduces them to the ensemble mean and spread (plain mean, or the
mean in logit space for probabilities).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from matdisco.settings import SettingsBase

__all__ = [
    "lgbm_estimator",
    "fit_member",
    "fit_ensemble",
    "MemberSpec",
    "fit_members_parallel",
    "predict_members",
    "ensemble_mean_std",
    "logit",
]

# Takes effect if lightgbm (its OpenMP runtime) is first imported after this module.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

Kind = Literal["classifier", "regressor"]


def lgbm_estimator(
    kind: Kind, params: SettingsBase | Mapping[str, Any], *, seed: int, threads: int
) -> Any:
    """An unfitted LightGBM scikit-learn estimator with matdisco's conventions.

    Args:
        kind: ``classifier`` (binary objective) or ``regressor`` (L2 objective).
        params: LightGBM hyperparameters (a ``*.lightgbm`` settings section or a mapping of
            scikit-learn API names: n_estimators, learning_rate, num_leaves, subsample, ...).
        seed: ``random_state``.
        threads: ``n_jobs`` (values below 1 mean 1).

    Returns:
        ``lightgbm.LGBMClassifier`` or ``lightgbm.LGBMRegressor``.

    Raises:
        ValueError: unknown ``kind``.
    """
    import lightgbm as lgb

    p = dict(params.to_dict() if isinstance(params, SettingsBase) else params)
    subsample = float(p.pop("subsample", 1.0))
    kw = {
        "subsample": subsample,
        "subsample_freq": 1 if subsample < 1.0 else 0,
        "random_state": int(seed),
        "n_jobs": max(1, int(threads)),
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
        **p,
    }
    if kind == "classifier":
        return lgb.LGBMClassifier(objective="binary", **kw)
    if kind == "regressor":
        return lgb.LGBMRegressor(objective="regression", **kw)
    raise ValueError(f"unknown LightGBM model kind {kind!r} (classifier | regressor)")


def fit_member(
    X: np.ndarray,
    y: np.ndarray,
    params: SettingsBase | Mapping[str, Any],
    *,
    kind: Kind = "classifier",
    seed: int,
    threads: int = 1,
) -> Any:
    """Fit one seeded member on all rows of ``X``, ``y`` (see :func:`lgbm_estimator`)."""
    return lgbm_estimator(kind, params, seed=seed, threads=threads).fit(X, y)


@dataclass(frozen=True)
class MemberSpec:
    """One member to fit: ``X[rows]``, ``y[rows]`` with ``params``, ``kind`` and ``seed``."""

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    params: SettingsBase | Mapping[str, Any]
    kind: Kind
    seed: int


def fit_members_parallel(specs: Sequence[MemberSpec], threads: int = 1) -> list[Any]:
    """Fit every spec; with ``threads`` > 1, up to ``threads`` members at once.

    Each member runs single-threaded inside its own Python thread (LightGBM releases the GIL
    while it trains), so the fitted trees are those of ``threads=1`` whatever ``threads`` is:
    the rule's thread count changes the wall time, not the model. With one spec the member
    gets all the threads instead.

    Returns:
        the fitted members, in the order of ``specs``.

    Raises:
        ValueError: a spec has no rows.
    """
    empty = [m for m, sp in enumerate(specs) if len(sp.rows) == 0]
    if empty:
        raise ValueError(f"ensemble member {empty[0]} has no training rows")
    workers = max(1, min(int(threads), len(specs)))

    def fit(sp: MemberSpec, n: int) -> Any:
        return fit_member(
            sp.X[sp.rows], sp.y[sp.rows], sp.params, kind=sp.kind, seed=sp.seed, threads=n
        )

    if workers == 1:
        return [fit(sp, max(1, int(threads)) if len(specs) == 1 else 1) for sp in specs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda sp: fit(sp, 1), specs))


def fit_ensemble(
    X: np.ndarray,
    y: np.ndarray,
    params: SettingsBase | Mapping[str, Any],
    *,
    rows: Sequence[np.ndarray],
    seeds: Sequence[int],
    kind: Kind = "classifier",
    threads: int = 1,
) -> list[Any]:
    """One member per row subset: member m is fit on ``X[rows[m]], y[rows[m]]`` with ``seeds[m]``
    (by :func:`fit_members_parallel`).

    Raises:
        ValueError: ``rows`` and ``seeds`` differ in length, or a subset is empty.
    """
    if len(rows) != len(seeds):
        raise ValueError(f"{len(rows)} row subsets but {len(seeds)} seeds")
    specs = [
        MemberSpec(X, y, idx, params, kind, seed) for idx, seed in zip(rows, seeds, strict=True)
    ]
    return fit_members_parallel(specs, threads)


def predict_members(members: Sequence[Any], X: np.ndarray) -> np.ndarray:
    """(n_members, n) predictions: P(class 1) of classifiers, values of regressors.

    Members may be fitted scikit-learn estimators or ``lightgbm.Booster`` objects (whose
    ``predict`` gives P(class 1) for a binary objective).
    """
    out = np.empty((len(members), len(X)))
    if len(X) == 0:
        return out
    for m, model in enumerate(members):
        out[m] = (
            model.predict_proba(X)[:, 1] if hasattr(model, "predict_proba") else model.predict(X)
        )
    return out


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``log(p / (1 - p))`` of ``p`` clipped to ``[eps, 1 - eps]``."""
    q = np.clip(p, eps, 1 - eps)
    return np.log(q / (1 - q))


def ensemble_mean_std(
    member_values: np.ndarray, *, space: Literal["linear", "logit"] = "linear"
) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and spread (standard deviation over the members) per column.

    Args:
        member_values: (n_members, n) from :func:`predict_members` (or derived from it).
        space: ``linear`` = plain mean; ``logit`` = probabilities averaged in logit space
            (``sigmoid(mean(logit(p)))``), which keeps the sharpness of single members a
            calibrator was fit on (a plain mean of probabilities is under-confident). The
            spread is always the standard deviation of the values themselves.

    Returns:
        ``(mean, std)``, each of length n.
    """
    v = np.asarray(member_values, dtype=float)
    if v.shape[-1] == 0:
        return np.zeros(0), np.zeros(0)
    if space == "logit":
        mean = 1.0 / (1.0 + np.exp(-logit(v).mean(axis=0)))
    elif space == "linear":
        mean = v.mean(axis=0)
    else:
        raise ValueError(f"unknown averaging space {space!r} (linear | logit)")
    return mean, v.std(axis=0)
