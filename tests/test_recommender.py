"""Tests of the tensor recommender (matdisco.recommender)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from matdisco import recommender as R
from matdisco.recommender import evaluate as RE
from matdisco.recommender import tucker as RT
from matdisco.settings import RecommenderSettings, SettingsError
from matdisco.store import StructureArrays, write_store

KNOWN = {
    # formula: is_experimental
    "LiFeO2": 1,
    "Li5FeO4": 1,
    "LiFe5O8": 0,
    "CaTiO3": 1,
    "Ca3Ti2O7": 1,
    "CaTi2O4": 1,
    "Mg6MnO8": 1,
    "MgMn2O4": 0,
    "NaFeO2": 1,
    "Na2TiO3": 1,
    "Li2TiO3": 1,
    "Li4Ti5O12": 1,
    "SrTiO3": 1,
    "Sr2TiO4": 1,
    "MgO": 1,
    "MnO": 1,
    "Mn3O4": 1,
    "Fe2O3": 1,
    "TiO2": 1,
    "Mg": 1,
}


def write_tiny_store(path, formulas: dict[str, int] = KNOWN) -> None:
    """A store with the given formulas (structures are empty cells: the recommender never reads
    them)."""
    from pymatgen.core import Composition

    rows = []
    for i, (f, exp) in enumerate(formulas.items()):
        comp = Composition(f)
        rows.append(
            {
                "id": f"t-{i}",
                "source": "test",
                "formula": comp.reduced_formula,
                "composition": comp.formula,
                "chemsys": comp.chemical_system,
                "nelements": len(comp.elements),
                "is_experimental": exp,
            }
        )
    n = len(rows)
    arrays = StructureArrays(
        np.zeros((n, 3, 3)), np.zeros(n + 1, np.int64), np.zeros(0, np.int16), np.zeros((0, 3))
    )
    write_store(path, pd.DataFrame(rows), arrays, data_source="test", provenance={})


# ------------------------------------------------------------------ composition space


def test_ratio_grid_counts_and_reduction():
    g = R.ratio_grid(5, 3)
    # sums 3, 4, 5: (1,1,1); 3 x (1,1,2); 3 x (1,1,3) + 3 x (1,2,2)
    assert len(g) == 10
    assert (g >= 1).all() and (g.sum(axis=1) <= 5).all()
    assert all(math.gcd(*map(int, r)) == 1 for r in g)
    assert len({tuple(r) for r in g.tolist()}) == len(g)
    # (2,2,2) is not reduced: never on the grid
    assert not any((r == 2).all() for r in R.ratio_grid(6, 3))
    assert len(R.ratio_grid(2, 3)) == 0


def test_integer_composition():
    assert R.integer_composition("Mg2Mn4O8") == {"Mg": 1, "Mn": 2, "O": 4}
    assert R.integer_composition("Li2(FeO2)5") == {"Li": 2, "Fe": 5, "O": 10}
    assert R.integer_composition("Li0.5CoO2") is None
    assert R.integer_composition("not a formula") is None


def test_tensor_construction_on_tiny_fixture():
    known = R.known_formulas(
        pd.DataFrame({"formula": list(KNOWN), "is_experimental": list(KNOWN.values())})
    )
    assert "LiFe5O8" not in known and "LiFeO2" in known
    ternary = [f for f in known if len(R.integer_composition(f)) == 3]
    space = R.TernarySpace.build(
        {e for f in ternary for e in R.integer_composition(f)}, max_atoms=10
    )
    # canonical order by electronegativity: Sr/Ca/Li/Na/Mg first, O last
    assert space.elements[-1] == "O"
    assert space.elements.index("Li") < space.elements.index("Fe") < space.elements.index("O")
    i, j, k, r = space.cell("LiFeO2")
    assert (space.elements[i], space.elements[j], space.elements[k]) == ("Li", "Fe", "O")
    assert tuple(space.ratios[r]) == (1, 1, 2)
    _, _, _, l5 = space.cell("Li5FeO4")
    assert tuple(space.ratios[l5]) == (5, 1, 4)
    # the same composition written differently lands in the same cell
    assert space.cell("Fe2Li2O4") == space.cell("LiFeO2")
    # off the grid (12 atoms > 10), not ternary, or element outside the space
    assert space.cell("Ca3Ti2O7") is None
    assert space.cell("Fe2O3") is None
    assert space.cell("KFeO2") is None
    cells, pos = space.cells(ternary)
    assert len(ternary) == 12
    assert len(cells) == len(ternary) - 3  # Ca3Ti2O7, Mg6MnO8 and Li4Ti5O12 are off the grid
    flat = space.flat(cells)
    assert np.array_equal(space.unflat(flat), cells)
    assert [space.formula(c) for c in cells] == [ternary[p] for p in pos]
    assert space.n_cells == math.comb(len(space.elements), 3) * len(space.ratios)


def test_score_block_matches_score_cells():
    space = R.TernarySpace.build(["Li", "Fe", "O", "Ti", "Ca"], max_atoms=6)
    rng = np.random.default_rng(0)
    model = R.TuckerModel(
        rng.normal(size=(2, 3, 2, 3)),
        [
            rng.normal(size=(5, 2)),
            rng.normal(size=(5, 3)),
            rng.normal(size=(5, 2)),
            rng.normal(size=(len(space.ratios), 3)),
        ],
    )
    for i in range(len(space.elements)):
        start, stop = space.system_ids(i)
        if stop == start:
            continue
        block = model.score_block(space, i)
        flat = np.arange(start * len(space.ratios), stop * len(space.ratios))
        np.testing.assert_allclose(
            block.ravel(), model.score_cells(space.unflat(flat)), rtol=1e-10, atol=1e-12
        )
    # the matrix model too
    cells = space.unflat(np.array([0, 5, 40, 41]))
    mm = RT._BoundMatrix(R.fit_matrix(space, cells, rank=2), space)
    i = 0
    start, stop = space.system_ids(i)
    flat = np.arange(start * len(space.ratios), stop * len(space.ratios))
    np.testing.assert_allclose(
        mm.score_block(space, i).ravel(), mm.score_cells(space.unflat(flat)), atol=1e-12
    )


# ------------------------------------------------------------------ Tucker decomposition


def _dense(model: R.TuckerModel) -> np.ndarray:
    x = model.core
    for n, u in enumerate(model.factors):
        x = np.moveaxis(np.tensordot(u, x, axes=(1, n)), 0, n)
    return x


def test_tucker_error_falls_with_rank_and_is_exact_at_full_rank():
    rng = np.random.default_rng(0)
    shape = (5, 5, 5, 7)
    flat = rng.choice(int(np.prod(shape)), 60, replace=False)
    coords = np.column_stack(np.unravel_index(flat, shape))
    dense = np.zeros(shape)
    dense[tuple(coords.T)] = 1.0
    errors = []
    for r in (1, 2, 3, 5):
        m = R.tucker_hooi(shape, coords, ranks=(r, r, r, min(r + 2, 7)), n_iter=30, tol=1e-10)
        # the reported error is the true reconstruction error
        direct = np.linalg.norm(dense - _dense(m)) / np.linalg.norm(dense)
        assert m.rel_error == pytest.approx(direct, abs=1e-8)
        errors.append(m.rel_error)
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-6  # full multilinear rank reproduces the tensor


def test_tucker_recommends_a_hidden_pattern_member():
    # every system of the first 6 elements has the ratios 0 and 1; one is hidden
    space = R.TernarySpace.build(["Li", "Na", "K", "Fe", "Co", "O", "S", "Cl"], max_atoms=6)
    cells = []
    for a in range(6):
        for b in range(a + 1, 6):
            for c in range(b + 1, 6):
                cells += [(a, b, c, 0), (a, b, c, 1)]
    cells = np.array(cells)
    hidden = cells[7]
    train = np.delete(cells, 7, axis=0)
    model = R.tucker_hooi(space.shape, train, ranks=(3, 3, 3, 2))
    known = set(space.flat(train).tolist())
    scores = np.concatenate(
        [
            model.score_block(space, i).ravel()
            for i in range(len(space.elements))
            if np.diff(space.system_ids(i))[0]
        ]
    )
    flat = np.arange(space.n_cells)
    unknown = np.array([f not in known for f in flat])
    h = space.flat(hidden[None])[0]
    rank = (scores[unknown] > scores[h]).sum()
    assert rank == 0, rank


def test_popularity_and_matrix_models_score_shapes():
    space = R.TernarySpace.build(["Li", "Fe", "O", "Ti"], max_atoms=5)
    cells = space.unflat(np.array([0, 1, 12]))
    pop = R.fit_popularity(space, cells)
    s = pop.score_cells(space.unflat(np.arange(space.n_cells)))
    assert s.shape == (space.n_cells,) and (s > 0).all()
    mm = R.fit_matrix(space, cells, rank=2)
    sc = mm.score_cells(space.unflat(np.arange(space.n_cells)), space)
    # systems without a known composition score exactly 0
    assert (sc[2 * len(space.ratios) :] == 0).all()


# ------------------------------------------------------------------ ranking metrics


def test_rank_counts_ties_and_weights():
    pos = np.array([3.0, 1.0])
    neg = np.array([5.0, 3.0, 0.0])
    g, e = R.rank_counts(pos, neg)
    assert g.tolist() == [1.0, 3.0] and e.tolist() == [2.0, 1.0]
    # recall@2: the score-3 positive ties with a negative for places 2-3 -> 1/2; the other is 4th
    assert R.expected_recall(g, e, 2) == pytest.approx(0.25)
    assert R.expected_recall(g, e, 5) == pytest.approx(1.0)
    # chunks give the same as one array; weights scale the negatives
    g2, e2 = R.rank_counts(pos, iter([neg[:1], neg[1:]]))
    assert g2.tolist() == g.tolist() and e2.tolist() == e.tolist()
    gw, ew = R.rank_counts(pos, neg, neg_weight=2.0)
    assert gw.tolist() == [2.0, 5.0] and ew.tolist() == [3.0, 1.0]


def test_random_scores_give_enrichment_near_one():
    rng = np.random.default_rng(3)
    pos, neg = rng.random(2000), rng.random(200000)
    g, e = R.rank_counts(pos, neg)
    m = RE._metrics_from_counts(g, e, len(pos) + len(neg), [0.05])
    assert m["enrichment@5%"] == pytest.approx(1.0, abs=0.15)


def test_combine_scores():
    p = np.array([0.9, np.nan, 0.2])
    q = np.array([0.5, 0.7, np.nan])
    np.testing.assert_allclose(R.combine_scores(p, q, 0.5), [0.7, 0.7, 0.2])
    np.testing.assert_allclose(R.combine_scores(p, q, 1.0)[[0, 2]], [0.9, 0.2])


# ------------------------------------------------------------------ end to end on a tiny store


def test_train_and_evaluate_on_tiny_store(tmp_path):
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    settings = RecommenderSettings.from_config(
        {
            "n_bootstrap": 2,
            "n_quantile_samples": 500,
            "evaluation": {"n_sample_candidates": 500},
        }
    )
    rec = R.train_recommender(
        store,
        tmp_path / "model.pkl",
        settings,
        target_elements=["Mg", "Mn", "O"],
        out_summary=tmp_path / "summary.json",
    )
    loaded = R.load_recommender(tmp_path / "model.pkl")
    # 12 experimental ternaries; Li4Ti5O12 (21 atoms) is off the 20-atom grid
    assert loaded.info["n_known_cells"] == rec.info["n_known_cells"] == 11
    df = loaded.score_formulas(["MgMn2O4", "LiFeO2", "MgO", "XyZ"])
    assert df["in_space"].tolist() == [True, True, False, False]
    assert df.loc[:1, "recommender_score"].between(0, 1).all()
    assert df.loc[:1, "recommender_std"].notna().all()
    assert df.loc[2:, "recommender_score"].isna().all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["top_unknown"]) == 25
    assert loaded.settings == settings
    assert summary["settings"] == settings.to_dict()
    assert summary["settings"]["n_bootstrap"] == 2 and summary["settings"]["seed"] == 0
    metrics = R.evaluate_recommender(
        store, tmp_path / "metrics.json", settings, target_elements=["Mg", "Mn", "O"]
    )
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["splits"].keys() == {"random", "chemsys"}
    assert on_disk["settings"] == settings.to_dict()
    for split in metrics["splits"].values():
        assert {"tensor", "matrix", "popularity", "random"} <= split["methods"].keys()
        assert split["methods"]["random"]["enrichment@1%"] == 1.0
        assert 0 <= split["methods"]["tensor"]["recall@5%"] <= 1
    R.plot_enrichment(metrics, tmp_path / "enrichment.png")
    assert (tmp_path / "enrichment.png").stat().st_size > 1000


def test_degenerate_store_without_ternaries(tmp_path):
    store = tmp_path / "entries.h5"
    write_tiny_store(store, {"MgO": 1, "MnO": 1, "Mg": 1})
    rec = R.train_recommender(
        store,
        tmp_path / "model.pkl",
        {"n_bootstrap": 1, "n_quantile_samples": 100},
        target_elements=["Mg", "Mn", "O"],
    )
    assert rec.info["n_known_cells"] == 0
    assert rec.score_formulas(["MgMnO3"])["recommender_score"].notna().all()
    metrics = R.evaluate_recommender(
        store,
        tmp_path / "metrics.json",
        {"evaluation": {"n_sample_candidates": 100}},
        target_elements=["Mg", "Mn", "O"],
    )
    assert all("skipped" in s for s in metrics["splits"].values())


def test_squash_scale():
    s = R.squash(np.array([-1.0, 0.0, 0.5, 1.0, 10.0]), 0.5)
    assert s[0] == s[1] == 0.0
    assert s[2] == pytest.approx(1 - math.exp(-1))
    assert np.all(np.diff(s[1:]) > 0) and s[-1] < 1.0


def test_evaluation_with_a_classifier(tmp_path, monkeypatch):
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    known = {frozenset(R.integer_composition(f).items()) for f in KNOWN}

    def oracle(model_path, formulas):  # "knows" every known compound: p = 0.9, else 0.1
        p = np.array(
            [0.9 if frozenset(R.integer_composition(f).items()) in known else 0.1 for f in formulas]
        )
        return pd.DataFrame(
            {
                "formula": formulas,
                "p_stable": p,
                "p_stable_std": 0.0,
                "out_of_domain": False,
                "valid": True,
            }
        )

    monkeypatch.setattr(RE, "classifier_scores", oracle)
    settings = {"evaluation": {"n_sample_candidates": 300, "holdout_fraction": 0.3}}
    metrics = R.evaluate_recommender(
        store, tmp_path / "m.json", settings, classifier_model=tmp_path / "clf.pkl"
    )
    split = metrics["splits"]["random"]
    assert {"classifier", "combination"} <= split["methods"].keys()
    # the oracle ranks every hidden compound above all unknown cells
    assert split["methods"]["classifier"]["recall@5%"] == pytest.approx(1.0)
    assert split["methods"]["combination"]["recall@5%"] == pytest.approx(1.0)
    assert "optimistic" in split["classifier_note"]


def test_settings_mapping_and_errors(tmp_path):
    """A config mapping is read as RecommenderSettings; a bad key fails before any output."""
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    rec = R.fit_recommender(list(KNOWN), {"n_bootstrap": 0, "n_quantile_samples": 50})
    assert isinstance(rec.settings, RecommenderSettings)
    assert rec.settings.n_bootstrap == 0 and rec.bootstrap == []
    assert isinstance(rec.settings.ranks[0], int)
    with pytest.raises(SettingsError, match="recommender.n_bootstrapp"):
        R.train_recommender(store, tmp_path / "model.pkl", {"n_bootstrapp": 1})
    with pytest.raises(SettingsError, match="recommender.evaluation.seed"):
        R.evaluate_recommender(store, tmp_path / "m.json", {"evaluation": {"seed": "x"}})
    assert not (tmp_path / "model.pkl").exists() and not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------ held-out split and baselines


def _spy_evaluation(monkeypatch):
    """Record what the evaluation splits off and what every model is fitted on (real functions)."""
    calls: dict[str, list] = {"split": [], "tucker": [], "popularity": [], "matrix": []}
    real_split, real_tucker = RE._split, RE.tucker_hooi
    real_pop, real_matrix = RE.fit_popularity, RE.fit_matrix

    def split(flat, space, kind, fraction, rng):
        hide = real_split(flat, space, kind, fraction, rng)
        calls["split"].append((kind, space, flat.copy(), hide.copy()))
        return hide

    def tucker(shape, coords, *a, **k):
        calls["tucker"].append(np.asarray(coords).copy())
        return real_tucker(shape, coords, *a, **k)

    def popularity(space, cells, *a, **k):
        calls["popularity"].append(np.asarray(cells).copy())
        return real_pop(space, cells, *a, **k)

    def matrix(space, cells, *a, **k):
        calls["matrix"].append(np.asarray(cells).copy())
        return real_matrix(space, cells, *a, **k)

    monkeypatch.setattr(RE, "_split", split)
    monkeypatch.setattr(RE, "tucker_hooi", tucker)
    monkeypatch.setattr(RE, "fit_popularity", popularity)
    monkeypatch.setattr(RE, "fit_matrix", matrix)
    return calls


def test_held_out_cells_are_absent_from_the_fitted_tensor(tmp_path, monkeypatch):
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    settings = RecommenderSettings.from_config(
        {"evaluation": {"n_sample_candidates": 2000, "holdout_fraction": 0.3}}
    )
    calls = _spy_evaluation(monkeypatch)
    metrics = R.evaluate_recommender(store, tmp_path / "m.json", settings)
    assert [c[0] for c in calls["split"]] == ["random", "chemsys"]
    assert len(calls["tucker"]) == len(calls["popularity"]) == len(calls["matrix"]) == 2
    for n, (kind, space, flat, hide) in enumerate(calls["split"]):
        hidden, train = set(flat[hide].tolist()), set(flat[~hide].tolist())
        assert hidden and train
        assert metrics["splits"][kind]["n_hidden_cells"] == len(hidden)
        for model in ("tucker", "popularity", "matrix"):
            fitted = set(space.flat(calls[model][n]).tolist())
            assert fitted == train, (kind, model)  # every training cell, no held-out one
            assert not fitted & hidden, (kind, model)
        if kind == "chemsys":  # whole systems held out: no training cell shares one
            L = len(space.ratios)
            assert not {c // L for c in hidden} & {c // L for c in train}


def test_popularity_and_charge_balanced_baselines_are_computed_and_reported(tmp_path, monkeypatch):
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    # more negatives than unknown cells: the "sample" is every unknown cell, so ranks are exact
    settings = RecommenderSettings.from_config(
        {"evaluation": {"n_sample_candidates": 10**6, "holdout_fraction": 0.3}}
    )
    calls = _spy_evaluation(monkeypatch)
    metrics = R.evaluate_recommender(store, tmp_path / "m.json", settings)
    on_disk = json.loads((tmp_path / "m.json").read_text())
    for kind, space, flat, hide in calls["split"]:
        res = on_disk["splits"][kind]
        assert res["weight_per_sample"] == pytest.approx(1.0)
        # independent recomputation of the popularity recall@k over every candidate cell
        pop = RT.fit_popularity(space, space.unflat(flat[~hide]))
        all_flat = np.arange(space.n_cells)
        cand = all_flat[~np.isin(all_flat, flat[~hide])]
        s_all = pop.score_cells(space.unflat(cand))
        s_hid = pop.score_cells(space.unflat(flat[hide]))
        for f in settings.evaluation.top_k:
            k = max(1.0, round(f * len(cand)))
            greater = (s_all[None, :] > s_hid[:, None]).sum(1)
            equal = (s_all[None, :] == s_hid[:, None]).sum(1)
            expected = np.clip((k - greater) / equal, 0, 1).mean()
            tag = f"{100 * f:g}%"
            got = res["methods"]["popularity"][f"recall@{tag}"]
            assert got == pytest.approx(expected)
            lo, hi = res["methods"]["popularity"][f"recall@{tag}_ci95"]
            assert lo <= got + 1e-12 and got <= hi + 1e-12
            comp = res["comparisons"]["tensor_vs_popularity"][tag]
            assert comp["recall_baseline"] == pytest.approx(got)
            assert comp["recall_tensor"] == pytest.approx(res["methods"]["tensor"][f"recall@{tag}"])
            assert "tensor_vs_charge_balanced_random" in res["comparisons"]
            cb = res["methods"]["charge_balanced_random"][f"recall@{tag}"]
            assert 0.0 <= cb <= 1.0
            assert metrics["headline"][kind][tag]["recall_popularity"] == pytest.approx(got)
        assert 0 < res["charge_balance"]["fraction_of_unknown_cells"] < 1
    assert "popularity" in on_disk["description"]


def test_charge_balanced_random_expectation():
    hidden_cb = np.array([True, False])
    m, hits = RE._charge_balanced_random(
        hidden_cb, n_cb=10.0, n_candidates=100.0, fractions=[0.05, 0.2]
    )
    # k = 5 < 10 balanced candidates: the balanced compound is found with p 5/10, the other never
    assert hits["5%"].tolist() == [0.5, 0.0]
    assert m["recall@5%"] == pytest.approx(0.25) and m["enrichment@5%"] == pytest.approx(5.0)
    # k = 20: all 10 balanced first, then 10 of the 90 others
    assert hits["20%"].tolist() == pytest.approx([1.0, 10 / 90])


def test_vectorised_charge_balance_matches_core():
    from matdisco.core.composition import charge_balance_possible
    from matdisco.recommender.space import ChargeBalance

    space = R.TernarySpace.build(["Li", "Fe", "Mn", "O", "Cl", "N", "Ne", "Au", "S"], 12)
    rng = np.random.default_rng(3)
    cells = space.unflat(rng.choice(space.n_cells, 600, replace=False))
    fast = ChargeBalance(space)(cells)
    slow = [
        charge_balance_possible(
            {space.elements[c[x]]: int(space.ratios[c[3], x]) for x in range(3)}
        )
        for c in cells
    ]
    assert fast.tolist() == slow
    assert 0.05 < fast.mean() < 0.95
