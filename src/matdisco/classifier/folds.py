"""Cross-validation folds: stratified by label, grouped by chemical system, and the harder
subsystem-family hold-out (with the leak diagnostic :func:`labelled_subsystem_fraction`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "stratified_folds",
    "chemsys_folds",
    "family_holdout",
    "labelled_subsystem_fraction",
]


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


def _subsystems(cs: str) -> list[str]:
    """Proper subsystems with at least two elements of a chemical system ``A-B-C``."""
    from itertools import combinations

    els = cs.split("-")
    return ["-".join(sub) for k in range(2, len(els)) for sub in combinations(els, k)]


def labelled_subsystem_fraction(test_systems: Sequence[str], train_systems: Sequence[str]) -> float:
    """Fraction of the distinct test systems with a proper (>= 2 element) subsystem in training.

    A test system whose subsystem (e.g. Fe-O for Li-Fe-O) is labelled in training is only
    partly new; this is how much a chemical-system-grouped split still leaks.
    """
    train = set(train_systems)
    uniq = [cs for cs in set(test_systems) if cs]
    if not uniq:
        return float("nan")
    return float(np.mean([any(s in train for s in _subsystems(cs)) for cs in uniq]))


def family_holdout(
    groups: Sequence[str], test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A split that holds out whole subsystem families (the harder split).

    Test systems are a random ``test_fraction`` of the distinct chemical systems; training
    keeps only rows whose system is neither a subsystem nor a supersystem of any test system
    (so no test system has a labelled subsystem, nor a labelled system containing it, in
    training). Rows of excluded systems are in neither set.

    Returns:
        ``(train_rows, test_rows)`` index arrays.
    """
    systems = np.asarray(list(groups), dtype=object)
    uniq = sorted({cs for cs in systems if cs})
    rng = np.random.default_rng(seed)
    n_test = max(1, round(test_fraction * len(uniq)))
    test_sys = {uniq[i] for i in rng.choice(len(uniq), n_test, replace=False)}
    from itertools import combinations

    def subsets(cs: str) -> set[str]:
        els = cs.split("-")  # chemsys strings list their elements sorted
        return {"-".join(c) for k in range(1, len(els)) for c in combinations(els, k)}

    below_test = set().union(*(subsets(cs) for cs in test_sys))  # subsystems of test systems
    related = {
        cs: cs in below_test or bool(subsets(cs) & test_sys) for cs in uniq if cs not in test_sys
    }
    is_test = np.array([cs in test_sys for cs in systems])
    is_train = np.array([bool(cs) and cs not in test_sys and not related[cs] for cs in systems])
    return np.flatnonzero(is_train), np.flatnonzero(is_test)
