"""Simple baselines for the stability classifier, scored on the same rows as the model.

Two composition-prior baselines, both computed from the labelled *training* rows of the split
at hand only (as the model is):

* ``chemsys_prior``: the stable fraction of the training compounds of the query's chemical
  system, smoothed towards the training stable fraction (one pseudo-count); the training
  stable fraction when the system has no training compound. No fitting.
* ``nearest_neighbour``: a logistic regression on the neighbour description of
  :func:`matdisco.classifier.neighbours.neighbour_features` (number of same-system training
  compounds, their stable fraction, ElMD to the nearest and nearest stable one, the nearest
  one's E_hull, stable compounds in subsystems; missing values get indicator columns) and the
  number of elements. This is "the label of the nearest known composition by ElMD" made into
  a probability; it is the stronger of the two and the one metrics call *the* baseline.

The logistic regression is fit on out-of-fold neighbour descriptions (each fold's rows
described by the other folds' rows) and is cross-fitted on the CV rows, so no row's baseline
probability saw its own label.
"""

from __future__ import annotations

import numpy as np

from matdisco.classifier.neighbours import Compositions, neighbour_features

__all__ = ["chemsys_prior", "baseline_design", "fit_baseline", "predict_baseline", "BASELINES"]

BASELINES = ("chemsys_prior", "nearest_neighbour")


def chemsys_prior(nb: np.ndarray, prior: float) -> np.ndarray:
    """Smoothed stable fraction of the same chemical system (columns of ``neighbour_features``)."""
    n = np.nan_to_num(nb[:, 0].astype(float))
    frac = np.nan_to_num(nb[:, 1].astype(float))
    return (n * frac + prior) / (n + 1.0)


def baseline_design(nb: np.ndarray, chemsys: np.ndarray) -> np.ndarray:
    """Design matrix of the nearest-neighbour baseline from ``neighbour_features`` output."""
    nb = nb.astype(float)
    miss = ~np.isfinite(nb[:, 1:5])
    filled = np.where(np.isfinite(nb), nb, 0.0)
    n_el = np.array([c.count("-") + 1 if c else 0 for c in chemsys], dtype=float)
    cols = [
        np.log1p(filled[:, 0]),
        filled[:, 1],
        np.minimum(filled[:, 2], 10.0),
        np.minimum(filled[:, 3], 10.0),
        np.clip(filled[:, 4], 0.0, 1.0),
        np.log1p(filled[:, 5]),
        miss[:, 0],
        miss[:, 2],
        *(n_el == k for k in (1, 2, 3, 4)),
        n_el >= 5,
    ]
    return np.column_stack(cols).astype(float)


def fit_baseline(Z: np.ndarray, y: np.ndarray):  # noqa: ANN201 - sklearn pipeline
    """Logistic regression (standardised inputs) of the nearest-neighbour baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(
        Z, np.asarray(y, int)
    )


def predict_baseline(model, Z: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """P(stable) of the nearest-neighbour baseline."""
    if len(Z) == 0:
        return np.zeros(0)
    return model.predict_proba(Z)[:, 1]


def describe(
    comps: Compositions,
    query: np.ndarray,
    ref: np.ndarray,
    y: np.ndarray,
    ehull: np.ndarray,
) -> np.ndarray:
    """``neighbour_features`` of rows ``query`` against the training rows ``ref``."""
    return neighbour_features(comps.take(query), comps.take(ref), y[ref], ehull[ref])


def crossfit_baseline(
    nb: np.ndarray, chemsys: np.ndarray, y: np.ndarray, folds: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour baseline probabilities of CV rows, cross-fitted over ``folds``."""
    Z = baseline_design(nb, chemsys)
    out = np.empty(len(y))
    for f in np.unique(folds):
        te = folds == f
        out[te] = predict_baseline(fit_baseline(Z[~te], y[~te]), Z[te])
    return out
