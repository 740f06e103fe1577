"""E_hull stability classifier: LightGBM on composition features, calibrated, with uncertainty.

Label: ``y = 1`` (stable) when the energy above hull is at most ``label_threshold`` eV/atom.
Labels come from the entry store's ``/labels`` table (MP E_hull per reduced formula);
optionally a second table (Bartel et al. 2020 decomposition enthalpies, stable <=> ΔH_d <= 0,
so ``E_hull = max(ΔH_d, 0)``) adds formulas to the *training* folds only. Formulas are
deduplicated by composition (:func:`matdisco.features.composition_keys`), store labels
first, so one composition can never sit on both sides of a split.

Evaluation (all on store-labelled formulas):

* held-out test split (``test_fraction``, stratified) scored with the shipped model;
* stratified random k-fold CV on the rest (the development set); its fold models, each
  seeded differently and trained on (k-1)/k of the data, are the shipped ensemble, and their
  out-of-fold (OOF) predictions fit the probability calibrator (isotonic or Platt);
* k-fold CV grouped by chemical system (no chemical system in both train and test).

Calibration quality is measured honestly: calibrated OOF metrics use a cross-fitted
calibrator (fit on the other folds' OOF predictions), and the held-out test is never seen.
A prediction's ``p_stable`` is the logit-space mean of the members' calibrated
probabilities, ``p_stable_std`` their standard deviation.

Optional label-dependent neighbour features (:func:`neighbour_features`; off by default)
describe the labelled compounds of the same chemical system, always computed from the
training rows of the fold at hand.

The model file (``model.pkl``) is a plain dict (see :func:`save_model`) holding LightGBM
model strings, the calibrator arrays, the element table and the feature settings, so
:func:`predict_stability` needs nothing but the file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.features import ElementTable, FeatureSet, feature_kwargs, featurize, read_features

__all__ = [
    "CLASSIFIER_DEFAULTS",
    "MODEL_FORMAT",
    "LabelSet",
    "StabilityModel",
    "load_labels",
    "binary_metrics",
    "expected_calibration_error",
    "fit_calibrator",
    "apply_calibrator",
    "chemsys_folds",
    "train_stability_classifier",
    "save_model",
    "load_model",
    "predict_stability",
    "predict_target_formulas",
    "train_from_files",
    "plot_curves",
    "reliability_curve",
    "stratified_folds",
    "TrainResult",
    "write_json",
    "NEIGHBOUR_FEATURES",
    "Compositions",
    "neighbour_features",
]

log = logging.getLogger("matdisco.classifier")

# LightGBM's OpenMP threads spin while they wait by default: on a shared (oversubscribed)
# machine that made 2 threads 5-10x slower than 1 in our measurements. Passive waiting costs
# nothing on an idle machine. Takes effect if lightgbm is first imported after this module.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODEL_FORMAT = "matdisco.ehull_classifier/1"

#: defaults of the ``classifier:`` config section (see workflow/schemas/config.schema.yaml)
CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "label_threshold": 0.010,
    "extra_labels": None,
    "max_labels": None,
    "n_folds": 5,
    "test_fraction": 0.1,
    "seed": 42,
    "calibration": "isotonic",
    "neighbour_features": False,
    "decision_threshold": None,
    "min_element_count": 20,
    "ece_bins": 10,
    "lightgbm": {
        "n_estimators": 500,
        "learning_rate": 0.08,
        "num_leaves": 127,
        "min_child_samples": 10,
        "subsample": 0.8,
        "colsample_bytree": 0.3,
        "reg_lambda": 1.0,
        "max_bin": 63,
    },
}

PRIMARY = "store"


# --------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------


@dataclass
class LabelSet:
    """Deduplicated labelled formulas with their features.

    Attributes:
        table: one row per composition: formula, key, chemsys, e_above_hull, label_source,
            primary (bool: from the store, so evaluated), y (int 0/1).
        X: (n, n_features) float32 features, row-aligned with ``table``.
        feature_names: feature column names.
        rejected: label formulas that could not be featurised (formula, reason, label_source).
    """

    table: pd.DataFrame
    X: np.ndarray
    feature_names: list[str]
    rejected: pd.DataFrame


def _read_extra_labels(path: str | Path) -> pd.DataFrame:
    """Bartel-style table: formula + decomposition_enthalpy (or e_above_hull) in eV/atom."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if "decomposition_enthalpy" in df.columns:
        energy = df["decomposition_enthalpy"].astype(float).clip(lower=0.0)  # E_hull = max(ΔH_d, 0)
        source = "bartel2020_decomposition_enthalpy"
    elif "e_above_hull" in df.columns:
        energy = df["e_above_hull"].astype(float)
        source = Path(path).name
    else:
        raise ValueError(f"{path}: needs a decomposition_enthalpy or e_above_hull column")
    return pd.DataFrame({"formula": df["formula"].astype(str), "e_above_hull": energy, "label_source": source})


def load_labels(
    store_labels: pd.DataFrame,
    features: FeatureSet,
    *,
    threshold: float,
    extra_labels: str | Path | None = None,
    max_labels: int | None = None,
    seed: int = 0,
) -> LabelSet:
    """Join labels with features, deduplicate by composition and binarise.

    Args:
        store_labels: the store's ``/labels`` table (formula, e_above_hull, source).
        features: features of (at least) every label formula, looked up by formula string.
        threshold: stable when e_above_hull <= threshold, eV/atom.
        extra_labels: optional csv of extra training labels (see module docstring).
        max_labels: keep a random subset of this many store labels (and as many extra
            ones), for quick test runs; None keeps all.
        seed: seed of that subsample.

    Returns:
        The :class:`LabelSet`. Compositions labelled in both tables keep the store label;
        repeated compositions within a table keep the lowest energy.
    """
    frames = [
        pd.DataFrame(
            {
                "formula": store_labels["formula"].astype(str),
                "e_above_hull": store_labels["e_above_hull"].astype(float),
                "label_source": store_labels["source"].astype(str) if "source" in store_labels else PRIMARY,
                "primary": True,
            }
        )
    ]
    if extra_labels is not None:
        extra = _read_extra_labels(extra_labels)
        extra["primary"] = False
        frames.append(extra)
    lab = pd.concat(frames, ignore_index=True)
    lab = lab[np.isfinite(lab["e_above_hull"].to_numpy())]
    if max_labels is not None:
        rng = np.random.default_rng(seed)
        parts = []
        for _, g in lab.groupby("primary", sort=True):
            parts.append(g.iloc[np.sort(rng.permutation(len(g))[: int(max_labels)])])
        lab = pd.concat(parts).sort_index()
    pos = pd.Series(np.arange(len(features.formulas)), index=pd.Index(features.formulas))
    pos = pos[~pos.index.duplicated()]
    missing = ~lab["formula"].isin(pos.index)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} label formulas are not in the feature file, e.g. "
            f"{lab.loc[missing, 'formula'].head(3).tolist()}; featurise every label formula first"
        )
    idx = pos.loc[lab["formula"]].to_numpy()
    valid = features.valid[idx]
    reasons = np.asarray(features.reasons, dtype=object)[idx]
    rejected = pd.DataFrame(
        {"formula": lab["formula"].to_numpy()[~valid], "reason": reasons[~valid], "label_source": lab["label_source"].to_numpy()[~valid]}
    )
    if len(rejected):
        log.warning("%d label formulas rejected by the featuriser, e.g. %s", len(rejected), rejected.head(3).to_dict("records"))
    lab = lab.assign(
        key=np.asarray(features.keys, dtype=object)[idx],
        chemsys=np.asarray(features.elements, dtype=object)[idx],
        _row=idx,
    )[valid]
    # dedupe by composition: store labels first, then the lowest energy
    lab = lab.sort_values(["key", "primary", "e_above_hull"], ascending=[True, False, True], kind="mergesort")
    lab = lab.drop_duplicates("key", keep="first").reset_index(drop=True)
    lab["y"] = (lab["e_above_hull"].to_numpy() <= threshold).astype(np.int64)
    X = features.X[lab["_row"].to_numpy()]
    table = lab[["formula", "key", "chemsys", "e_above_hull", "label_source", "primary", "y"]]
    return LabelSet(table, X, list(features.feature_names), rejected)


# --------------------------------------------------------------------------------------
# metrics and calibration
# --------------------------------------------------------------------------------------


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins: sum_b (n_b / n) |mean(y_b) - mean(p_b)|."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    n = np.bincount(bins, minlength=n_bins)
    sy = np.bincount(bins, weights=y, minlength=n_bins)
    sp = np.bincount(bins, weights=p, minlength=n_bins)
    nz = n > 0
    return float(np.sum(np.abs(sy[nz] - sp[nz])) / max(len(y), 1))


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per-bin mean predicted probability, observed frequency and count."""
    bins = np.clip((np.asarray(p) * n_bins).astype(int), 0, n_bins - 1)
    df = pd.DataFrame({"bin": bins, "y": y, "p": p}).groupby("bin").agg(p=("p", "mean"), y=("y", "mean"), n=("y", "size"))
    return df.reset_index()


def binary_metrics(y: np.ndarray, p: np.ndarray, decision_threshold: float, n_bins: int = 10) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), F1 at the threshold, Brier score and ECE."""
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_auc_score

    y = np.asarray(y, int)
    p = np.asarray(p, float)
    two = len(np.unique(y)) == 2
    return {
        "n": int(len(y)),
        "positive_fraction": round(float(y.mean()), 6) if len(y) else float("nan"),
        "roc_auc": round(float(roc_auc_score(y, p)), 6) if two else float("nan"),
        "pr_auc": round(float(average_precision_score(y, p)), 6) if two else float("nan"),
        "f1": round(float(f1_score(y, p >= decision_threshold, zero_division=0)), 6),
        "brier": round(float(brier_score_loss(y, p)), 6),
        "ece": round(expected_calibration_error(y, p, n_bins), 6),
    }


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any]:
    """Fit a probability calibrator on (raw probability, label) pairs.

    Args:
        p: raw model probabilities.
        y: 0/1 labels.
        method: ``isotonic`` (monotone step function), ``platt`` (logistic on the logit) or
            ``none``.

    Returns:
        A plain dict for :func:`apply_calibrator` (stored in the model file).
    """
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        z = _logit(p)[:, None]
        lr = LogisticRegression(C=1e6).fit(z, y.astype(int))
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "none":
        return {"method": "none"}
    raise ValueError(f"unknown calibration method {method!r} (allowed: isotonic, platt, none)")


def apply_calibrator(cal: dict[str, Any], p: np.ndarray) -> np.ndarray:
    """Map raw probabilities through a calibrator from :func:`fit_calibrator`."""
    p = np.asarray(p, float)
    if cal["method"] == "isotonic":
        return np.interp(p, np.asarray(cal["x"]), np.asarray(cal["y"]))
    if cal["method"] == "platt":
        return 1.0 / (1.0 + np.exp(-(cal["a"] * _logit(p) + cal["b"])))
    return p


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def _crossfit_calibrate(p: np.ndarray, y: np.ndarray, folds: np.ndarray, method: str) -> np.ndarray:
    """Calibrate each fold's OOF predictions with a calibrator fit on the other folds."""
    out = np.empty_like(p)
    for k in np.unique(folds):
        te = folds == k
        out[te] = apply_calibrator(fit_calibrator(p[~te], y[~te], method), p[te])
    return out


def _f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    prec, rec, thr = precision_recall_curve(y, p)
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    return float(thr[int(np.argmax(f1))])


# --------------------------------------------------------------------------------------
# neighbour features (label-dependent, computed from the training rows only)
# --------------------------------------------------------------------------------------

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
            raise ValueError("neighbour features need the ElMD mod_petti scale (set features.elmd_table)")
        parsed = parse_formulas(formulas, table)
        keys, systems = keys_and_systems(parsed, table)
        cdf, gaps = pettifor_cdf(parsed, table)
        return cls(np.asarray(keys, dtype=object), np.asarray(systems, dtype=object), cdf, gaps)

    def take(self, index: np.ndarray) -> Compositions:
        """Rows in ``index``."""
        return Compositions(self.keys[index], self.chemsys[index], self.cdf[index], self.gaps)


def neighbour_features(
    query: Compositions, ref: Compositions, ref_y: np.ndarray, ref_ehull: np.ndarray, chunk: int = 50_000
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
                stable_sys.get("-".join(sub), 0) for k in range(2, len(els)) for sub in combinations(els, k)
            )
            memo[cs] = v
        out[i, 5] = v
    return out


# --------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def _fit_lgbm(X: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int, threads: int):  # noqa: ANN202
    import lightgbm as lgb

    p = dict(params)
    subsample = p.pop("subsample", 1.0)
    model = lgb.LGBMClassifier(
        objective="binary",
        subsample=subsample,
        subsample_freq=1 if subsample < 1.0 else 0,
        random_state=seed,
        n_jobs=threads,
        deterministic=True,
        force_col_wise=True,
        verbose=-1,
        **p,
    )
    model.fit(X, y)
    return model.booster_


@dataclass
class TrainResult:
    """What :func:`train_stability_classifier` produces."""

    model: dict[str, Any]
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    importances: pd.DataFrame
    curves: dict[str, Any]
    timings: dict[str, float]


def train_stability_classifier(
    labels: LabelSet,
    settings: dict[str, Any],
    *,
    feature_settings: dict[str, Any],
    element_table: ElementTable,
    threads: int = 1,
    config_hash: str = "",
) -> TrainResult:
    """Cross-validate, calibrate and assemble the stability classifier.

    Args:
        labels: from :func:`load_labels`.
        settings: the ``classifier:`` config section (defaults filled from
            :data:`CLASSIFIER_DEFAULTS` for missing keys).
        feature_settings: the ``features:`` section the features were made with (stored in
            the model so that prediction featurises the same way).
        element_table: the element table of the features (stored in the model).
        threads: LightGBM threads.
        config_hash: hash of the config slices that shaped the model (stamped in it).

    Returns:
        A :class:`TrainResult` (model dict, metrics, per-formula predictions, importances,
        curve data for plots, timings).
    """
    from sklearn.model_selection import train_test_split

    s = {**CLASSIFIER_DEFAULTS, **settings}
    lgb_params = {**CLASSIFIER_DEFAULTS["lightgbm"], **(s.get("lightgbm") or {})}
    seed, k, bins = int(s["seed"]), int(s["n_folds"]), int(s["ece_bins"])
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    tab = labels.table.reset_index(drop=True)
    X, y = labels.X, tab["y"].to_numpy()
    primary = tab["primary"].to_numpy(bool)
    prim_idx = np.flatnonzero(primary)
    extra_idx = np.flatnonzero(~primary)
    if len(prim_idx) < 2 * k or len(np.unique(y[prim_idx])) < 2:
        raise ValueError(f"too few labelled formulas ({len(prim_idx)}) or a single class for {k}-fold CV")
    # held-out test split of the store labels
    if s["test_fraction"] > 0:
        dev_idx, test_idx = train_test_split(
            prim_idx, test_size=float(s["test_fraction"]), stratify=y[prim_idx], random_state=seed
        )
        dev_idx, test_idx = np.sort(dev_idx), np.sort(test_idx)
    else:
        dev_idx, test_idx = prim_idx, np.zeros(0, dtype=np.int64)
    log.info(
        "labels: %d store (%d dev, %d test) + %d extra training-only; stable fraction %.3f",
        len(prim_idx), len(dev_idx), len(test_idx), len(extra_idx), y[prim_idx].mean(),
    )

    # (a) stratified k-fold on the development set -> OOF predictions + ensemble members
    t0 = time.perf_counter()
    nb_on = bool(s["neighbour_features"])
    ehull = tab["e_above_hull"].to_numpy(float)
    comps = Compositions.from_formulas(tab["formula"].tolist(), element_table) if nb_on else None
    n_base = X.shape[1]
    feature_names = list(labels.feature_names) + (list(NEIGHBOUR_FEATURES) if nb_on else [])
    Xw = np.empty((len(X), len(feature_names)), dtype=np.float32)
    Xw[:, :n_base] = X

    def design(ref_rows: np.ndarray) -> np.ndarray:
        """The feature matrix with neighbour features from ``ref_rows`` (the training rows)."""
        if nb_on:
            Xw[:, n_base:] = neighbour_features(comps, comps.take(ref_rows), y[ref_rows], ehull[ref_rows])
        return Xw

    strat = stratified_folds(y[dev_idx], k, seed)
    oof = np.full(len(dev_idx), np.nan)
    boosters = []
    for f in range(k):
        tr = np.concatenate([dev_idx[strat != f], extra_idx])
        Xf = design(tr)
        b = _fit_lgbm(Xf[tr], y[tr], lgb_params, seed + f, threads)
        oof[strat == f] = b.predict(Xf[dev_idx[strat == f]])
        boosters.append(b)
        log.info("stratified fold %d/%d: %d train rows, %.1f s", f + 1, k, len(tr), time.perf_counter() - t0)
    timings["stratified_cv_s"] = time.perf_counter() - t0
    y_dev = y[dev_idx]
    cal = fit_calibrator(oof, y_dev, s["calibration"])
    oof_cal_in = apply_calibrator(cal, oof)
    oof_cal_cf = _crossfit_calibrate(oof, y_dev, strat, s["calibration"])
    thr = float(s["decision_threshold"]) if s["decision_threshold"] is not None else _f1_threshold(y_dev, oof_cal_in)

    # (b) k-fold grouped by chemical system on the development set
    t0 = time.perf_counter()
    chem = tab["chemsys"].to_numpy(object)
    grouped = chemsys_folds(chem[dev_idx], k, seed)
    goof = np.full(len(dev_idx), np.nan)
    extra_chem = chem[extra_idx]
    for f in range(k):
        test_systems = set(chem[dev_idx[grouped == f]])
        keep_extra = extra_idx[~np.isin(extra_chem, list(test_systems))]
        tr = np.concatenate([dev_idx[grouped != f], keep_extra])
        Xf = design(tr)
        b = _fit_lgbm(Xf[tr], y[tr], lgb_params, seed + 100 + f, threads)
        goof[grouped == f] = b.predict(Xf[dev_idx[grouped == f]])
        log.info("chemsys-grouped fold %d/%d: %d train rows, %.1f s", f + 1, k, len(tr), time.perf_counter() - t0)
    timings["chemsys_grouped_cv_s"] = time.perf_counter() - t0
    goof_cal_cf = _crossfit_calibrate(goof, y_dev, grouped, s["calibration"])

    # element counts over everything the ensemble was trained on (for out-of-domain flags)
    train_rows = np.concatenate([dev_idx, extra_idx])
    counts = pd.Series(
        [e for cs in chem[train_rows] for e in cs.split("-")], dtype=object
    ).value_counts()
    nel = [cs.count("-") + 1 for cs in chem[train_rows]]
    model = {
        "format": MODEL_FORMAT,
        "matdisco_version": _version(),
        "config_hash": config_hash,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "label_threshold": float(s["label_threshold"]),
        "decision_threshold": thr,
        "calibration": cal,
        "boosters": [b.model_to_string() for b in boosters],
        "feature_names": feature_names,
        "base_feature_names": list(labels.feature_names),
        "feature_settings": {k_: v for k_, v in feature_settings.items() if k_ not in ("magpie_table", "elmd_table")},
        "element_table": element_table.to_dict(),
        "element_counts": {str(e): int(c) for e, c in counts.items()},
        "min_element_count": int(s["min_element_count"]),
        "n_elements_range": [int(min(nel)), int(max(nel))],
        "n_training_formulas": int(len(train_rows)),
        "settings": s,
        "packages": _packages(),
    }
    if nb_on:
        # reference formulas of the neighbour features; member k saw those with member != k
        member = np.concatenate([strat, np.full(len(extra_idx), -1)])
        model["neighbours"] = {
            "formulas": tab["formula"].to_numpy(object)[train_rows].tolist(),
            "y": y[train_rows].astype(int).tolist(),  # plain lists: no numpy objects in the pickle
            "e_above_hull": ehull[train_rows].astype(float).tolist(),
            "member": member.astype(int).tolist(),
        }

    # (c) the shipped ensemble on the held-out test split
    sm = StabilityModel(model, ref=comps.take(train_rows) if nb_on else None)
    metrics_test: dict[str, Any] = {}
    p_test = np.full(len(test_idx), np.nan)
    s_test = np.full(len(test_idx), np.nan)
    if len(test_idx):
        p_test, s_test, raw_test = sm.predict_features(X[test_idx], comps.take(test_idx) if nb_on else None)
        metrics_test = {
            "calibrated_ensemble": binary_metrics(y[test_idx], p_test, thr, bins),
            "raw_ensemble_mean": binary_metrics(y[test_idx], raw_test.mean(axis=0), thr, bins),
            "mean_p_stable_std": round(float(np.mean(s_test)), 6),
        }

    strat_metrics = {
        "n_folds": k,
        "raw": binary_metrics(y_dev, oof, thr, bins),
        "calibrated_crossfit": binary_metrics(y_dev, oof_cal_cf, thr, bins),
        "per_fold_roc_auc": [round(float(_auc(y_dev[strat == f], oof[strat == f])), 6) for f in range(k)],
    }
    grouped_metrics = {
        "n_folds": k,
        "n_chemical_systems": int(len(set(chem[dev_idx]))),
        "raw": binary_metrics(y_dev, goof, thr, bins),
        "calibrated_crossfit": binary_metrics(y_dev, goof_cal_cf, thr, bins),
        "per_fold_roc_auc": [round(float(_auc(y_dev[grouped == f], goof[grouped == f])), 6) for f in range(k)],
    }
    metrics = {
        "matdisco_version": model["matdisco_version"],
        "config_hash": config_hash,
        "seed": seed,
        "label_threshold_ev_per_atom": float(s["label_threshold"]),
        "decision_threshold": round(thr, 6),
        "decision_threshold_rule": "fixed" if s["decision_threshold"] is not None else "max F1 on calibrated OOF",
        "calibration": s["calibration"],
        "ece_bins": bins,
        "labels": {
            "store": int(len(prim_idx)),
            "store_stable_fraction": round(float(y[prim_idx].mean()), 6),
            "extra_training_only": int(len(extra_idx)),
            "rejected_formulas": int(len(labels.rejected)),
            "development": int(len(dev_idx)),
            "held_out_test": int(len(test_idx)),
            "sources": {str(a): int(b) for a, b in tab["label_source"].value_counts().sort_index().items()},
        },
        "n_features": int(X.shape[1]),
        "ensemble_size": len(boosters),
        "stratified_cv": strat_metrics,
        "chemsys_grouped_cv": grouped_metrics,
        "held_out_test": metrics_test,
        "lightgbm": lgb_params,
    }

    pred = tab[["formula", "chemsys", "e_above_hull", "label_source", "y"]].copy()
    pred["split"] = np.where(primary, "dev", "extra_train")
    pred.loc[test_idx, "split"] = "test"
    pred["strat_fold"] = -1
    pred.loc[dev_idx, "strat_fold"] = strat
    pred["p_oof_raw"] = np.nan
    pred.loc[dev_idx, "p_oof_raw"] = oof
    pred["p_oof_calibrated"] = np.nan
    pred.loc[dev_idx, "p_oof_calibrated"] = oof_cal_cf
    pred["chemsys_fold"] = -1
    pred.loc[dev_idx, "chemsys_fold"] = grouped
    pred["p_chemsys_oof_raw"] = np.nan
    pred.loc[dev_idx, "p_chemsys_oof_raw"] = goof
    pred["p_test"] = np.nan
    pred["p_test_std"] = np.nan
    pred.loc[test_idx, "p_test"] = p_test
    pred.loc[test_idx, "p_test_std"] = s_test
    pred = pred[pred["split"] != "extra_train"].reset_index(drop=True)

    gain = np.mean([b.feature_importance("gain") for b in boosters], axis=0)
    split = np.mean([b.feature_importance("split") for b in boosters], axis=0)
    imp = pd.DataFrame({"feature": feature_names, "gain": gain, "gain_fraction": gain / gain.sum(), "split": split})
    imp = imp.sort_values("gain", ascending=False, kind="mergesort").reset_index(drop=True)

    curves = {
        "stratified_oof": (y_dev, oof, oof_cal_cf),
        "chemsys_grouped_oof": (y_dev, goof, goof_cal_cf),
        "held_out_test": (y[test_idx], None, p_test),
        "bins": bins,
    }
    timings["total_s"] = time.perf_counter() - t_all
    log.info(
        "stratified AUC %.4f, chemsys-grouped AUC %.4f, OOF ECE raw %.4f / calibrated %.4f, test AUC %s (%.1f s)",
        strat_metrics["raw"]["roc_auc"], grouped_metrics["raw"]["roc_auc"], strat_metrics["raw"]["ece"],
        strat_metrics["calibrated_crossfit"]["ece"], metrics_test.get("calibrated_ensemble", {}).get("roc_auc"),
        timings["total_s"],
    )
    return TrainResult(model, metrics, pred, imp, curves, timings)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, p) if len(np.unique(y)) == 2 else float("nan")


def _version() -> str:
    from matdisco import __version__

    return __version__


def _packages() -> dict[str, str]:
    from matdisco.provenance import package_versions

    return package_versions(["matdisco", "numpy", "scikit-learn", "lightgbm"])


# --------------------------------------------------------------------------------------
# the model file and prediction
# --------------------------------------------------------------------------------------


class StabilityModel:
    """A loaded classifier (wraps the plain model dict).

    Args:
        model: the dict written by :func:`save_model`.
        ref: the neighbour-reference compositions when already parsed (training uses this);
            otherwise they are parsed from the model on first use.
    """

    def __init__(self, model: dict[str, Any], ref: Compositions | None = None) -> None:
        if model.get("format") != MODEL_FORMAT:
            raise ValueError(f"not a matdisco stability model (format {model.get('format')!r}, want {MODEL_FORMAT})")
        import lightgbm as lgb

        self.model = model
        self.boosters = [lgb.Booster(model_str=s) for s in model["boosters"]]
        self.table = ElementTable.from_dict(model["element_table"])
        self.feature_kwargs = feature_kwargs(model["feature_settings"])
        self._ref = ref

    @property
    def decision_threshold(self) -> float:
        """Probability above which a formula is called stable."""
        return float(self.model["decision_threshold"])

    @property
    def uses_neighbours(self) -> bool:
        """Whether the model has label-dependent neighbour features."""
        return "neighbours" in self.model

    def _reference(self) -> Compositions:
        if self._ref is None:
            self._ref = Compositions.from_formulas(self.model["neighbours"]["formulas"], self.table)
        return self._ref

    def predict_features(self, X: np.ndarray, comps: Compositions | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ensemble probability, ensemble std and raw member probabilities per row.

        ``p_stable`` is the logit-space mean of the members' calibrated probabilities,
        ``p_stable_std`` the standard deviation of those calibrated probabilities.

        Args:
            X: (n, n_base_features) composition features.
            comps: the rows' compositions (needed when the model uses neighbour features).

        Returns:
            ``(p_stable, p_stable_std, raw)``; raw is (n_members, n).
        """
        raw = np.empty((len(self.boosters), len(X)))
        if not self.uses_neighbours:
            for m, b in enumerate(self.boosters):
                raw[m] = b.predict(X) if len(X) else []
        else:
            if comps is None:
                raise ValueError("this model uses neighbour features: pass the rows' compositions")
            nb = self.model["neighbours"]
            ref = self._reference()
            member = np.asarray(nb["member"])
            ref_y = np.asarray(nb["y"])
            ref_e = np.asarray(nb["e_above_hull"], float)
            Xw = np.empty((len(X), X.shape[1] + len(NEIGHBOUR_FEATURES)), dtype=np.float32)
            Xw[:, : X.shape[1]] = X
            for m, b in enumerate(self.boosters):
                rows = np.flatnonzero(member != m)
                Xw[:, X.shape[1] :] = neighbour_features(comps, ref.take(rows), ref_y[rows], ref_e[rows])
                raw[m] = b.predict(Xw) if len(X) else []
        cal = np.vstack([apply_calibrator(self.model["calibration"], r) for r in raw])
        # average in logit space: keeps the sharpness of the single members the calibrator
        # was fit on (a plain mean of probabilities is under-confident)
        p = 1.0 / (1.0 + np.exp(-_logit(cal).mean(axis=0))) if len(X) else np.zeros(0)
        return p, cal.std(axis=0), raw

    def predict(self, formulas: Sequence[str]) -> pd.DataFrame:
        """See :func:`predict_stability`."""
        formulas = list(formulas)
        text = [f if isinstance(f, str) else "" for f in formulas]
        fs = featurize(text, self.table, **self.feature_kwargs)
        if fs.feature_names != self.model["base_feature_names"]:
            raise ValueError("feature names differ from the model's; was it trained with other feature settings?")
        valid = fs.valid.copy()
        for i, f in enumerate(formulas):
            if not isinstance(f, str):
                valid[i] = False
                fs.reasons[i] = f"not a string ({type(f).__name__})"
        p = np.full(len(formulas), np.nan)
        sd = np.full(len(formulas), np.nan)
        rows = np.flatnonzero(valid)
        if len(rows):
            comps = Compositions.from_formulas([text[i] for i in rows], self.table) if self.uses_neighbours else None
            p[rows], sd[rows], _ = self.predict_features(fs.X[rows], comps)
        counts = self.model["element_counts"]
        nmin = self.model["min_element_count"]
        lo, hi = self.model.get("n_elements_range", (1, 1000))
        ood = np.ones(len(formulas), dtype=bool)
        for i in rows:
            els = fs.elements[i].split("-")
            ood[i] = not lo <= len(els) <= hi or any(counts.get(e, 0) < nmin for e in els)
        return pd.DataFrame(
            {
                "formula": formulas,
                "p_stable": p,
                "p_stable_std": sd,
                "out_of_domain": ood,
                "valid": valid,
                "reason": fs.reasons,
            }
        )


def save_model(path: str | Path, model: dict[str, Any]) -> None:
    """Pickle the plain model dict atomically (no matdisco classes inside the pickle)."""
    from matdisco.store import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> StabilityModel:
    with open(path, "rb") as fh:
        return StabilityModel(pickle.load(fh))  # noqa: S301 - our own model files only


def load_model(path: str | Path) -> StabilityModel:
    """Load (and cache, keyed by path and modification time) a model file."""
    p = Path(path).resolve()
    st = p.stat()
    return _load_cached(str(p), st.st_mtime_ns, st.st_size)


def predict_stability(model_path: str | Path, formulas: Sequence[str]) -> pd.DataFrame:
    """Calibrated stability probability with ensemble uncertainty for formulas.

    Args:
        model_path: ``results/<run>/classifier/model.pkl``.
        formulas: chemical formulas (any notation :func:`matdisco.features.parse_formula`
            accepts); repeats allowed, order kept.

    Returns:
        One row per input formula with columns ``formula`` (as given), ``p_stable``
        (calibrated probability that E_hull <= the model's label threshold), ``p_stable_std``
        (standard deviation of the calibrated probabilities of the ensemble members),
        ``out_of_domain`` (True when an element was in fewer than ``min_element_count``
        training formulas, or absent, or when the number of elements lies outside the
        training range, e.g. a pure element; True for invalid formulas), ``valid`` (False for a
        formula that could not be featurised: p_stable and p_stable_std are NaN) and
        ``reason`` ('' or why the formula is invalid).
    """
    return load_model(model_path).predict(formulas)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys, NaN as null)."""
    from matdisco.store import atomic_write

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        if isinstance(o, float | np.floating):
            return None if not np.isfinite(o) else float(o)
        if isinstance(o, np.integer):
            return int(o)
        return o

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(clean(obj), indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------
# stage entry points (called by the workflow shims)
# --------------------------------------------------------------------------------------


def plot_curves(curves: dict[str, Any], roc_path: str | Path, pr_path: str | Path, reliability_path: str | Path) -> None:
    """ROC, precision-recall and reliability plots from :attr:`TrainResult.curves`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    bins = int(curves["bins"])
    series = [
        ("stratified CV (OOF)", curves["stratified_oof"][0], curves["stratified_oof"][1]),
        ("chemsys-grouped CV (OOF)", curves["chemsys_grouped_oof"][0], curves["chemsys_grouped_oof"][1]),
        ("held-out test (calibrated ensemble)", curves["held_out_test"][0], curves["held_out_test"][2]),
    ]
    series = [(n, np.asarray(y), np.asarray(p)) for n, y, p in series if p is not None and len(y) and len(np.unique(y)) == 2]

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, y, p in series:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name}: AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="E_hull classifier ROC")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(roc_path, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, y, p in series:
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"{name}: AP {average_precision_score(y, p):.3f}")
    if series:
        ax.axhline(float(np.mean(series[0][1])), color="k", ls=":", lw=0.8)
    ax.set(xlabel="recall", ylabel="precision", title="E_hull classifier precision-recall", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(pr_path, dpi=120)
    plt.close(fig)

    y, raw, cal = curves["stratified_oof"]
    rel = [("OOF raw", y, raw), ("OOF calibrated (cross-fit)", y, cal)]
    yt, _, pt = curves["held_out_test"]
    if len(yt):
        rel.append(("held-out test (calibrated ensemble)", yt, pt))
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, yy, pp in rel:
        rc = reliability_curve(np.asarray(yy), np.asarray(pp), bins)
        ece = expected_calibration_error(yy, pp, bins)
        ax.plot(rc["p"], rc["y"], "-", lw=1)
        ax.scatter(rc["p"], rc["y"], s=10 + 200 * rc["n"] / rc["n"].max(), alpha=0.6, label=f"{name}: ECE {ece:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="mean predicted p_stable", ylabel="observed stable fraction", title="Reliability", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(reliability_path, dpi=120)
    plt.close(fig)


def train_from_files(
    *,
    store: str | Path,
    features: str | Path,
    extra_labels: str | Path | None,
    settings: dict[str, Any],
    feature_settings: dict[str, Any],
    config_hash: str,
    threads: int,
    outputs: dict[str, str],
) -> TrainResult:
    """The train_ehull_classifier stage: labels + features in, model and reports out.

    Args:
        store: entry store (its ``/labels`` table).
        features: feature file from the featurize stage (covers every label formula).
        extra_labels: optional extra training labels csv (see :func:`load_labels`).
        settings: ``classifier:`` config section.
        feature_settings: ``features:`` config section.
        config_hash: stamp for the model and metrics.
        threads: LightGBM threads.
        outputs: paths keyed model, metrics, roc, pr, reliability, importances, predictions,
            rejects, timings.
    """
    from matdisco.features import read_feature_meta
    from matdisco.store import atomic_write, read_labels

    t0 = time.perf_counter()
    s = {**CLASSIFIER_DEFAULTS, **settings}
    fs = read_features(features)
    meta = read_feature_meta(features)
    table = ElementTable.from_dict(meta["element_table"])
    labels = load_labels(
        read_labels(store), fs, threshold=float(s["label_threshold"]), extra_labels=extra_labels,
        max_labels=s["max_labels"], seed=int(s["seed"]),
    )
    t_load = time.perf_counter() - t0
    res = train_stability_classifier(
        labels, s, feature_settings=meta.get("settings", feature_settings), element_table=table,
        threads=threads, config_hash=config_hash,
    )
    save_model(outputs["model"], res.model)
    write_json(outputs["metrics"], res.metrics)
    for key, df in (("importances", res.importances), ("predictions", res.predictions), ("rejects", labels.rejected)):
        with atomic_write(outputs[key]) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    plot_curves(res.curves, outputs["roc"], outputs["pr"], outputs["reliability"])
    timings = {"load_labels_s": t_load, **res.timings, "stage_s": time.perf_counter() - t0, "threads": threads}
    write_json(outputs["timings"], {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()})
    log.info("classifier stage done in %.1f s", timings["stage_s"])
    return res


def predict_target_formulas(*, store: str | Path, model: str | Path, elements: Sequence[str], out_csv: str | Path) -> pd.DataFrame:
    """Predict every known formula of the target chemical system (and its subsystems).

    Known formulas are the store's entries and labels whose elements all lie in
    ``elements``; the store label (if any) is joined for comparison.
    """
    from matdisco.store import atomic_write, read_entries, read_labels

    allowed = set(elements)
    lab = read_labels(store)
    ent = read_entries(store, ["formula"])
    formulas = list(dict.fromkeys(list(lab["formula"].astype(str)) + list(ent["formula"].astype(str))))
    sm = load_model(model)
    from matdisco.features import parse_formulas

    parsed = parse_formulas(formulas, sm.table)
    keep = []
    for i in np.flatnonzero(parsed.valid):
        a, b = parsed.row_ptr[i], parsed.row_ptr[i + 1]
        if {sm.table.symbols[e] for e in parsed.elem[a:b]} <= allowed:
            keep.append(formulas[i])
    pred = sm.predict(keep)
    ehull = lab.drop_duplicates("formula").set_index("formula")["e_above_hull"]
    pred["label_e_above_hull"] = pred["formula"].map(ehull)
    pred["label_stable"] = (pred["label_e_above_hull"] <= sm.model["label_threshold"]).where(pred["label_e_above_hull"].notna())
    pred["predicted_stable"] = pred["p_stable"] >= sm.decision_threshold
    pred = pred.sort_values(["p_stable", "formula"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    with atomic_write(out_csv) as tmp:
        pred.to_csv(tmp, index=False, float_format="%.6g")
    log.info("%d target-system formulas predicted (%d predicted stable)", len(pred), int(pred["predicted_stable"].sum()))
    return pred
