#!/usr/bin/env python
"""Benchmark the composition featuriser and the E_hull classifier on the full label set.

Usage::

    python benchmarks/ehull_classifier.py [--config config/config.yaml] [--threads 2]
        [--repeats 3] [--no-stage] [--out benchmarks/results/ehull_classifier.json]

Measures, on the bundled formula-level MP E_hull labels (and the extra labels when the
config names them):

* featurisation throughput, compositions/s (single process; best and median of
  ``--repeats`` runs over every distinct label formula, parsed from scratch each time);
* training time of one LightGBM model with the configured hyperparameters on the full
  label set (``--threads`` threads);
* unless ``--no-stage``: the whole classifier stage (stratified CV + chemsys-grouped CV +
  held-out test + calibration), with its headline metrics: model vs the strongest simple
  baseline (:mod:`matdisco.classifier.baselines`) with 95% bootstrap intervals;
  ``--stage-metrics results/<run>/classifier/metrics.json`` reads them from a finished run
  instead of retraining;
* the harder split (``--family-seeds``, default 3 seeds): whole subsystem families held out
  (:func:`matdisco.classifier.folds.family_holdout`: a random 10% of the chemical systems are
  test systems, and every system that is a sub- or supersystem of one is dropped from
  training), one LightGBM model with the configured hyperparameters (raw probabilities: no
  out-of-fold calibrator exists for this split) against the same baselines, fit on the
  family-split training rows only.

Wall-clock and CPU times are both written, with the load average before and after, because
the machine may be shared: wall time under load overstates what 2 free cores need.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> dict[str, float]:
    return {
        "wall_s": round(time.perf_counter() - t[0], 3),
        "cpu_s": round(time.process_time() - t[1], 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-stage", action="store_true", help="skip the full CV/ensemble stage")
    ap.add_argument(
        "--stage-metrics", type=Path, default=None, help="metrics.json of a finished run"
    )
    ap.add_argument(
        "--family-seeds", type=int, default=3, help="seeds of the family hold-out (0 = skip)"
    )
    ap.add_argument(
        "--family-fraction", type=float, default=0.1, help="fraction of systems held out"
    )
    ap.add_argument(
        "--n-boot", type=int, default=1000, help="bootstrap replicates of the intervals"
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "ehull_classifier.json"
    )
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    from matdisco.classifier.labels import load_labels
    from matdisco.classifier.train import train_stability_classifier
    from matdisco.config import load_config
    from matdisco.core.lgbm import fit_member
    from matdisco.features import (
        ElementTable,
        feature_kwargs,
        featurize_with_embeddings,
        load_embeddings,
    )
    from matdisco.provenance import environment, package_versions

    os.chdir(ROOT)
    config = load_config(args.config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    fset, cset = config["features"], config["classifier"]
    load_before = os.getloadavg()
    table = ElementTable.from_files(fset["magpie_table"], fset["elmd_table"], fset["elmd_scale"])
    labels_csv = config["data"]["bundled"]["labels"]
    raw = pd.read_csv(labels_csv, keep_default_na=False, na_values=[""]).dropna(subset=["formula"])
    store_labels = pd.DataFrame(
        {"formula": raw["formula"], "e_above_hull": raw["e_above_hull"], "source": "bundled"}
    )
    formulas = list(dict.fromkeys(store_labels["formula"]))
    if cset["extra_labels"]:
        extra = pd.read_csv(cset["extra_labels"], usecols=["formula"], keep_default_na=False)[
            "formula"
        ]
        formulas = list(dict.fromkeys(formulas + extra.tolist()))
    kw = feature_kwargs(fset)
    emb = load_embeddings(fset["elmd_table"], fset)  # features.embeddings (None = none)

    def featurize(forms: list[str], table: ElementTable, **kw_):  # noqa: ANN202
        return featurize_with_embeddings(forms, table, emb, fset["embedding_stats"], **kw_)

    featurize(formulas[:100], table, **kw)  # warm-up (imports, caches)
    runs = []
    for _ in range(args.repeats):
        t = _clock()
        fs = featurize(formulas, table, **kw)
        runs.append(_since(t))
    rates = [len(formulas) / r["wall_s"] for r in runs]
    feat = {
        "compositions": len(formulas),
        "features": len(fs.feature_names),
        "rejected": int((~fs.valid).sum()),
        "runs": runs,
        "compositions_per_s_best": round(max(rates)),
        "compositions_per_s_median": round(statistics.median(rates)),
        "compositions_per_cpu_s_best": round(max(len(formulas) / r["cpu_s"] for r in runs)),
        "goal_compositions_per_s": 20000,
    }
    print(json.dumps({"featurisation": feat}, indent=2), flush=True)

    labels = load_labels(
        store_labels,
        fs,
        threshold=cset["label_threshold"],
        extra_labels=cset["extra_labels"],
        seed=cset["seed"],
    )
    X, y = labels.X, labels.table["y"].to_numpy()
    t = _clock()
    fit_member(X, y, cset["lightgbm"], seed=cset["seed"], threads=args.threads)
    fit = {"rows": int(len(y)), **_since(t), "threads": args.threads, "goal_wall_s": 60}
    print(json.dumps({"single_model_fit_full_label_set": fit}, indent=2), flush=True)

    result = {
        "benchmark": "ehull_classifier",
        "config": str(
            args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
        ),
        "featurisation": feat,
        "single_model_fit_full_label_set": fit,
    }
    if args.stage_metrics is not None:
        m = json.loads(args.stage_metrics.read_text())
        result["classifier_stage"] = {"from": str(args.stage_metrics), **_stage_summary(m)}
    elif not args.no_stage:
        t = _clock()
        res = train_stability_classifier(
            labels,
            cset,
            feature_settings=fset,
            element_table=table,
            threads=args.threads,
            embeddings=emb,
        )
        m = res.metrics
        result["classifier_stage"] = {
            **_since(t),
            "timings": {k: round(v, 2) for k, v in res.timings.items()},
            "stratified_cv_roc_auc": m["stratified_cv"]["raw"]["roc_auc"],
            "chemsys_grouped_cv_roc_auc": m["chemsys_grouped_cv"]["raw"]["roc_auc"],
            "held_out_test_roc_auc": m["held_out_test"]
            .get("calibrated_ensemble", {})
            .get("roc_auc"),
            "oof_ece_raw": m["stratified_cv"]["raw"]["ece"],
            "oof_ece_calibrated_crossfit": m["stratified_cv"]["calibrated_crossfit"]["ece"],
            "held_out_test_ece": m["held_out_test"].get("calibrated_ensemble", {}).get("ece"),
            **_stage_summary(m),
        }
        print(json.dumps({"classifier_stage": result["classifier_stage"]}, indent=2), flush=True)
    if args.family_seeds > 0:
        t = _clock()
        result["family_holdout"] = _family_split(
            labels, table, cset, args.family_seeds, args.family_fraction, args.n_boot, args.threads
        )
        result["family_holdout"]["timing"] = _since(t)
        print(
            json.dumps({"family_holdout": result["family_holdout"]["summary"]}, indent=2),
            flush=True,
        )
    result["machine"] = {
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "processor": platform.processor(),
        **environment(),
    }
    result["packages"] = package_versions(
        ["matdisco", "numpy", "pandas", "scikit-learn", "lightgbm"]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _stage_summary(m: dict) -> dict:
    """Model vs strongest baseline per split of the stage metrics (value [lo, hi])."""
    return {
        "headline": m.get("headline"),
        "test_systems_with_labelled_subsystem_in_training": m.get(
            "test_systems_with_labelled_subsystem_in_training"
        ),
        "held_out_ece_noise_floor": m.get("held_out_test", {}).get("ece_noise_floor"),
        "held_out_raw_ensemble_mean": m.get("held_out_test", {}).get("raw_ensemble_mean"),
    }


def _family_split(
    labels, table, cset: dict, n_seeds: int, fraction: float, n_boot: int, threads: int
) -> dict:  # noqa: ANN001
    """Model vs baselines on ``n_seeds`` subsystem-family hold-outs (see the module docstring)."""
    import numpy as np

    from matdisco.classifier import baselines as B
    from matdisco.classifier.folds import (
        family_holdout,
        labelled_subsystem_fraction,
        stratified_folds,
    )
    from matdisco.classifier.intervals import compare_with_baselines
    from matdisco.classifier.neighbours import Compositions
    from matdisco.core.lgbm import fit_member

    tab = labels.table.reset_index(drop=True)
    prim = np.flatnonzero(tab["primary"].to_numpy(bool))
    X, y = labels.X, tab["y"].to_numpy()
    ehull = tab["e_above_hull"].to_numpy(float)
    chem = tab["chemsys"].to_numpy(object)
    comps = Compositions.from_formulas(tab["formula"].tolist(), table)
    runs = []
    for seed in range(n_seeds):
        t = _clock()
        tr_l, te_l = family_holdout(chem[prim], fraction, seed=seed)
        tr, te = prim[tr_l], prim[te_l]
        b = fit_member(
            X[tr], y[tr], cset["lightgbm"], seed=cset["seed"] + seed, threads=threads
        ).booster_
        p = b.predict(X[te])
        # baseline: LR on out-of-fold neighbour descriptions of the training rows
        folds = stratified_folds(y[tr], 5, seed)
        nb_tr = np.empty((len(tr), 6), dtype=np.float32)
        for f in range(5):
            nb_tr[folds == f] = B.describe(comps, tr[folds == f], tr[folds != f], y, ehull)
        lr = B.fit_baseline(B.baseline_design(nb_tr, chem[tr]), y[tr])
        nb_te = B.describe(comps, te, tr, y, ehull)
        cmp = compare_with_baselines(
            y[te],
            p,
            {
                "nearest_neighbour": B.predict_baseline(lr, B.baseline_design(nb_te, chem[te])),
                "chemsys_prior": B.chemsys_prior(nb_te, float(y[tr].mean())),
            },
            n_boot,
            seed,
            int(cset["ece_bins"]),
        )
        runs.append(
            {
                "seed": seed,
                "n_train": int(len(tr)),
                "n_test": int(len(te)),
                "n_excluded_related": int(len(prim) - len(tr) - len(te)),
                "n_test_systems": int(len(set(chem[te]))),
                "test_systems_with_labelled_subsystem_in_training": labelled_subsystem_fraction(
                    chem[te], chem[tr]
                ),
                "model": "one LightGBM model (configured hyperparameters), raw probabilities",
                **cmp,
                "timing": _since(t),
            }
        )
    keys = ("roc_auc", "pr_auc", "ece")

    def agg(get) -> dict:  # noqa: ANN001
        return {k: [r["value"] for r in (get(run)[k] for run in runs)] for k in keys}

    summary = {
        "n_seeds": n_seeds,
        "model_per_seed": agg(lambda r: r["model"]),
        "nearest_neighbour_per_seed": agg(lambda r: r["baselines"]["nearest_neighbour"]),
        "chemsys_prior_per_seed": agg(lambda r: r["baselines"]["chemsys_prior"]),
        "model_minus_nearest_neighbour_auc_per_seed": [
            round(
                r["model"]["roc_auc"]["value"]
                - r["baselines"]["nearest_neighbour"]["roc_auc"]["value"],
                6,
            )
            for r in runs
        ],
    }
    return {
        "split": f"{fraction:g} of chemical systems held out with all sub- and supersystems",
        "summary": summary,
        "runs": runs,
    }


if __name__ == "__main__":
    sys.exit(main())
