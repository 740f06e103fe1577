"""The shared LightGBM-ensemble helper (matdisco.core.lgbm): seeded, spread, threads."""

from __future__ import annotations

import numpy as np
import pytest

from matdisco.core import lgbm
from matdisco.settings import ClassifierLightGBMSettings, ScreenBandgapLightGBMSettings

PARAMS = {
    "n_estimators": 30,
    "num_leaves": 7,
    "learning_rate": 0.1,
    "subsample": 0.7,
    "min_child_samples": 5,
}


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    y_reg = X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(scale=0.8, size=400)
    y_clf = (X[:, 0] + rng.normal(scale=1.0, size=400) > 0).astype(int)
    return X, y_reg, y_clf


def test_same_seed_same_model_other_seed_other_model(noisy):
    X, y, yc = noisy
    a = lgbm.fit_member(X, y, PARAMS, kind="regressor", seed=3)
    b = lgbm.fit_member(X, y, PARAMS, kind="regressor", seed=3)
    c = lgbm.fit_member(X, y, PARAMS, kind="regressor", seed=4)
    pa, pb, pc = (lgbm.predict_members([m], X)[0] for m in (a, b, c))
    assert np.array_equal(pa, pb)
    assert not np.allclose(pa, pc)  # row bagging (subsample < 1) follows the seed
    ca = lgbm.fit_member(X, yc, PARAMS, seed=3)
    cb = lgbm.fit_member(X, yc, PARAMS, seed=3)
    assert ca.booster_.model_to_string() == cb.booster_.model_to_string()
    p = lgbm.predict_members([ca, ca.booster_], X)  # estimator and Booster give P(class 1)
    assert np.allclose(p[0], p[1]) and ((p >= 0) & (p <= 1)).all()


def test_ensemble_spread_is_positive_on_noisy_data(noisy):
    X, y, _ = noisy
    rng = np.random.default_rng(1)
    rows = [np.sort(rng.choice(len(y), 300, replace=False)) for _ in range(4)]
    members = lgbm.fit_ensemble(X, y, PARAMS, rows=rows, seeds=[10, 20, 30, 40], kind="regressor")
    assert len(members) == 4
    values = lgbm.predict_members(members, X)
    assert values.shape == (4, len(X))
    mean, std = lgbm.ensemble_mean_std(values)
    assert np.allclose(mean, values.mean(axis=0)) and np.allclose(std, values.std(axis=0))
    assert (std > 0).mean() > 0.95 and std.mean() > 0.01
    # member m is exactly fit_member on its rows with its seed
    one = lgbm.fit_member(X[rows[2]], y[rows[2]], PARAMS, kind="regressor", seed=30)
    assert np.array_equal(lgbm.predict_members([one], X)[0], values[2])
    with pytest.raises(ValueError, match="2 row subsets but 1 seeds"):
        lgbm.fit_ensemble(X, y, PARAMS, rows=rows[:2], seeds=[1])
    with pytest.raises(ValueError, match="member 1 has no training rows"):
        lgbm.fit_ensemble(X, y, PARAMS, rows=[rows[0], np.array([], int)], seeds=[1, 2])


def test_logit_mean():
    p = np.array([[0.9, 0.5], [0.5, 0.5]])
    mean, std = lgbm.ensemble_mean_std(p, space="logit")
    assert mean[0] == pytest.approx(
        1 / (1 + np.exp(-0.5 * np.log(9)))
    )  # sigmoid(mean logit) = 0.75
    assert mean[1] == pytest.approx(0.5) and std[0] == pytest.approx(0.2) and std[1] == 0
    assert lgbm.ensemble_mean_std(np.zeros((3, 0)))[0].shape == (0,)
    with pytest.raises(ValueError, match="averaging space"):
        lgbm.ensemble_mean_std(p, space="median")


def test_threads_and_conventions_honoured(noisy):
    X, y, _ = noisy
    est = lgbm.lgbm_estimator("regressor", PARAMS, seed=1, threads=3)
    params = est.get_params()
    assert params["n_jobs"] == 3 and params["random_state"] == 1
    assert params["deterministic"] and params["force_col_wise"] and params["subsample_freq"] == 1
    assert lgbm.lgbm_estimator("classifier", PARAMS, seed=1, threads=0).get_params()["n_jobs"] == 1
    fitted = lgbm.fit_member(X, y, PARAMS, kind="regressor", seed=1, threads=2)
    assert fitted.booster_.params["num_threads"] == 2  # what LightGBM itself was told
    no_bag = lgbm.lgbm_estimator("classifier", {**PARAMS, "subsample": 1.0}, seed=1, threads=1)
    assert no_bag.get_params()["subsample_freq"] == 0
    with pytest.raises(ValueError, match="unknown LightGBM model kind"):
        lgbm.lgbm_estimator("ranker", PARAMS, seed=1, threads=1)


def test_typed_settings_accepted():
    est = lgbm.lgbm_estimator("classifier", ClassifierLightGBMSettings(), seed=0, threads=1)
    assert est.get_params()["n_estimators"] == 150 and est.get_params()["reg_lambda"] == 1.0
    assert isinstance(est.get_params()["n_estimators"], int)
    reg = lgbm.lgbm_estimator("regressor", ScreenBandgapLightGBMSettings(), seed=0, threads=1)
    assert (
        reg.get_params()["colsample_bytree"] == 0.5
        and reg.get_params()["objective"] == "regression"
    )


def test_parallel_members_equal_the_sequential_ones(noisy):
    """fit_members_parallel: the thread count changes the time, never the trees."""
    X, y, yc = noisy
    rows = [np.arange(0, 300), np.arange(100, 400), np.arange(0, 400, 2)]
    specs = [lgbm.MemberSpec(X, yc, r, PARAMS, "classifier", 5 + m) for m, r in enumerate(rows)]
    specs += [lgbm.MemberSpec(X, y, r, PARAMS, "regressor", 9 + m) for m, r in enumerate(rows)]
    one = lgbm.fit_members_parallel(specs, threads=1)
    two = lgbm.fit_members_parallel(specs, threads=2)
    for a, b in zip(one, two, strict=True):
        assert a.booster_.model_to_string() == b.booster_.model_to_string()
    # order follows the specs; the members differ (own rows and seeds)
    assert one[0].booster_.model_to_string() != one[1].booster_.model_to_string()
    assert hasattr(one[0], "predict_proba") and not hasattr(one[3], "predict_proba")
    with pytest.raises(ValueError, match="no training rows"):
        lgbm.fit_members_parallel([lgbm.MemberSpec(X, y, rows[0][:0], PARAMS, "regressor", 1)])
