"""Training of the stability classifier: stratified and chemsys-grouped CV, calibration, the
shipped ensemble and its reports (:func:`train_stability_classifier`, :func:`train_from_files`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.classifier import baselines as B
from matdisco.classifier.boost import binned_dataset, fit_boosters, train_params
from matdisco.classifier.calibration import (
    ENSEMBLE_TARGET,
    _auc,
    _crossfit_calibrate,
    _f1_threshold,
    apply_calibrator,
    binary_metrics,
    ece_noise_floor,
    fit_calibrator,
)
from matdisco.classifier.folds import (
    chemsys_folds,
    labelled_subsystem_fraction,
    stratified_folds,
)
from matdisco.classifier.intervals import compare_with_baselines
from matdisco.classifier.labels import LabelSet, load_labels
from matdisco.classifier.model import MODEL_FORMAT, StabilityModel, save_model
from matdisco.classifier.neighbours import NEIGHBOUR_FEATURES, Compositions, neighbour_features
from matdisco.features import ElementEmbeddings, ElementTable, read_features
from matdisco.settings import ClassifierSettings, FeaturesSettings

__all__ = ["TrainResult", "train_stability_classifier", "train_from_files", "write_json"]

log = logging.getLogger("matdisco.classifier")


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
    settings: ClassifierSettings | Mapping[str, Any] | None = None,
    *,
    feature_settings: FeaturesSettings | Mapping[str, Any] | None = None,
    element_table: ElementTable,
    threads: int = 1,
    config_hash: str = "",
    embeddings: ElementEmbeddings | None = None,
) -> TrainResult:
    """Cross-validate, calibrate and assemble the stability classifier.

    Args:
        labels: from :func:`load_labels`.
        settings: the ``classifier`` settings (a mapping is read with
            :meth:`ClassifierSettings.from_config`; None = the defaults).
        feature_settings: the ``features`` settings the features were made with (stored in
            the model so that prediction featurises the same way; None = the defaults).
        element_table: the element table of the features (stored in the model).
        threads: concurrent fold fits (one LightGBM thread each; see
            :mod:`~matdisco.classifier.boost`).
        config_hash: hash of the config slices that shaped the model (stamped in it).
        embeddings: the element embeddings whose statistics are among the features (stored
            in the model so that prediction featurises the same way); None = none.

    Returns:
        A :class:`TrainResult` (model dict, metrics, per-formula predictions, importances,
        curve data for plots, timings).
    """
    from sklearn.model_selection import train_test_split

    s = ClassifierSettings.coerce(settings)
    fset = FeaturesSettings.coerce(feature_settings)
    lgb_params = s.lightgbm.to_dict()
    seed, k, kg, bins = s.seed, s.n_folds, s.n_grouped_folds, s.ece_bins
    t_all, c_all = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}
    tab = labels.table.reset_index(drop=True)
    X, y = labels.X, tab["y"].to_numpy()
    primary = tab["primary"].to_numpy(bool)
    prim_idx = np.flatnonzero(primary)
    extra_idx = np.flatnonzero(~primary)
    if len(prim_idx) < 2 * max(k, kg) or len(np.unique(y[prim_idx])) < 2:
        raise ValueError(
            f"too few labelled formulas ({len(prim_idx)}) or a single class for "
            f"{max(k, kg)}-fold CV"
        )
    # held-out test split of the store labels
    if s.test_fraction > 0:
        dev_idx, test_idx = train_test_split(
            prim_idx, test_size=s.test_fraction, stratify=y[prim_idx], random_state=seed
        )
        dev_idx, test_idx = np.sort(dev_idx), np.sort(test_idx)
    else:
        dev_idx, test_idx = prim_idx, np.zeros(0, dtype=np.int64)
    log.info(
        "labels: %d store (%d dev, %d test) + %d extra training-only; stable fraction %.3f",
        len(prim_idx),
        len(dev_idx),
        len(test_idx),
        len(extra_idx),
        y[prim_idx].mean(),
    )

    # (a) stratified k-fold on the development set -> OOF predictions + ensemble members;
    # (b) k-fold grouped by chemical system (evaluation only). All fold models are fit in one
    # batch: binned once, ``threads`` fits at a time (see matdisco.classifier.boost).
    t0 = time.perf_counter()
    nb_on = s.neighbour_features
    ehull = tab["e_above_hull"].to_numpy(float)
    comps = Compositions.from_formulas(tab["formula"].tolist(), element_table) if nb_on else None
    n_base = X.shape[1]
    feature_names = list(labels.feature_names) + (list(NEIGHBOUR_FEATURES) if nb_on else [])
    chem = tab["chemsys"].to_numpy(object)
    strat = stratified_folds(y[dev_idx], k, seed)
    grouped = chemsys_folds(chem[dev_idx], kg, seed)
    extra_chem = chem[extra_idx]
    folds: list[tuple[str, int, np.ndarray, np.ndarray, int]] = []  # split, fold, train, test
    for f in range(k):
        tr = np.concatenate([dev_idx[strat != f], extra_idx])
        folds.append(("stratified", f, tr, np.flatnonzero(strat == f), seed + f))
    for f in range(kg):
        test_systems = list(set(chem[dev_idx[grouped == f]]))
        keep_extra = extra_idx[~np.isin(extra_chem, test_systems)]
        tr = np.concatenate([dev_idx[grouped != f], keep_extra])
        folds.append(("grouped", f, tr, np.flatnonzero(grouped == f), seed + 100 + f))
    oof = np.full(len(dev_idx), np.nan)
    goof = np.full(len(dev_idx), np.nan)
    _, _, max_bin = train_params(s.lightgbm)
    universe = np.concatenate([dev_idx, extra_idx])  # never the held-out test rows
    pos = np.empty(len(X), dtype=np.int64)
    pos[universe] = np.arange(len(universe))
    if not nb_on:
        full = binned_dataset(X[universe], y[universe], max_bin)
        jobs = [(full.subset(np.sort(pos[tr])).construct(), sd) for _, _, tr, _, sd in folds]
        boosters_all = fit_boosters(jobs, s.lightgbm, threads=threads)
        del jobs, full
        for (split, _, _, te, _), b in zip(folds, boosters_all, strict=True):
            (oof if split == "stratified" else goof)[te] = b.predict(X[dev_idx[te]])
    else:
        # neighbour features depend on the fold's training rows: one design per fold
        Xw = np.empty((len(X), len(feature_names)), dtype=np.float32)
        Xw[:, :n_base] = X
        boosters_all = []
        for split, _, tr, te, sd in folds:
            Xw[:, n_base:] = neighbour_features(comps, comps.take(tr), y[tr], ehull[tr])
            b = fit_boosters([(binned_dataset(Xw[tr], y[tr], max_bin), sd)], s.lightgbm)[0]
            (oof if split == "stratified" else goof)[te] = b.predict(Xw[dev_idx[te]])
            boosters_all.append(b)
    boosters = boosters_all[:k]
    timings["cv_fits_s"] = time.perf_counter() - t0
    log.info(
        "%d stratified + %d chemsys-grouped fold models fit in %.1f s (%d at a time)",
        k,
        kg,
        timings["cv_fits_s"],
        max(1, threads),
    )
    t0 = time.perf_counter()
    bl_comps = comps if nb_on else _baseline_compositions(tab, element_table)
    nb_strat = _describe_folds(bl_comps, dev_idx, strat, extra_idx, None, y, ehull, chem)
    timings["baselines_s"] = time.perf_counter() - t0
    y_dev = y[dev_idx]
    cal = fit_calibrator(oof, y_dev, s.calibration)
    oof_cal_in = apply_calibrator(cal, oof)
    oof_cal_cf = _crossfit_calibrate(oof, y_dev, strat, s.calibration)
    fixed = s.decision_threshold is not None
    thr = float(s.decision_threshold) if fixed else _f1_threshold(y_dev, oof_cal_in)
    goof_cal_cf = _crossfit_calibrate(goof, y_dev, grouped, s.calibration)
    t0 = time.perf_counter()
    nb_grouped = _describe_folds(bl_comps, dev_idx, grouped, extra_idx, chem, y, ehull, chem)
    timings["baselines_s"] += time.perf_counter() - t0

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
        "label_threshold": s.label_threshold,
        "decision_threshold": thr,
        "calibration": cal,
        "calibration_target": ENSEMBLE_TARGET,
        "boosters": [b.model_to_string() for b in boosters],
        "feature_names": feature_names,
        "base_feature_names": list(labels.feature_names),
        "feature_settings": {
            k_: v for k_, v in fset.to_dict().items() if k_ not in ("magpie_table", "elmd_table")
        },
        "element_table": element_table.to_dict(),
        "element_counts": {str(e): int(c) for e, c in counts.items()},
        "min_element_count": s.min_element_count,
        "n_elements_range": [int(min(nel)), int(max(nel))],
        "n_training_formulas": int(len(train_rows)),
        "settings": s.to_dict(),
        "packages": _packages(),
    }
    if embeddings is not None and embeddings.tables:
        model["embeddings"] = embeddings.to_dict()
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
        p_test, s_test, raw_test = sm.predict_features(
            X[test_idx], comps.take(test_idx) if nb_on else None
        )
        metrics_test = {
            "calibrated_ensemble": binary_metrics(y[test_idx], p_test, thr, bins),
            "raw_ensemble_mean": binary_metrics(y[test_idx], raw_test.mean(axis=0), thr, bins),
            "mean_p_stable_std": round(float(np.mean(s_test)), 6),
            "calibration": "calibrator (fit on the single-member out-of-fold predictions) "
            "applied to the ensemble output, the logit-space mean of the members' raw "
            "probabilities",
            "ece_noise_floor": round(ece_noise_floor(p_test, bins, seed=seed), 6),
        }

    # baselines and 95% bootstrap intervals on the same rows as the model
    t0 = time.perf_counter()
    nb_boot, nb_boot_cv = s.n_bootstrap, s.n_bootstrap_cv
    test_cmp: dict[str, Any] = {}
    strat_cmp: dict[str, Any] = {}
    grouped_cmp: dict[str, Any] = {}
    if bl_comps is not None:
        dev_chem = chem[dev_idx]
        prior_strat = _fold_prior(y, dev_idx, strat, extra_idx)
        prior_grouped = _fold_prior(y, dev_idx, grouped, extra_idx)
        strat_cmp = compare_with_baselines(
            y_dev,
            oof_cal_cf,
            {
                "nearest_neighbour": B.crossfit_baseline(nb_strat, dev_chem, y_dev, strat),
                "chemsys_prior": B.chemsys_prior(nb_strat, prior_strat),
            },
            nb_boot_cv,
            seed,
            bins,
        )
        grouped_cmp = compare_with_baselines(
            y_dev,
            goof_cal_cf,
            {
                "nearest_neighbour": B.crossfit_baseline(nb_grouped, dev_chem, y_dev, grouped),
                "chemsys_prior": B.chemsys_prior(nb_grouped, prior_grouped),
            },
            nb_boot_cv,
            seed,
            bins,
        )
        if len(test_idx):
            nb_test = B.describe(bl_comps, test_idx, train_rows, y, ehull)
            lr = B.fit_baseline(B.baseline_design(nb_strat, dev_chem), y_dev)
            test_cmp = compare_with_baselines(
                y[test_idx],
                p_test,
                {
                    "nearest_neighbour": B.predict_baseline(
                        lr, B.baseline_design(nb_test, chem[test_idx])
                    ),
                    "chemsys_prior": B.chemsys_prior(nb_test, float(y[train_rows].mean())),
                },
                nb_boot,
                seed,
                bins,
            )
            metrics_test["intervals"] = test_cmp
    timings["baselines_s"] += time.perf_counter() - t0
    leak = {
        "random_test": labelled_subsystem_fraction(chem[test_idx], chem[train_rows]),
        "chemsys_grouped_cv": float(
            np.mean(
                [
                    labelled_subsystem_fraction(
                        chem[dev_idx[grouped == f]], chem[dev_idx[grouped != f]]
                    )
                    for f in range(kg)
                ]
            )
        ),
    }

    strat_metrics = {
        "n_folds": k,
        "raw": binary_metrics(y_dev, oof, thr, bins),
        "calibrated_crossfit": binary_metrics(y_dev, oof_cal_cf, thr, bins),
        "per_fold_roc_auc": [
            round(float(_auc(y_dev[strat == f], oof[strat == f])), 6) for f in range(k)
        ],
        "intervals": strat_cmp,
    }
    grouped_metrics = {
        "n_folds": kg,
        "n_chemical_systems": int(len(set(chem[dev_idx]))),
        "raw": binary_metrics(y_dev, goof, thr, bins),
        "calibrated_crossfit": binary_metrics(y_dev, goof_cal_cf, thr, bins),
        "per_fold_roc_auc": [
            round(float(_auc(y_dev[grouped == f], goof[grouped == f])), 6) for f in range(kg)
        ],
        "intervals": grouped_cmp,
    }
    metrics = {
        "matdisco_version": model["matdisco_version"],
        "config_hash": config_hash,
        "seed": seed,
        "label_threshold_ev_per_atom": s.label_threshold,
        "decision_threshold": round(thr, 6),
        "decision_threshold_rule": "fixed" if fixed else "max F1 on calibrated OOF",
        "calibration": s.calibration,
        "ece_bins": bins,
        "labels": {
            "store": int(len(prim_idx)),
            "store_stable_fraction": round(float(y[prim_idx].mean()), 6),
            "extra_training_only": int(len(extra_idx)),
            "rejected_formulas": int(len(labels.rejected)),
            "development": int(len(dev_idx)),
            "held_out_test": int(len(test_idx)),
            "sources": {
                str(a): int(b) for a, b in tab["label_source"].value_counts().sort_index().items()
            },
        },
        "n_features": int(X.shape[1]),
        "ensemble_size": len(boosters),
        "stratified_cv": strat_metrics,
        "chemsys_grouped_cv": grouped_metrics,
        "held_out_test": metrics_test,
        "headline": _headline(test_cmp, strat_cmp, grouped_cmp, metrics_test),
        "test_systems_with_labelled_subsystem_in_training": {
            key: round(v, 4) for key, v in leak.items()
        },
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
    imp = pd.DataFrame(
        {"feature": feature_names, "gain": gain, "gain_fraction": gain / gain.sum(), "split": split}
    )
    imp = imp.sort_values("gain", ascending=False, kind="mergesort").reset_index(drop=True)

    curves = {
        "stratified_oof": (y_dev, oof, oof_cal_cf),
        "chemsys_grouped_oof": (y_dev, goof, goof_cal_cf),
        "held_out_test": (y[test_idx], None, p_test),
        "bins": bins,
    }
    timings["total_s"] = time.perf_counter() - t_all
    timings["total_cpu_s"] = time.process_time() - c_all
    log.info(
        "stratified AUC %.4f, chemsys-grouped AUC %.4f, OOF ECE raw %.4f / calibrated %.4f, "
        "test AUC %s (%.1f s)",
        strat_metrics["raw"]["roc_auc"],
        grouped_metrics["raw"]["roc_auc"],
        strat_metrics["raw"]["ece"],
        strat_metrics["calibrated_crossfit"]["ece"],
        metrics_test.get("calibrated_ensemble", {}).get("roc_auc"),
        timings["total_s"],
    )
    return TrainResult(model, metrics, pred, imp, curves, timings)


def _baseline_compositions(tab: pd.DataFrame, table: ElementTable) -> Compositions | None:
    """Parsed compositions for the baselines (None when the table lacks the ElMD scale)."""
    if "elmd_mod_petti" not in table.properties:
        log.warning("no ElMD scale in the element table: baselines are not computed")
        return None
    return Compositions.from_formulas(tab["formula"].tolist(), table)


def _describe_folds(
    comps: Compositions | None,
    dev_idx: np.ndarray,
    folds: np.ndarray,
    extra_idx: np.ndarray,
    chem: np.ndarray | None,
    y: np.ndarray,
    ehull: np.ndarray,
    all_chem: np.ndarray,
) -> np.ndarray | None:
    """Neighbour description of each CV row against its fold's training rows.

    Extra (training-only) rows are references too, except (when ``chem`` is given, the
    grouped CV) those of the fold's test systems, as in the model's training.
    """
    if comps is None:
        return None
    out = np.empty((len(dev_idx), len(NEIGHBOUR_FEATURES)), dtype=np.float32)
    for f in np.unique(folds):
        te = folds == f
        extra = extra_idx
        if chem is not None:
            extra = extra_idx[~np.isin(all_chem[extra_idx], list(set(all_chem[dev_idx[te]])))]
        ref = np.concatenate([dev_idx[~te], extra])
        out[te] = B.describe(comps, dev_idx[te], ref, y, ehull)
    return out


def _fold_prior(
    y: np.ndarray, dev_idx: np.ndarray, folds: np.ndarray, extra_idx: np.ndarray
) -> np.ndarray:
    """Per CV row: the stable fraction of its fold's training rows."""
    out = np.empty(len(dev_idx))
    for f in np.unique(folds):
        te = folds == f
        out[te] = y[np.concatenate([dev_idx[~te], extra_idx])].mean()
    return out


def _headline(test: dict, strat: dict, grouped: dict, metrics_test: dict) -> dict[str, Any]:
    """The numbers to quote: model vs strongest baseline, value [lo, hi], per split."""
    out: dict[str, Any] = {}
    for split, cmp, what in (
        ("held_out_test", test, "shipped calibrated ensemble on the stratified held-out split"),
        ("stratified_cv", strat, "single fold models, cross-fitted calibration, out-of-fold"),
        ("chemsys_grouped_cv", grouped, "single fold models, cross-fitted calibration, OOF"),
    ):
        if not cmp:
            continue
        best = cmp["strongest_baseline"]
        out[split] = {
            "what": what,
            "n": cmp["model"]["n"],
            "model": {m: cmp["model"][m] for m in ("roc_auc", "pr_auc", "ece")},
            "baseline": best,
            "baseline_metrics": {
                m: cmp["baselines"][best][m] for m in ("roc_auc", "pr_auc", "ece")
            },
        }
    if "held_out_test" in out:
        out["held_out_test"]["ece_noise_floor"] = metrics_test.get("ece_noise_floor")
    return out


def _version() -> str:
    from matdisco import __version__

    return __version__


def _packages() -> dict[str, str]:
    from matdisco.provenance import package_versions

    return package_versions(["matdisco", "numpy", "scikit-learn", "lightgbm"])


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys, NaN as null)."""
    from matdisco.store import atomic_write, json_safe

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n")


def train_from_files(
    *,
    store: str | Path,
    features: str | Path,
    extra_labels: str | Path | None,
    settings: ClassifierSettings | Mapping[str, Any] | None,
    feature_settings: FeaturesSettings | Mapping[str, Any] | None,
    config_hash: str,
    threads: int,
    outputs: dict[str, str],
) -> TrainResult:
    """The train_ehull_classifier stage: labels + features in, model and reports out.

    Args:
        store: entry store (its ``/labels`` table).
        features: feature file from the featurize stage (covers every label formula).
        extra_labels: optional extra training labels csv (see :func:`load_labels`).
        settings: ``classifier`` settings (or its config section).
        feature_settings: ``features`` settings (or its config section); the settings stored
            in the feature file take precedence.
        config_hash: stamp for the model and metrics.
        threads: LightGBM threads.
        outputs: paths keyed model, metrics, roc, pr, reliability, importances, predictions,
            rejects, timings.
    """
    from matdisco.classifier.plots import plot_curves
    from matdisco.features import read_feature_meta
    from matdisco.store import atomic_write, read_labels

    t0, c0 = time.perf_counter(), time.process_time()
    s = ClassifierSettings.coerce(settings)
    fs = read_features(features)
    meta = read_feature_meta(features)
    table = ElementTable.from_dict(meta["element_table"])
    emb = ElementEmbeddings.from_dict(meta["embeddings"]) if meta.get("embeddings") else None
    labels = load_labels(
        read_labels(store),
        fs,
        threshold=s.label_threshold,
        extra_labels=extra_labels,
        max_labels=s.max_labels,
        seed=s.seed,
    )
    t_load = time.perf_counter() - t0
    res = train_stability_classifier(
        labels,
        s,
        feature_settings=FeaturesSettings.coerce(meta.get("settings", feature_settings)),
        element_table=table,
        threads=threads,
        config_hash=config_hash,
        embeddings=emb,
    )
    save_model(outputs["model"], res.model)
    write_json(outputs["metrics"], res.metrics)
    for key, df in (
        ("importances", res.importances),
        ("predictions", res.predictions),
        ("rejects", labels.rejected),
    ):
        with atomic_write(outputs[key]) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    plot_curves(res.curves, outputs["roc"], outputs["pr"], outputs["reliability"])
    timings = {
        "load_labels_s": t_load,
        **res.timings,
        "stage_s": time.perf_counter() - t0,
        "stage_cpu_s": time.process_time() - c0,
        "threads": threads,
    }
    write_json(
        outputs["timings"],
        {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()},
    )
    log.info("classifier stage done in %.1f s", timings["stage_s"])
    return res
