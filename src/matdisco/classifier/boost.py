"""Fast fitting of the classifier's fold models: binned once, fitted in parallel.

The classifier fits 5 stratified + ``n_grouped_folds`` grouped fold models on row subsets of
the same development rows. Instead of one scikit-learn ``LGBMClassifier.fit`` per fold (each
re-bins every feature, ~2 CPU s on the full label set), the rows are binned once into a
``lightgbm.Dataset`` (:func:`binned_dataset`) and each fold trains on a ``subset`` of it,
which shares the bin boundaries. The boundaries are feature quantiles of the development
rows (the held-out test rows never enter; labels are not used for binning), so a fold's
test rows take part in binning only through their feature values, as with any unsupervised
preprocessing fit on the development set.

The fits run in ``threads`` Python threads with one LightGBM thread each (LightGBM releases
the GIL while boosting): on 2 cores two independent fits scale better than one fit with two
OpenMP threads, and every booster is built with one thread whatever ``threads`` is, so the
models do not depend on the thread count.

Conventions are those of :func:`matdisco.core.lgbm.lgbm_estimator` (binary objective, seeded,
``deterministic``, ``force_col_wise``, row bagging only when ``subsample < 1``); the
hyperparameters are the ``classifier.lightgbm`` settings under their scikit-learn names,
translated by :func:`train_params`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from matdisco.settings import SettingsBase

__all__ = ["train_params", "binned_dataset", "fit_boosters"]

# scikit-learn API name -> LightGBM core parameter
_CORE_NAMES = {
    "learning_rate": "learning_rate",
    "num_leaves": "num_leaves",
    "min_child_samples": "min_data_in_leaf",
    "colsample_bytree": "feature_fraction",
    "reg_lambda": "lambda_l2",
}


def train_params(params: SettingsBase | Mapping[str, Any]) -> tuple[dict[str, Any], int, int]:
    """Core ``lightgbm.train`` parameters from scikit-learn-named hyperparameters.

    Returns:
        ``(params, num_boost_round, max_bin)``; the seed and threads are added per fit.

    Raises:
        ValueError: a hyperparameter this translation does not know.
    """
    p = dict(params.to_dict() if isinstance(params, SettingsBase) else params)
    rounds = int(p.pop("n_estimators", 100))
    max_bin = int(p.pop("max_bin", 255))
    subsample = float(p.pop("subsample", 1.0))
    unknown = sorted(set(p) - set(_CORE_NAMES))
    if unknown:
        raise ValueError(f"unknown classifier.lightgbm hyperparameters {unknown}")
    core = {
        "objective": "binary",
        "bagging_fraction": subsample,
        "bagging_freq": 1 if subsample < 1.0 else 0,
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
        **{_CORE_NAMES[k]: v for k, v in p.items()},
    }
    return core, rounds, max_bin


def binned_dataset(X: np.ndarray, y: np.ndarray, max_bin: int) -> Any:
    """A constructed ``lightgbm.Dataset`` of all rows (``subset`` it per fold)."""
    import lightgbm as lgb

    return lgb.Dataset(
        X,
        np.asarray(y, float),
        params={"max_bin": max_bin, "feature_pre_filter": False, "verbose": -1},
        free_raw_data=False,
    ).construct()


def fit_boosters(
    jobs: Sequence[tuple[Any, int]],
    params: SettingsBase | Mapping[str, Any],
    *,
    threads: int = 1,
) -> list[Any]:
    """Fit one booster per ``(dataset, seed)`` job, ``threads`` jobs at a time.

    Args:
        jobs: constructed ``lightgbm.Dataset`` (e.g. ``binned_dataset(...).subset(rows)``)
            and the member's seed.
        params: ``classifier.lightgbm`` settings (scikit-learn names).
        threads: concurrent fits (each with one LightGBM thread).

    Returns:
        ``lightgbm.Booster`` objects in job order.
    """
    import lightgbm as lgb

    core, rounds, _ = train_params(params)

    def one(job: tuple[Any, int]) -> Any:
        ds, seed = job
        return lgb.train({**core, "seed": int(seed), "num_threads": 1}, ds, num_boost_round=rounds)

    n = max(1, min(int(threads), len(jobs)))
    if n == 1:
        return [one(j) for j in jobs]
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, jobs))
