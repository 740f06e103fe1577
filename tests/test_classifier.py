"""The E_hull stability classifier on a small real fixture (seconds), and its API."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest

from matdisco.classifier import (
    MODEL_FORMAT,
    NEIGHBOUR_FEATURES,
    BinaryScorer,
    Compositions,
    StabilityModel,
    apply_calibrator,
    binary_metrics,
    bootstrap_binary_metrics,
    calibrate_ensemble,
    chemsys_folds,
    expected_calibration_error,
    family_holdout,
    fit_calibrator,
    labelled_subsystem_fraction,
    load_labels,
    neighbour_features,
    predict_stability,
    save_model,
    train_stability_classifier,
)
from matdisco.features import ElementTable, featurize
from matdisco.settings import ClassifierSettings, FeaturesSettings, SettingsError

SETTINGS = ClassifierSettings.from_config(
    {
        "n_folds": 3,
        "test_fraction": 0.2,
        "seed": 7,
        "min_element_count": 5,
        "neighbour_features": True,  # the optional path; the default (off) is in test_same_seed...
        "n_grouped_folds": 3,
        "lightgbm": {
            "n_estimators": 60,
            "num_leaves": 15,
            "learning_rate": 0.1,
            "max_bin": 63,
            "min_child_samples": 10,
        },
    }
)
FEATURES = FeaturesSettings()


@pytest.fixture(scope="module")
def table(root) -> ElementTable:
    return ElementTable.from_files(
        root / "resources/bundled/magpie_elements.csv",
        root / "resources/bundled/elmd_element_properties.json.gz",
    )


@pytest.fixture(scope="module")
def store_labels(root) -> pd.DataFrame:
    df = pd.read_csv(root / "resources/bundled/formula_ehull_labels.csv.gz", keep_default_na=False)
    df = df[df["formula"] != ""].sample(1500, random_state=1)
    return pd.DataFrame(
        {"formula": df["formula"], "e_above_hull": df["e_above_hull"], "source": "fixture"}
    )


@pytest.fixture(scope="module")
def trained(table, store_labels, tmp_path_factory):
    fs = featurize(store_labels["formula"].tolist(), table)
    labels = load_labels(store_labels, fs, threshold=0.01)
    res = train_stability_classifier(
        labels, SETTINGS, feature_settings=FEATURES, element_table=table, threads=1
    )
    path = tmp_path_factory.mktemp("clf") / "model.pkl"
    save_model(path, res.model)
    return labels, res, path


def test_metrics_are_real_and_complete(trained):
    labels, res, _ = trained
    m = res.metrics
    for section in ("stratified_cv", "chemsys_grouped_cv"):
        for key in ("roc_auc", "pr_auc", "f1", "brier", "ece"):
            assert np.isfinite(m[section]["raw"][key]), (section, key)
        assert len(m[section]["per_fold_roc_auc"]) == 3
    # composition carries real signal even with 1,200 formulas and 60 trees; shuffled labels
    # give ~0.5
    assert m["stratified_cv"]["raw"]["roc_auc"] > 0.75
    assert m["chemsys_grouped_cv"]["raw"]["roc_auc"] > 0.7
    assert m["held_out_test"]["calibrated_ensemble"]["roc_auc"] > 0.75
    assert m["held_out_test"]["calibrated_ensemble"]["n"] == 300
    assert m["labels"]["store"] == 1500 and m["ensemble_size"] == 3
    assert 0 < m["decision_threshold"] < 1
    assert m["stratified_cv"]["calibrated_crossfit"]["ece"] < 0.1


def test_same_seed_same_metrics(trained, table):
    labels, res, _ = trained
    # the same settings as a plain config mapping (the Snakemake params form) give the same model
    again = train_stability_classifier(
        labels,
        SETTINGS.to_dict(),
        feature_settings=FEATURES.to_dict(),
        element_table=table,
        threads=1,
    )
    assert again.metrics == res.metrics
    assert again.model["settings"] == SETTINGS.to_dict()
    assert isinstance(again.metrics["lightgbm"]["n_estimators"], int)
    other = train_stability_classifier(
        labels,
        dataclasses.replace(SETTINGS, seed=8, neighbour_features=False),
        feature_settings=FEATURES,
        element_table=table,
        threads=1,
    )
    assert other.metrics["stratified_cv"] != res.metrics["stratified_cv"]
    assert (
        "neighbours" not in other.model and len(other.model["feature_names"]) == labels.X.shape[1]
    )
    pred = StabilityModel(other.model).predict(["Fe2O3", "bad("])
    assert pred["valid"].tolist() == [True, False] and 0 <= pred.loc[0, "p_stable"] <= 1


def test_predictions_table(trained):
    labels, res, _ = trained
    pred = res.predictions
    assert set(pred["split"]) == {"dev", "test"}
    dev = pred[pred["split"] == "dev"]
    assert dev["p_oof_raw"].notna().all() and dev["p_chemsys_oof_raw"].notna().all()
    assert pred.loc[pred["split"] == "test", "p_test"].notna().all()
    assert (res.importances["gain"] >= 0).all()
    assert sorted(res.importances["feature"]) == sorted(
        labels.feature_names + list(NEIGHBOUR_FEATURES)
    )


def test_chemsys_folds_never_share_a_system():
    rng = np.random.default_rng(0)
    systems = [f"A{i}-O" for i in rng.integers(0, 300, 3000)]
    folds = chemsys_folds(systems, 5, seed=3)
    per_system = pd.Series(folds).groupby(pd.Series(systems)).nunique()
    assert (per_system == 1).all()
    sizes = np.bincount(folds)
    assert len(sizes) == 5 and sizes.max() - sizes.min() < 0.1 * sizes.mean()


def test_labels_dedupe_store_first_and_extra_is_training_only(table, tmp_path):
    store = pd.DataFrame(
        {"formula": ["Fe2O3", "MgO", "Mg2O2"], "e_above_hull": [0.0, 0.2, 0.005], "source": "s"}
    )
    extra = tmp_path / "bartel.csv"
    pd.DataFrame(
        {"formula": ["Fe4O6", "Na1Cl1", "Fe1O1"], "decomposition_enthalpy": [0.5, -0.1, 0.03]}
    ).to_csv(extra, index=False)
    fs = featurize(["Fe2O3", "MgO", "Mg2O2", "Fe4O6", "Na1Cl1", "Fe1O1"], table)
    lab = load_labels(store, fs, threshold=0.01, extra_labels=extra).table.set_index("formula")
    assert sorted(lab.index) == ["Fe1O1", "Fe2O3", "Mg2O2", "Na1Cl1"]  # one row per composition
    assert (
        lab.loc["Fe2O3", "primary"] and lab.loc["Fe2O3", "y"] == 1
    )  # store label wins over Bartel's 0.5
    assert (
        lab.loc["Mg2O2", "e_above_hull"] == 0.005 and lab.loc["Mg2O2", "y"] == 1
    )  # lowest of the repeats
    assert (
        not lab.loc["Na1Cl1", "primary"] and lab.loc["Na1Cl1", "e_above_hull"] == 0.0
    )  # max(ΔH_d, 0)
    assert lab.loc["Fe1O1", "y"] == 0


def test_predict_stability_api(trained):
    _, res, path = trained
    counts = res.model["element_counts"]
    rare = next(
        e for e in ("Ne", "Ar", "Kr", "He", "Pm", "Ac", "Pa", "Xe", "Tc") if counts.get(e, 0) < 5
    )
    formulas = ["Fe2O3", "bad((", f"{rare}O2", "Fe2O3", "Cf2O3", "Fe"]
    df = predict_stability(path, formulas)
    assert list(df.columns[:5]) == ["formula", "p_stable", "p_stable_std", "out_of_domain", "valid"]
    assert df["formula"].tolist() == formulas
    assert df["valid"].tolist() == [True, False, True, True, False, True]
    assert (
        np.isnan(df.loc[1, "p_stable"])
        and np.isnan(df.loc[1, "p_stable_std"])
        and df.loc[1, "reason"]
    )
    assert df.loc[4, "reason"] == "no element data for Cf"
    ok = df["valid"]
    assert df.loc[ok, "p_stable"].between(0, 1).all() and (df.loc[ok, "p_stable_std"] >= 0).all()
    assert df.loc[0, "p_stable"] == df.loc[3, "p_stable"]
    # rare element, invalid formulas and a pure element (no unaries among the labels) are out
    # of domain
    assert df["out_of_domain"].tolist() == [False, True, True, False, True, True]


def test_model_file_is_stamped_plain_data(trained):
    _, _, path = trained

    class OnlyBuiltins(pickle.Unpickler):
        def find_class(self, module, name):  # noqa: ANN001, ANN202
            raise pickle.UnpicklingError(f"model pickle references {module}.{name}")

    with open(path, "rb") as fh:
        model = OnlyBuiltins(fh).load()
    assert model["format"] == MODEL_FORMAT
    assert model["matdisco_version"] and "config_hash" in model
    assert len(model["boosters"]) == 3


def test_ece_and_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p, 10) == pytest.approx(0.1)
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0]), 10) == 0.0
    m = binary_metrics(y, np.array([0.2, 0.6, 0.4, 0.9]), 0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    assert m["brier"] == pytest.approx((0.04 + 0.36 + 0.36 + 0.01) / 4)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_repairs_miscalibrated_probabilities(method):
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p_true).astype(int)
    raw = p_true**3  # systematically under-confident for the stable class
    cal = fit_calibrator(raw[:10000], y[:10000], method)
    before = expected_calibration_error(y[10000:], raw[10000:])
    after = expected_calibration_error(y[10000:], apply_calibrator(cal, raw[10000:]))
    assert before > 0.15 and after < 0.03


def test_neighbour_features_by_hand(table):
    ref = Compositions.from_formulas(["Fe2O3", "Fe3O4", "FeO", "LiFeO2"], table)
    y = np.array([1, 0, 1, 1])
    ehull = np.array([0.0, 0.05, 0.0, 0.0])
    query = Compositions.from_formulas(["Fe4O6", "Li2FeO3", "NaCl"], table)
    nb = pd.DataFrame(neighbour_features(query, ref, y, ehull), columns=list(NEIGHBOUR_FEATURES))
    # Fe4O6 is Fe2O3: its own label is excluded; Fe3O4 and FeO remain (Pettifor Fe 70, O 96)
    assert nb.loc[0, "nb_n_same_chemsys"] == 2
    assert nb.loc[0, "nb_stable_fraction_same_chemsys"] == pytest.approx(0.5)
    assert nb.loc[0, "nb_elmd_nearest"] == pytest.approx((3 / 7 - 0.4) * 26, rel=1e-5)  # Fe3O4
    assert nb.loc[0, "nb_elmd_nearest_stable"] == pytest.approx(0.1 * 26, rel=1e-5)  # FeO
    assert nb.loc[0, "nb_ehull_nearest"] == pytest.approx(0.05)
    assert nb.loc[0, "nb_n_stable_subsystems"] == 0
    # Li2FeO3: LiFeO2 is its one neighbour; Fe2O3 and FeO are stable compounds of the Fe-O subsystem
    assert nb.loc[1, "nb_n_same_chemsys"] == 1 and nb.loc[1, "nb_n_stable_subsystems"] == 2
    assert nb.loc[2, "nb_n_same_chemsys"] == 0 and np.isnan(nb.loc[2, "nb_elmd_nearest"])


def test_unknown_settings_key_is_named(trained, table):
    labels, _, _ = trained
    with pytest.raises(SettingsError, match="classifier.lightgbm.n_trees"):
        train_stability_classifier(
            labels, {"lightgbm": {"n_trees": 5}}, feature_settings=FEATURES, element_table=table
        )


def test_metrics_report_model_and_baselines_with_intervals(trained):
    _, res, _ = trained
    m = res.metrics
    for section in (m["held_out_test"], m["stratified_cv"], m["chemsys_grouped_cv"]):
        iv = section["intervals"]
        assert set(iv["baselines"]) == {"nearest_neighbour", "chemsys_prior"}
        for scores in (iv["model"], *iv["baselines"].values()):
            for key in ("roc_auc", "pr_auc", "ece", "brier"):
                v = scores[key]
                assert v["lo"] <= v["value"] <= v["hi"], (key, v)
                assert v["hi"] - v["lo"] > 0  # a real interval from the resamples
        assert iv["strongest_baseline"] in iv["baselines"]
        # the model beats a composition-prior baseline on AUC (able to fail)
        assert (
            iv["model"]["roc_auc"]["value"] > iv["baselines"]["chemsys_prior"]["roc_auc"]["value"]
        )
    test = m["held_out_test"]
    assert test["intervals"]["model"]["roc_auc"]["value"] == pytest.approx(
        test["calibrated_ensemble"]["roc_auc"], abs=1e-6
    )
    assert test["intervals"]["model"]["ece"]["value"] == pytest.approx(
        test["calibrated_ensemble"]["ece"], abs=1e-6
    )
    assert 0 < test["ece_noise_floor"] < 0.2
    head = m["headline"]["held_out_test"]
    assert head["baseline"] == test["intervals"]["strongest_baseline"] and head["n"] == 300
    leak = m["test_systems_with_labelled_subsystem_in_training"]
    assert 0 <= leak["chemsys_grouped_cv"] <= 1 and 0 <= leak["random_test"] <= 1
    assert res.model["calibration_target"] == "ensemble_logit_mean"


def test_binary_scorer_matches_sklearn_and_bootstrap_brackets():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    p = np.round(np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.3, 3000), 0, 1), 2)  # many ties
    m = BinaryScorer(y, p).metrics()
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m["ece"] == pytest.approx(expected_calibration_error(y, p), abs=1e-12)
    # weights = row multiplicities: same as repeating rows
    w = rng.integers(0, 3, 3000)
    rep = np.repeat(np.arange(3000), w)
    assert BinaryScorer(y, p).metrics(w)["roc_auc"] == pytest.approx(
        roc_auc_score(y[rep], p[rep]), abs=1e-12
    )
    b = bootstrap_binary_metrics(y, p, n_boot=200, seed=0)
    assert (
        b["roc_auc"]["lo"] < m["roc_auc"] < b["roc_auc"]["hi"]
        and b["roc_auc"]["hi"] - b["roc_auc"]["lo"] < 0.1
    )


def test_calibrating_the_ensemble_output_reduces_ece():
    rng = np.random.default_rng(0)
    n, k = 20000, 5
    p_true = rng.uniform(0, 1, n)
    y = (rng.uniform(0, 1, n) < p_true).astype(int)
    z = np.log(p_true / (1 - p_true))
    # over-confident members (logit x 2, shifted) with member noise: the raw ensemble is
    # miscalibrated
    members = 1 / (1 + np.exp(-(2.0 * z + 0.5 + rng.normal(0, 0.3, (k, n)))))
    oof = members[0, : n // 2]  # one member's out-of-fold output fits the calibrator
    cal = fit_calibrator(oof, y[: n // 2], "isotonic")
    ev = slice(n // 2, n)
    raw_mean = 1 / (1 + np.exp(-np.log(members[:, ev] / (1 - members[:, ev])).mean(axis=0)))
    p, sd = calibrate_ensemble(cal, members[:, ev])
    before = expected_calibration_error(y[ev], raw_mean)
    after = expected_calibration_error(y[ev], p)
    assert before > 0.05 and after < 0.02 and after < before / 3
    assert sd.shape == p.shape and (sd >= 0).all()


def test_family_holdout_leaves_no_labelled_subsystem_in_training():
    rng = np.random.default_rng(2)
    els = ["Li", "Na", "Fe", "Mn", "O", "S", "Cl", "Mg", "Zn", "Ti"]
    systems = [
        "-".join(sorted(rng.choice(els, rng.integers(2, 5), replace=False))) for _ in range(4000)
    ]
    tr, te = family_holdout(systems, 0.1, seed=0)
    assert len(tr) and len(te) and not set(tr) & set(te)
    arr = np.asarray(systems, dtype=object)
    assert labelled_subsystem_fraction(arr[te], arr[tr]) == 0.0
    train_sets = {frozenset(cs.split("-")) for cs in arr[tr]}
    for cs in set(arr[te]):
        s_ = frozenset(cs.split("-"))
        assert not any(t < s_ or s_ < t for t in train_sets)  # neither sub- nor supersystem
    # a plain chemsys-grouped split leaks: most test systems have a labelled subsystem
    folds = chemsys_folds(systems, 5, seed=0)
    assert labelled_subsystem_fraction(arr[folds == 0], arr[folds != 0]) > 0.5
    assert labelled_subsystem_fraction(["Fe-Li-O", "Na-S"], ["Fe-O", "Li-O-S"]) == 0.5


def test_embedding_features_path_predicts_what_training_measured(table, store_labels, root):
    """The default path (embeddings on, neighbour features off, fewer grouped folds): the
    model file re-featurises formulas itself and reproduces the held-out probabilities that
    training reported, whatever the number of concurrent fold fits."""
    from matdisco.features import ElementEmbeddings, featurize_with_embeddings

    emb = ElementEmbeddings.from_file(
        root / "resources/bundled/elmd_element_properties.json.gz", ["megnet16"]
    )
    fs = featurize_with_embeddings(store_labels["formula"].tolist(), table, emb)
    assert fs.feature_names[-1] == "megnet16_maximum_15"
    labels = load_labels(store_labels, fs, threshold=0.01)
    s = dataclasses.replace(SETTINGS, neighbour_features=False, n_grouped_folds=2)
    feats = FeaturesSettings(embeddings=("megnet16",))
    res = train_stability_classifier(
        labels, s, feature_settings=feats, element_table=table, threads=2, embeddings=emb
    )
    m = res.metrics
    assert m["chemsys_grouped_cv"]["n_folds"] == 2 and len(res.model["boosters"]) == 3
    assert m["held_out_test"]["calibrated_ensemble"]["roc_auc"] > 0.75
    test = res.predictions[res.predictions["split"] == "test"]
    pred = StabilityModel(res.model).predict(test["formula"].tolist())
    np.testing.assert_allclose(pred["p_stable"], test["p_test"], atol=1e-9)
    # one fit at a time gives the same fold models (each is built with one LightGBM thread)
    serial = train_stability_classifier(
        labels, s, feature_settings=feats, element_table=table, threads=1, embeddings=emb
    )
    assert serial.model["boosters"] == res.model["boosters"]
