#!/usr/bin/env python
"""Experiment (issue 17, classifier): do hull-context features help the stability classifier?

Usage::

    python benchmarks/experiments/hull_context.py [--run results/default] [--threads 2]

Not part of the pipeline: the measurement behind the "hull-context features" entry of
docs/metrics_classifier_gap.md (measured, not kept). On the run's labels and features (same
stratified 10% held-out split as the classifier, seed 42):

* a LightGBM regressor of the formation energy per atom on the classifier's features, trained
  on the store formulas with an MP formation energy outside the held-out test (5-fold
  out-of-fold predictions for those, the full model for every other label formula);
* the depth of the lower convex hull of those known formation energies at each label's
  composition, its own formula left out (exact, per chemical system, over every subsystem);
* three columns (predicted ΔHf, hull depth, difference) added to the features; one classifier
  with the shipped hyperparameters with and without them, development rows -> held-out rows.

Writes ``benchmarks/results/hull_context.json``: held-out ROC-AUC of both, their paired
difference with a 95% row-bootstrap interval, the AUC of the difference column alone and of
the *true* formation energy minus the hull depth (how well the store's energies agree with the
labels), the regressor's out-of-fold MAE and the timings.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def hull_depths(query, fractions, ref, key_of):
    """Lower-hull energy of the reference points at each query composition (own key left out).

    Args:
        query: label rows to evaluate.
        fractions: per label row, {element: atomic fraction}.
        ref: (fractions list, energies array, keys array) of the reference formulas.
        key_of: composition key of each label row.
    """
    import numpy as np
    from scipy.spatial import ConvexHull

    ref_frac, ref_e, ref_key = ref
    by_sys: dict[frozenset, list[int]] = {}
    for i, a in enumerate(ref_frac):
        by_sys.setdefault(frozenset(a), []).append(i)
    groups: dict[frozenset, list[int]] = {}
    for r in query:
        groups.setdefault(frozenset(fractions[r]), []).append(r)
    out = np.full(len(fractions), np.nan)
    n_again = 0
    for system, rows in groups.items():
        els = sorted(system)
        n = len(els)
        if n == 1:
            out[rows] = 0.0
            continue
        members = [
            i
            for m in range(2, n + 1)
            for sub in itertools.combinations(els, m)
            for i in by_sys.get(frozenset(sub), [])
        ]
        known = np.array([[ref_frac[i].get(e, 0.0) for e in els] for i in members]).reshape(-1, n)
        P = np.vstack([np.eye(n), known])[:, :-1]
        E = np.concatenate([np.zeros(n), ref_e[members]]) if members else np.zeros(n)
        K = np.array([None] * n + [ref_key[i] for i in members], dtype=object)
        Q = np.array([[fractions[r].get(e, 0.0) for e in els] for r in rows])[:, :-1]

        def lower(P, E, Q):
            d = P.shape[1] + 1  # elements of the system
            lid = np.append(np.full(d - 1, 1.0 / d), max(E.max(), 0.0) + 1.0)
            hull = ConvexHull(np.vstack([np.column_stack([P, E]), lid]))
            eq = hull.equations
            low = eq[eq[:, -2] < -1e-9]
            return (-(Q @ low[:, :-2].T + low[:, -1]) / low[:, -2]).max(axis=1)

        h = lower(P, E, Q)
        for j, r in enumerate(rows):
            own = np.flatnonzero(K == key_of[r])
            if len(own) and E[own].min() <= h[j] + 1e-6:  # on the hull: leave it out
                keep = np.ones(len(E), bool)
                keep[own] = False
                h[j] = lower(P[keep], E[keep], Q[j : j + 1])[0]
                n_again += 1
        out[rows] = h
    return out, n_again


def main(argv: list[str] | None = None) -> int:
    """Run the experiment and write its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "results/default")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    from _common import write
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from matdisco.classifier.boost import train_params
    from matdisco.classifier.labels import load_labels
    from matdisco.config import load_config
    from matdisco.core.composition import element_amounts
    from matdisco.features import read_features
    from matdisco.settings import ClassifierSettings
    from matdisco.store import read_entries, read_labels

    cfg = load_config(ROOT / "config/config.yaml", ROOT / "workflow/schemas/config.schema.yaml")
    cs = ClassifierSettings.from_config(cfg["classifier"])
    store = args.run / "data/entries.h5"
    fs = read_features(args.run / "features/composition_features.h5")
    labels = load_labels(read_labels(store), fs, threshold=cs.label_threshold)
    tab = labels.table.reset_index(drop=True)
    X, y = labels.X, tab["y"].to_numpy()
    idx = np.arange(len(tab))
    dev, test = train_test_split(idx, test_size=cs.test_fraction, stratify=y, random_state=cs.seed)
    dev, test = np.sort(dev), np.sort(test)
    ent = read_entries(store, ["formula", "formation_energy_per_atom"])
    fpos = pd.Series(np.arange(len(fs.formulas)), index=fs.formulas)
    fpos = fpos[~fpos.index.duplicated()]
    ent = ent[ent["formula"].isin(fpos.index) & np.isfinite(ent["formation_energy_per_atom"])]
    ent = ent.assign(key=np.asarray(fs.keys, object)[fpos.loc[ent["formula"]].to_numpy()])
    ent = ent[ent["key"] != ""].sort_values("formation_energy_per_atom").drop_duplicates("key")
    ref = ent[~ent["key"].isin(set(tab["key"].to_numpy()[test]))]  # test formulas unknown

    def fractions(f):
        a = element_amounts(f)
        s = sum(a.values())
        return {k: v / s for k, v in a.items()}

    t0 = time.perf_counter()
    lab_frac = [fractions(f) for f in tab["formula"]]
    ref_e = ref["formation_energy_per_atom"].to_numpy(float)
    h, n_again = hull_depths(
        idx,
        lab_frac,
        ([fractions(f) for f in ref["formula"]], ref_e, ref["key"].to_numpy(object)),
        tab["key"].to_numpy(object),
    )
    t_hull = time.perf_counter() - t0

    key_row = pd.Series(idx, index=tab["key"])
    ref_rows = key_row.reindex(ref["key"]).to_numpy(float)
    have = np.isfinite(ref_rows)
    ref_rows, y_e = ref_rows[have].astype(int), ref_e[have]
    reg = {
        "objective": "regression_l1",
        "learning_rate": 0.1,
        "num_leaves": 255,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.5,
        "verbose": -1,
        "num_threads": args.threads,
        "deterministic": True,
        "force_col_wise": True,
    }
    t0 = time.perf_counter()
    pred = np.full(len(tab), np.nan)
    fold = np.random.default_rng(0).integers(0, 5, len(ref_rows))
    for f in range(5):
        tr, te = ref_rows[fold != f], ref_rows[fold == f]
        b = lgb.train({**reg, "seed": f}, lgb.Dataset(X[tr], y_e[fold != f]), 300)
        pred[te] = b.predict(X[te])
    full = lgb.train({**reg, "seed": 9}, lgb.Dataset(X[ref_rows], y_e), 300)
    other = np.setdiff1d(idx, ref_rows)
    pred[other] = full.predict(X[other])
    t_reg = time.perf_counter() - t0
    true_ctx = y_e - h[ref_rows]

    core, rounds, max_bin = train_params(cs.lightgbm)  # the shipped hyperparameters
    clf = {**core, "seed": cs.seed, "num_threads": args.threads}
    ctx = np.column_stack([pred, h, pred - h]).astype(np.float32)
    probs = {}
    for name, design in (("without", X), ("with_hull_context", np.hstack([X, ctx]))):
        data = lgb.Dataset(design[dev], y[dev].astype(float), params={"max_bin": max_bin})
        probs[name] = lgb.train(clf, data, rounds).predict(design[test])
    yt = y[test]
    auc = {k: roc_auc_score(yt, p) for k, p in probs.items()}
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(1000):
        r = rng.integers(0, len(yt), len(yt))
        if yt[r].min() == yt[r].max():
            continue
        diffs.append(
            roc_auc_score(yt[r], probs["with_hull_context"][r])
            - roc_auc_score(yt[r], probs["without"][r])
        )
    write(
        "hull_context",
        {
            "run": str(args.run),
            "n_labels": len(tab),
            "n_test": len(test),
            "n_reference_formulas": len(ref),
            "heldout_roc_auc": {k: round(v, 4) for k, v in auc.items()},
            "paired_difference": {
                "value": round(auc["with_hull_context"] - auc["without"], 4),
                "lo": round(float(np.percentile(diffs, 2.5)), 4),
                "hi": round(float(np.percentile(diffs, 97.5)), 4),
                "what": "held-out ROC-AUC with minus without, 1000 row-bootstrap replicates",
            },
            "difference_column_alone_auc": round(roc_auc_score(yt, -(pred - h)[test]), 4),
            "true_energy_minus_hull_auc_on_store_formulas": round(
                roc_auc_score(y[ref_rows], -true_ctx), 4
            ),
            "regressor_oof_mae_eV_per_atom": round(float(np.mean(np.abs(pred[ref_rows] - y_e))), 4),
            "hull_recomputations_without_own_formula": n_again,
            "seconds": {"hull_depths": round(t_hull, 1), "regressor": round(t_reg, 1)},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
