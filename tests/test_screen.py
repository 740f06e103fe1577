"""The final screen: pass/fail per criterion, ranking, provenance-named columns, CIF/XRD, and
a non-empty table when nothing passes. Runs pourbaix -> bandgap -> screen on fixture
candidates (known Mg-Mn-O entries)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from matdisco.screen import final as F


def test_scale_slug():
    assert F.scale_slug("chgnet-0.3.0/mp2020") == "chgnet_mp2020"
    assert F.scale_slug("vasp-pbe/mp2020") == "vasp_pbe_mp2020"
    assert F.scale_slug("gpaw-pbe") == "gpaw_pbe"
    assert F.scale_slug("sevennet-0/mp2020") == "sevennet_0_mp2020"
    assert F.scale_slug("") == "unknown_scale"


def test_judge_pass_fail_and_rank():
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "eh": [0.01, 0.05, 0.20, 0.00, 0.03],
            "dg": [0.30, np.nan, 0.10, 0.80, 0.20],
            "gap": [2.0, 2.2, 2.5, 1.0, 1.7],
        }
    )
    th = {"e_above_hull_max": 0.08, "dG_pbx_max": 0.59, "gap_min": 1.6, "gap_max": 3.0}
    out = F.judge(df, th, eh_col="eh", dg_col="dg", gap_col="gap")
    assert out["id"].tolist()[:2] == ["e", "a"]  # both pass; lower dG_pbx first
    assert out["rank"].tolist() == [1, 2, 3, 4, 5]
    row = out.set_index("id")
    assert bool(row.at["a", "passes_all"]) and bool(row.at["e", "passes_all"])
    assert not row.at["b", "pass_dG_pbx"] and "dG_pbx unknown" in row.at["b", "failed_criteria"]
    assert "E_hull > 0.08" in row.at["c", "failed_criteria"]
    assert row.at["d", "n_criteria_passed"] == 1
    assert (
        "gap outside" in row.at["d", "failed_criteria"]
        and "dG_pbx > 0.59" in row.at["d", "failed_criteria"]
    )


def test_powder_xrd_mgo(mgo):
    pat = F.powder_xrd(mgo)
    top = pat.sort_values("intensity").iloc[-1]
    # rock salt MgO, a = 4.21 A: strongest Cu K-alpha reflection (200) at 2theta ~ 42.9 deg
    assert top["two_theta_deg"] == pytest.approx(42.9, abs=0.2)
    assert "(2 0 0)" in top["hkl_families"] or "(0 0 2)" in top["hkl_families"]
    assert pat["intensity"].max() == pytest.approx(100.0)


@pytest.fixture(scope="module")
def staged(tmp_path_factory, root):
    """Fixture candidates with the pourbaix and bandgap stages already run."""
    from matdisco.screen.bandgap import screen_bandgap
    from matdisco.screen.fixtures import fixture_candidates
    from matdisco.screen.pourbaix import screen_pourbaix
    from matdisco.settings import ScreenPourbaixSettings

    d = tmp_path_factory.mktemp("screen")
    bundled = root / "resources/bundled/mp2018_structures.h5"
    n = fixture_candidates(bundled, d / "cand.h5", ["Mg", "Mn", "O"], max_entries=8, max_sites=30)
    assert n == 8
    pbx = {
        **{
            k: str(root / v) if k in ("solids", "ion_references", "elemental_references") else v
            for k, v in ScreenPourbaixSettings().to_dict().items()
        },
        "n_ph": 5,
    }
    screen_pourbaix(
        candidates=d / "cand.h5",
        out_csv=d / "pbx.csv",
        out_summary=d / "pbx.json",
        settings=pbx,
        max_e_above_hull=0.08,
    )
    # tiny surrogate trained on the fixture's own chemistry (quality is not the point here),
    # with the default CHGNet structure embedding (store rows copied from the bundled file)
    from matdisco.screen.gap_embedding import embed_store

    store = _small_store(root, d)
    emb = embed_store(
        store, d / "emb.h5", reuse=root / "resources/bundled/chgnet_embeddings_mp2018.h5"
    )
    assert emb["n_computed"] == 0 and emb["n_reused"] == emb["n"] > 0
    screen_bandgap(
        store=store,
        store_embeddings=d / "emb.h5",
        candidates=d / "cand.h5",
        magpie_table=root / "resources/bundled/magpie_elements.csv",
        elmd_table=None,
        feature_settings={},
        settings={
            "n_members": 2,
            "evaluate_random_split": False,
            "lightgbm": {"n_estimators": 30, "num_leaves": 7},
            "embeddings": [],  # no ElMD table here
        },
        method="surrogate",
        max_e_above_hull=0.08,
        out_csv=d / "gap.csv",
        out_model=d / "gap.pkl",
        out_metrics=d / "gap.json",
        out_parity=d / "gap.png",
        out_dft_dir=d / "dft",
    )
    return d, pbx


def _small_store(root, d):
    """A 600-entry oxide store cut from the bundled set (keeps the test fast)."""
    from matdisco.store import read_entries, read_structure_arrays, write_store

    path = root / "resources/bundled/mp2018_structures.h5"
    df = read_entries(path)
    idx = np.flatnonzero(
        df["chemsys"].str.contains("O").to_numpy() & np.isfinite(df["band_gap"].to_numpy())
    )[:600]
    out = d / "train.h5"
    write_store(
        out,
        df.iloc[idx].reset_index(drop=True),
        read_structure_arrays(path, idx),
        data_source="test",
        provenance={},
    )
    return out


def _run(d, pbx, settings, tag):
    outs = {
        "out_csv": d / f"{tag}_final.csv",
        "out_all": d / f"{tag}_all.csv",
        "out_columns": d / f"{tag}_cols.json",
        "out_summary": d / f"{tag}_summary.json",
        "out_cifs": d / f"{tag}_cifs",
        "out_xrd": d / f"{tag}_xrd",
        "out_xrd_plot": d / f"{tag}_xrd.png",
        "out_scatter": d / f"{tag}_scatter.png",
        "out_pourbaix_plot": d / f"{tag}_pbx.png",
    }
    F.screen_candidates(
        candidates=d / "cand.h5",
        pourbaix_csv=d / "pbx.csv",
        bandgap_csv=d / "gap.csv",
        bandgap_metrics=d / "gap.json",
        settings=settings,
        method="surrogate",
        pourbaix_settings=pbx,
        **outs,
    )
    return outs


def test_final_table_with_finalists(staged):
    d, pbx = staged
    # the fixture's candidates are known store entries: let them be finalists here
    settings = {
        "thresholds": {
            "e_above_hull_max": 0.08,
            "dG_pbx_max": 2.0,
            "gap_min": 0.0,
            "gap_max": 20.0,
        },
        "n_best": 5,
        "include_known_structures": True,
    }
    o = _run(d, pbx, settings, "loose")
    table = pd.read_csv(o["out_csv"])
    summary = json.loads(o["out_summary"].read_text())
    cols = json.loads(o["out_columns"].read_text())
    for c in (
        "e_above_hull_store_hull",
        "dG_pbx_store_hull",
        "gap_pbe_ml",
        "gap_pbe_ml_std",
        "gap_hse_est",
        "pass_e_above_hull",
        "pass_dG_pbx",
        "pass_gap",
        "failed_criteria",
        "gap_for_screen_source",
    ):
        assert c in table.columns
    assert set(cols) == set(table.columns) and all(cols.values()), [
        c for c, v in cols.items() if not v
    ]
    assert "SURROGATE" in cols["gap_pbe_ml"] and "ESTIMATE" in cols["gap_hse_est"]
    n_fin = summary["n_finalists"]
    assert n_fin == int(table["finalist"].sum()) >= 1
    assert len(table) >= n_fin
    assert table["finalist"].iloc[:n_fin].all()  # finalists first
    cifs = sorted(o["out_cifs"].glob("*.cif"))
    assert len(cifs) == min(n_fin, 10)
    xrd = pd.read_csv(sorted(o["out_xrd"].glob("*.csv"))[0])
    assert {"two_theta_deg", "intensity"} <= set(xrd.columns) and len(xrd) > 3
    from pymatgen.core import Structure

    s = Structure.from_file(cifs[0])
    assert s.composition.reduced_formula == table.loc[table["finalist"], "formula"].iloc[0]
    for k in ("out_xrd_plot", "out_scatter", "out_pourbaix_plot"):
        assert o[k].stat().st_size > 5000


def test_nothing_passes_still_lists_best(staged):
    d, pbx = staged
    settings = {
        "thresholds": {
            "e_above_hull_max": 0.08,
            "dG_pbx_max": 0.59,
            "gap_min": 50.0,
            "gap_max": 60.0,
        },
        "n_best": 4,
    }
    o = _run(d, pbx, settings, "strict")
    table = pd.read_csv(o["out_csv"])
    summary = json.loads(o["out_summary"].read_text())
    assert summary["n_finalists"] == 0
    assert len(table) == 4 and not table["finalist"].any()
    assert table["failed_criteria"].str.contains("gap outside").all()
    assert (table["rank"] == [1, 2, 3, 4]).all()
    assert "NOT finalists" in summary["structures_written"]
    assert len(list(o["out_cifs"].glob("*.cif"))) == 3  # the closest ones, labelled as such
    every = pd.read_csv(o["out_all"])
    assert len(every) == 8


def test_known_structures_are_never_finalists_by_default(staged):
    """The fixture's candidates are known store entries: flagged, kept, never finalists."""
    d, pbx = staged
    settings = {
        "thresholds": {
            "e_above_hull_max": 0.08,
            "dG_pbx_max": 2.0,
            "gap_min": 0.0,
            "gap_max": 20.0,
        },
        "n_best": 5,
    }
    o = _run(d, pbx, settings, "known")
    table = pd.read_csv(o["out_all"])
    summary = json.loads(o["out_summary"].read_text())
    assert table["passes_all"].any()  # they would pass the screen ...
    assert (
        not table["finalist"].any() and summary["n_finalists"] == 0
    )  # ... but are not discoveries
    assert table["claim"].str.contains("not a discovery").all()
    assert summary["n_known_structures"] == len(table)
