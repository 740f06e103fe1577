"""Cross-validation folds: stratified by label, and grouped by chemical system."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["stratified_folds", "chemsys_folds"]


def stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row, stratified by label (shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedKFold

    folds = np.empty(len(y), dtype=np.int64)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, te) in enumerate(skf.split(np.zeros(len(y)), y)):
        folds[te] = k
    return folds


def chemsys_folds(groups: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row such that every chemical system lies in exactly one fold.

    Groups are shuffled with ``seed`` and dealt out largest first to the currently smallest
    fold, so folds have nearly equal sizes.
    """
    codes, uniq = pd.factorize(pd.Series(list(groups)), sort=True)
    sizes = np.bincount(codes, minlength=len(uniq))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(uniq))
    order = perm[np.argsort(-sizes[perm], kind="stable")]
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    load = np.zeros(n_folds, dtype=np.int64)
    for g in order:
        k = int(np.argmin(load))
        fold_of_group[g] = k
        load[k] += sizes[g]
    return fold_of_group[codes]
