"""Tests of the proposal stage (matdisco.propose)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from matdisco import propose as P
from matdisco import recommender as R
from matdisco.core.composition import elmd_matrix
from matdisco.propose import stage as PS
from matdisco.settings import ProposeSettings, SettingsError
from matdisco.store import StructureArrays, write_store

STORE_FORMULAS = {
    "LiFeO2": 1,
    "Li5FeO4": 1,
    "CaTiO3": 1,
    "CaTi2O4": 1,
    "Mg6MnO8": 1,
    "MgMnO3": 0,
    "NaFeO2": 1,
    "Na2TiO3": 1,
    "Li2TiO3": 1,
    "SrTiO3": 1,
    "ZnMn2O4": 1,
    "MgO": 1,
    "MnO": 1,
    "Mn3O4": 1,
    "MnO2": 1,
    "Mg": 1,
}


def write_tiny_store(path, formulas: dict[str, int] = STORE_FORMULAS) -> None:
    from pymatgen.core import Composition

    rows = []
    for i, (f, exp) in enumerate(formulas.items()):
        comp = Composition(f)
        rows.append(
            {
                "id": f"t-{i}",
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


# ------------------------------------------------------------- enumeration and oxidation states


def test_enumerate_compositions():
    comps = P.enumerate_compositions(["Mg", "Mn", "O"], 5)
    assert len(comps) == 10
    assert all(
        math.gcd(*c.values()) == 1 and sum(c.values()) <= 5 and min(c.values()) >= 1 for c in comps
    )
    assert {"Mg": 1, "Mn": 1, "O": 3} in comps


@pytest.mark.parametrize(
    ("formula", "window", "expected"),
    [
        ({"Mg": 1, "Mn": 1, "O": 3}, [2, 4], {"Mg": 2, "Mn": 4, "O": -2}),  # Mn4+
        ({"Mg": 1, "Mn": 2, "O": 4}, [2, 4], {"Mg": 2, "Mn": 3, "O": -2}),  # spinel, Mn3+
        ({"Mg": 1, "Mn": 1, "O": 2}, [2, 4], {"Mg": 2, "Mn": 2, "O": -2}),  # Mn2+
        ({"Mg": 1, "Mn": 3, "O": 5}, [2, 4], {"Mg": 2, "Mn": 8 / 3, "O": -2}),  # mixed valence
        ({"Mg": 1, "Mn": 1, "O": 4}, [2, 4], None),  # would need Mn6+
        ({"Mg": 2, "Mn": 1, "O": 1}, [2, 4], None),  # would need Mn-2
        ({"Mg": 1, "Mn": 1, "O": 3}, [2, 3], None),  # Mn4+ outside a [2, 3] window
        ({"Mg": 1, "Mn": 1, "O": 2}, [3, 4], None),  # Mn2+ outside a [3, 4] window
    ],
)
def test_oxidation_state_constraint(formula, window, expected):
    got = P.oxidation_state_guess(formula, {"Mn": window})
    if expected is None:
        assert got is None
        assert not P.charge_balance_possible(formula, {"Mn": window})
    else:
        assert got == pytest.approx(expected)


def test_prefilter_agrees_with_pymatgen():
    from pymatgen.core import Composition

    for comp in P.enumerate_compositions(["Mg", "Mn", "O"], 9):
        pm = Composition(comp).oxi_state_guesses(oxi_states_override={"Mn": [2, 3, 4]})
        ours = P.oxidation_state_guess(comp, {"Mn": [2, 4]})
        assert (ours is None) == (not pm), comp
        if ours is not None:
            assert ours == pytest.approx(pm[0]), comp


def test_charge_balanced_candidates_table():
    table, n_enum = P.charge_balanced_candidates(["Mg", "Mn", "O"], 9, {"Mn": [2, 4]})
    assert n_enum == len(R.ratio_grid(9, 3))
    assert set(table.columns) == {"formula", "composition", "n_atoms", "oxidation_states"}
    row = table.set_index("formula").loc["MgMn2O4"]
    assert row["composition"] == "Mg1 Mn2 O4" and row["n_atoms"] == 7
    assert row["oxidation_states"] == "Mg:+2;Mn:+3;O:-2"
    assert "MgMnO4" not in set(table["formula"])
    assert table.set_index("formula").loc["MgMn3O5", "oxidation_states"] == "Mg:+2;Mn:+2.67;O:-2"


# ------------------------------------------------------------------ acquisition


def test_acquisition_ordering_on_hand_made_scores():
    p = np.array([0.9, 0.5, 0.1, 0.6])
    sp = np.array([0.01, 0.3, 0.05, 0.0])
    names = ["a", "b", "c", "d"]
    # classifier only (no recommender)
    mu, sigma, acq = P.acquisition_scores(p, sp, None, None, kind="exploit")
    assert list(P.rank_candidates(acq, mu, names)) == [0, 3, 1, 2]
    mu, sigma, acq = P.acquisition_scores(p, sp, None, None, kind="explore")
    assert list(P.rank_candidates(acq, mu, names)) == [1, 2, 0, 3]
    mu, sigma, acq = P.acquisition_scores(p, sp, None, None, kind="ucb", kappa=2.0)
    np.testing.assert_allclose(acq, [0.92, 1.1, 0.2, 0.6])
    assert list(P.rank_candidates(acq, mu, names)) == [1, 0, 3, 2]
    # with kappa = 0 ucb is exploit
    _, _, acq0 = P.acquisition_scores(p, sp, None, None, kind="ucb", kappa=0.0)
    np.testing.assert_allclose(acq0, p)


def test_acquisition_combines_classifier_and_recommender():
    p = np.array([0.8, 0.2, np.nan])
    q = np.array([0.2, 1.0, 0.6])
    sq = np.array([0.0, 0.0, 0.1])
    mu, sigma, acq = P.acquisition_scores(
        p, np.zeros(3), q, sq, kind="exploit", classifier_weight=0.25
    )
    # w = 0.25: 0.25 * 0.8 + 0.75 * 0.2 = 0.35; 0.25 * 0.2 + 0.75 * 1.0 = 0.8; the NaN falls
    # back to q
    np.testing.assert_allclose(mu, [0.35, 0.8, 0.6])
    np.testing.assert_allclose(sigma, [0.0, 0.0, 0.1])
    assert list(P.rank_candidates(acq, mu, ["x", "y", "z"])) == [1, 2, 0]
    # ties on acquisition are broken by the mean, then the formula
    order = P.rank_candidates(np.array([1.0, 1.0, 1.0]), np.array([0.1, 0.3, 0.3]), ["b", "c", "a"])
    assert list(order) == [2, 1, 0]
    with pytest.raises(ValueError, match="acquisition"):
        P.acquisition_scores(p, None, None, None, kind="greedy")


# ------------------------------------------------------------------ nearest known compounds


def test_nearest_known_matches_elmd():
    from ElMD import ElMD
    from ElMD.ElMD import simple_emd

    emd = getattr(simple_emd, "py_func", simple_emd)
    queries = ["MgMn2O4", "Mg2MnO4", "LiFeO2"]
    known = ["ZnMn2O4", "Mn3O4", "MgO", "MgMn2O4", "NaCl"]
    d = elmd_matrix(queries, known)
    for i, a in enumerate(queries):
        for j, b in enumerate(known):
            ref = emd(
                ElMD(a, metric="mod_petti").feature_vector,
                ElMD(b, metric="mod_petti").feature_vector,
            )
            assert d[i, j] == pytest.approx(ref, abs=1e-9), (a, b)
    near = P.nearest_known(queries, known, n=2)
    first = near[0].split(";")
    assert len(first) == 2
    assert not any(x.startswith("MgMn2O4:") for x in first)  # itself (distance 0) is not listed
    names = [x.split(":")[0] for x in first]
    dists = [float(x.split(":")[1]) for x in first]
    assert dists == sorted(dists)
    j = known.index(names[0])
    assert dists[0] == pytest.approx(d[0, j], abs=1e-3)


# ------------------------------------------------------------------ the stage


def test_propose_end_to_end(tmp_path, monkeypatch):
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    R.train_recommender(
        store,
        tmp_path / "rec.pkl",
        {"n_bootstrap": 2, "n_quantile_samples": 500},
        target_elements=["Mg", "Mn", "O"],
    )

    def fake_classifier(model_path, formulas):
        p = np.array([0.9 if f == "MgMn2O4" else 0.3 for f in formulas])
        return pd.DataFrame(
            {
                "formula": formulas,
                "p_stable": p,
                "p_stable_std": np.full(len(p), 0.05),
                "out_of_domain": False,
                "valid": True,
            }
        )

    monkeypatch.setattr(PS, "classifier_scores", fake_classifier)
    (tmp_path / "clf.pkl").write_bytes(b"")
    out_csv, out_png = tmp_path / "proposals.csv", tmp_path / "proposals.png"
    table = P.propose(
        store=store,
        recommender_model=tmp_path / "rec.pkl",
        classifier_model=tmp_path / "clf.pkl",
        out_csv=out_csv,
        out_png=out_png,
        elements=["Mg", "Mn", "O"],
        oxidation_states={"Mn": [2, 4]},
        max_atoms=10,
        settings=ProposeSettings(acquisition="exploit", classifier_weight=0.9, n_top=3),
    )
    df = pd.read_csv(out_csv)
    required = {
        "rank",
        "formula",
        "composition",
        "oxidation_states",
        "p_stable",
        "p_stable_std",
        "recommender_score",
        "recommender_std",
        "acquisition",
        "known",
        "nearest_known",
    }
    assert required <= set(df.columns)
    assert len(df) == len(table)
    # unknown compositions first with ranks 1..n, the known one (none of Mg-Mn-O's reported
    # ternaries fits 10 atoms) after
    unknown = df[~df["known"]]
    assert unknown["rank"].tolist() == list(range(1, len(unknown) + 1))
    assert df["selected"].sum() == 3 and df["selected"].head(3).all()
    assert df.loc[0, "formula"] == "MgMn2O4"  # highest p_stable, weight 0.9
    assert (df["acquisition"].head(len(unknown)).diff().dropna() <= 1e-12).all()
    assert (
        df["recommender_score"].between(0, 1).all()
        and df["recommender_percentile"].between(0, 1).all()
    )
    assert df["recommender_std"].notna().all()
    assert df.loc[0, "nearest_known"].count(";") == 2
    assert "MgMnO3" in set(df["formula"]) and bool(
        df.set_index("formula").loc["MgMnO3", "in_store"]
    )
    # not ICSD-linked, but the store knows it: known (matdisco.known), with its source named
    row = df.set_index("formula").loc["MgMnO3"]
    assert bool(row["known"]) and "store" in str(row["known_composition_source"])
    assert out_png.stat().st_size > 5000


def test_propose_without_classifier_and_with_known(tmp_path):
    store = tmp_path / "entries.h5"
    write_tiny_store(store, {**STORE_FORMULAS, "MgMnO3": 1})
    R.train_recommender(
        store,
        tmp_path / "rec.pkl",
        {"n_bootstrap": 0, "n_quantile_samples": 200},
        target_elements=["Mg", "Mn", "O"],
    )
    table = P.propose(
        store=store,
        recommender_model=tmp_path / "rec.pkl",
        classifier_model=None,
        out_csv=tmp_path / "p.csv",
        out_png=None,
        elements=["Mg", "Mn", "O"],
        oxidation_states={"Mn": [2, 4]},
        max_atoms=6,
        settings={"acquisition": "ucb"},
    )
    assert table["p_stable"].isna().all()
    known = table[table["known"]]
    assert known["formula"].tolist() == ["MgMnO3"] and known["rank"].isna().all()
    assert table.index[table["known"]].min() == len(table) - 1  # the known row comes last


def test_propose_quaternary_target_uses_classifier_only(tmp_path, monkeypatch):
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    R.train_recommender(store, tmp_path / "rec.pkl", {"n_bootstrap": 0, "n_quantile_samples": 200})

    def fake_classifier(model_path, formulas):
        p = np.linspace(0.9, 0.1, len(formulas))
        return pd.DataFrame(
            {
                "formula": formulas,
                "p_stable": p,
                "p_stable_std": 0.0,
                "out_of_domain": False,
                "valid": True,
            }
        )

    monkeypatch.setattr(PS, "classifier_scores", fake_classifier)
    (tmp_path / "clf.pkl").write_bytes(b"")
    table = P.propose(
        store=store,
        recommender_model=tmp_path / "rec.pkl",
        classifier_model=tmp_path / "clf.pkl",
        out_csv=tmp_path / "p.csv",
        out_png=tmp_path / "p.png",
        elements=["Li", "Mn", "O", "F"],
        oxidation_states={"Mn": [2, 4]},
        max_atoms=8,
        settings={"acquisition": "exploit"},
    )
    assert len(table) and table["recommender_score"].isna().all()
    np.testing.assert_allclose(table["acquisition"], table["p_stable"])
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_propose_bad_settings_fail_before_output(tmp_path):
    store = tmp_path / "entries.h5"
    write_tiny_store(store)
    kwargs = {
        "store": store,
        "recommender_model": None,
        "classifier_model": None,
        "out_csv": tmp_path / "p.csv",
        "out_png": tmp_path / "p.png",
        "elements": ["Mg", "Mn", "O"],
        "max_atoms": 6,
    }
    with pytest.raises(SettingsError, match="propose.acquisition"):
        P.propose(**kwargs, settings={"acquisition": "greedy"})
    with pytest.raises(SettingsError, match="propose.n_topp"):
        P.propose(**kwargs, settings={"n_topp": 3})
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "p.png").exists()


def test_ranking_summary_against_random_over_the_pool():
    from matdisco.propose.summary import ranking_summary

    acq = np.array([0.9, 0.8, 0.7, 0.1, np.nan])
    known = np.array([True, False, False, True, False])
    s = ranking_summary(acq, known, n_enumerated=12, n_top=2)
    assert s["n_pool_charge_balanced"] == 5 and s["n_known_in_pool"] == 2
    assert s["n_unknown_in_pool"] == 3 and s["n_selected"] == 2
    # positions 0 (first) and 3 of 0..4: mean fraction (0 + 3 / 4) / 2; random order gives 0.5
    assert s["known_rank_fraction"] == pytest.approx(0.375)
    assert s["known_in_top"] == pytest.approx(1.0)  # only the first is within the top 2
    assert s["known_in_top_random"] == pytest.approx(2 * 2 / 5)
    assert "in-sample" in s["note"]


def test_propose_writes_the_summary(tmp_path):
    store = tmp_path / "entries.h5"
    write_tiny_store(store, {**STORE_FORMULAS, "MgMnO3": 1})
    R.train_recommender(
        store,
        tmp_path / "rec.pkl",
        {"n_bootstrap": 0, "n_quantile_samples": 200},
        target_elements=["Mg", "Mn", "O"],
    )
    table = P.propose(
        store=store,
        recommender_model=tmp_path / "rec.pkl",
        classifier_model=None,
        out_csv=tmp_path / "p.csv",
        out_png=None,
        elements=["Mg", "Mn", "O"],
        oxidation_states={"Mn": [2, 4]},
        max_atoms=6,
        settings={"acquisition": "exploit", "n_top": 2},
        out_summary=tmp_path / "summary.json",
    )
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["n_pool_charge_balanced"] == len(table)
    assert s["n_known_in_pool"] == int(table["known"].sum()) == 1
    assert 0.0 <= s["known_rank_fraction"] <= 1.0 and s["known_rank_fraction_random"] == 0.5
    assert s["acquisition"] == "exploit"
