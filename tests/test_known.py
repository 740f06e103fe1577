"""matdisco.known and the discovery-claim checks (label/template reference phases, below-hull
flag, known structures out of the rates, the funnel)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from matdisco.known import KnownCompositions, annotate_compositions, read_formulas_file
from matdisco.relax.claims import BELOW_HULL_TEXT, funnel
from matdisco.relax.ehull import compute_ehull
from matdisco.relax.reference import missing_known_phases, select_reference, template_phases
from matdisco.relax.testing import mgo, mno, spinel_mgmn2o4
from matdisco.store import StructureArrays, read_entries, write_store


def _cubic(el, a):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(a), [el], [[0, 0, 0]])


def _store(path):
    """Mg-Mn-O store WITHOUT MgMn2O4 (like the bundled 2018 set) but with a ZnAl2O4 spinel
    template; its label table knows MgMn2O4 (E_hull 0) and MgMn2O5 (0.3, outside the window)."""
    spinel = spinel_mgmn2o4()
    spinel.replace_species({"Mg": "Zn", "Mn": "Al"})
    s = [
        _cubic("Mg", 3.2),
        _cubic("Mn", 2.8),
        _cubic("O", 2.5),
        mgo(),
        mno(),
        spinel,
        _cubic("Zn", 2.7),
        _cubic("Al", 4.0),
    ]
    rows = [
        ("mp-mg", "Mg", 0.0, 1),
        ("mp-mn", "Mn", 0.0, 1),
        ("mp-o", "O", 0.0, 1),
        ("mp-mgo", "Mg-O", -3.0, 1),
        ("mp-mno", "Mn-O", -2.0, 0),
        ("mp-znal2o4", "Al-O-Zn", -2.5, 1),
        ("mp-zn", "Zn", 0.0, 1),
        ("mp-al", "Al", 0.0, 1),
    ]
    df = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "source": "fixture",
            "formula": [x.composition.reduced_formula for x in s],
            "composition": [x.composition.formula for x in s],
            "chemsys": [r[1] for r in rows],
            "nelements": [len(r[1].split("-")) for r in rows],
            "nsites": [len(x) for x in s],
            "formation_energy_per_atom": [r[2] for r in rows],
            "e_above_hull": [np.nan, np.nan, np.nan, 0.0, 0.0, 0.0, np.nan, np.nan],
            "is_experimental": [r[3] for r in rows],
        }
    )
    labels = pd.DataFrame(
        {
            "formula": ["MgO", "MnO", "MgMn2O4", "MgMn2O5"],
            "e_above_hull": [0.0, 0.0, 0.0, 0.3],
            "source": "fixture",
        }
    )
    write_store(
        path,
        df,
        StructureArrays.from_structures(s),
        data_source="fixture",
        provenance={},
        labels=labels,
    )


def test_known_compositions_name_every_source(tmp_path):
    _store(tmp_path / "s.h5")
    (tmp_path / "known.txt").write_text("# extra\nMg4Mn2O8\n", encoding="utf-8")
    kc = KnownCompositions.from_store(tmp_path / "s.h5", formulas_file=tmp_path / "known.txt")
    assert kc.source_of("MgMn2O4") == "labels"  # absent from the structures, known to the labels
    assert kc.source_of("Mg2Mn4O8") == "labels"  # any spelling of the formula
    assert kc.source_of("MgO") == "icsd;store;labels"
    assert kc.source_of("MnO") == "store;labels"  # hypothetical store entry: known all the same
    assert kc.source_of("Mg2MnO4") == "user"
    assert kc.source_of("Mg3MnO5") == "" and not kc.is_known("Mg3MnO5")
    no_labels = KnownCompositions.from_store(tmp_path / "s.h5", labels=False)
    assert no_labels.source_of("MgMn2O4") == ""
    t = annotate_compositions(pd.DataFrame({"formula": ["MgMn2O4", "Mg3MnO5"]}), kc)
    assert t["novel_composition"].tolist() == [False, True]
    assert t["known_composition_source"].tolist() == ["labels", ""]
    with pytest.raises(FileNotFoundError, match="known.formulas_file"):
        read_formulas_file(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("Mg2MnO4\nnot a formula !!\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt"):
        read_formulas_file(tmp_path / "bad.txt")


def test_known_phase_missing_from_store_enters_reference(tmp_path):
    _store(tmp_path / "s.h5")
    missing = missing_known_phases(tmp_path / "s.h5", ["Mg", "Mn", "O"], max_e_above_hull=0.1)
    assert missing["formula"].tolist() == ["MgMn2O4"]  # MgMn2O5 (0.3) is outside the window
    assert missing["known_source"].iloc[0] == "labels"
    rows, structures = template_phases(tmp_path / "s.h5", missing, max_formulas=4)
    assert rows["id"].tolist() == ["ref-tpl-MgMn2O4"]
    assert rows["origin"].iloc[0].startswith("template:mp-znal2o4")
    assert structures[0].composition.reduced_formula == "MgMn2O4"
    assert len(template_phases(tmp_path / "s.h5", missing, max_formulas=0)[0]) == 0
    # label-known phases enter the stored reference wherever the store hull puts them
    sel = select_reference(tmp_path / "s.h5", ["Mg", "Mn", "O"], max_e_above_hull=0.1)
    assert {"mp-mgo", "mp-mno"} <= set(sel["id"])


def _toy_reference(path, extra=()):
    rows = [
        ("r-Mg", "Mg1", -1.0),
        ("r-Mn", "Mn1", -2.0),
        ("r-O", "O2", -1.0),
        ("r-MgO", "Mg1O1", -4.0),
        ("r-MnO", "Mn1O1", -4.0),
        *extra,
    ]
    pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "formula": [r[1] for r in rows],
            "composition": [r[1] for r in rows],
            "energy_per_atom": [r[2] for r in rows],
            "energy_scale": "toy",
            "status": "ok",
            "store_e_above_hull": np.nan,
            "origin": "store",
        }
    ).to_csv(path, index=False)


def _relaxed(path, structures, energies, generators):
    df = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(len(structures))],
            "composition": [x.composition.formula for x in structures],
            "formula": [x.composition.reduced_formula for x in structures],
            "generator": generators,
            "target_formula": [x.composition.reduced_formula for x in structures],
            "status": "ok",
            "converged": True,
            "steps": 10,
            "energy_per_atom": energies,
            "energy_scale": "toy",
        }
    )
    write_store(
        path, df, StructureArrays.from_structures(structures), data_source="relax", provenance={}
    )
    return df


def test_store_structure_as_candidate_is_excluded_and_below_hull_is_flagged(tmp_path):
    _store(tmp_path / "s.h5")
    _toy_reference(tmp_path / "ref.csv")
    # c0: the store's own MgO, slightly strained (a store structure offered as a candidate);
    # c1: a spinel MgMn2O4 far below this reference (MgMn2O4 missing from it);
    # c2: a new MgMn2O4 arrangement above the hull
    from pymatgen.core import Lattice, Structure

    strained = mgo()
    strained.scale_lattice(strained.volume * 1.05)
    other = Structure(
        Lattice.cubic(6.0),
        ["Mg", "Mn", "Mn", "O", "O", "O", "O"],
        [
            [0, 0, 0],
            [0.5, 0.5, 0],
            [0.5, 0, 0.5],
            [0.25, 0.25, 0.25],
            [0.75, 0.75, 0.25],
            [0.75, 0.25, 0.75],
            [0.25, 0.75, 0.75],
        ],
    )
    df = _relaxed(
        tmp_path / "relaxed.h5",
        [strained, spinel_mgmn2o4(), other],
        [-4.0, -4.5, -3.0],
        ["template", "template", "wgan_gp"],
    )
    df.assign(valid=True, charge_neutral=True, novel_structure=True, known_id="").to_csv(
        tmp_path / "pool.csv", index=False
    )
    summaries = {
        "template": {
            "per_target": [
                {"target_formula": "MgO", "candidates": 1},
                {"target_formula": "MgMn2O4", "candidates": 1},
            ]
        },
        "wgan_gp": {"per_formula": {"MgMn2O4": {"samples": 10, "valid": 4}}},
    }
    paths = {}
    for g, summ in summaries.items():
        paths[g] = tmp_path / f"{g}.json"
        paths[g].write_text(json.dumps(summ))
    out = compute_ehull(
        tmp_path / "relaxed.h5",
        tmp_path / "ref.csv",
        tmp_path / "e.csv",
        tmp_path / "e.h5",
        tmp_path / "r.json",
        store_path=tmp_path / "s.h5",
        pool_csv=tmp_path / "pool.csv",
        generator_summaries=paths,
    )
    assert out["novel_structure"].tolist() == [False, True, True]
    assert out["known_structure_id"].iloc[0] == "mp-mgo"
    assert out["known_structure_source"].iloc[0] == "store (relaxed)"
    assert out["known_composition_source"].tolist() == ["icsd;store;labels", "labels", "labels"]
    # below the reference hull: flagged; on the self-consistent hull it is 0
    assert out["e_above_hull"].iloc[1] < -0.005 and out["hull_flag"].iloc[1] == BELOW_HULL_TEXT
    assert out["hull_flag"].iloc[0] == "" and out["e_above_hull_self_consistent"].iloc[
        1
    ] == pytest.approx(0.0)
    # c2 lies above c1 on the self-consistent hull, higher than against the reference alone
    assert out["e_above_hull_self_consistent"].iloc[2] > out["e_above_hull"].iloc[2]
    rates = json.loads((tmp_path / "r.json").read_text())
    assert rates["by_generator"]["template"]["n"] == 1  # the store's MgO is not counted
    assert rates["known_structures_excluded"]["all"]["n"] == 1
    assert [r["id"] for r in rates["below_reference_hull"]] == ["c1"]
    fun = pd.DataFrame(rates["funnel"]).set_index(["generator", "target_formula"])
    assert (
        fun.loc[("template", "MgO"), "unique"] == 1 and fun.loc[("template", "MgO"), "novel"] == 0
    )
    assert fun.loc[("wgan_gp", "MgMn2O4"), ["sampled", "valid", "novel"]].tolist() == [10, 4, 1]
    assert fun.loc[("wgan_gp", "all"), "rate_novel_of_sampled"] == pytest.approx(0.1)
    stored = read_entries(tmp_path / "e.h5")
    assert stored["hull_flag"].iloc[1] == BELOW_HULL_TEXT


def test_funnel_counts_screen_stage():
    pool = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "generator": "g",
            "target_formula": "MgO",
            "valid": [True, True, False],
            "charge_neutral": True,
            "novel_structure": True,
        }
    )
    eh = pd.DataFrame(
        {
            "id": ["a", "b"],
            "status": ["ok", "ok"],
            "e_above_hull": [0.05, 0.15],
            "novel_structure": [True, True],
        }
    )
    final = pd.DataFrame({"id": ["a", "b"], "finalist": [True, False]})
    f = funnel(pool, eh, {}, final=final).set_index("target_formula")
    row = f.loc["MgO"]
    assert [
        row[c] for c in ("unique", "novel", "relaxed", "le_200meV", "le_80meV", "passing_screen")
    ] == [2, 2, 2, 2, 1, 1]
    assert row["rate_passing_screen_of_novel"] == pytest.approx(0.5)


def test_formulas_files_gz_and_list(tmp_path, root):
    _store(tmp_path / "s.h5")
    (tmp_path / "a.txt").write_text("Mg2MnO4\n", encoding="utf-8")
    bartel = root / "resources/bundled/bartel2020_decomposition_enthalpy.csv.gz"
    kc = KnownCompositions.from_store(tmp_path / "s.h5", formulas_file=[tmp_path / "a.txt", bartel])
    assert (
        kc.source_of("Mg2MnO4") == "user" and kc.source_of("MgMn2O3") == "user"
    )  # Bartel knows it
    assert kc.source_of("Mg8MnO10") == ""


def test_match_known_structure_uses_the_pool_tolerances():
    from matdisco.core.matching import MatchSettings
    from matdisco.known import match_known_structure

    s = _cubic("Mg", 3.0)
    strained = _cubic("Mg", 3.0)
    strained.apply_strain([0.1, 0.0, 0.0])  # 10% along a: within ltol 0.2, not within 0.05
    refs = [("other", _cubic("Mn", 3.0)), ("mg", s)]
    assert match_known_structure(strained, refs) == "mg"
    tight = MatchSettings(ltol=0.05, stol=0.3, angle_tol=5.0, fingerprint_tol=None)
    assert match_known_structure(strained, refs, tight) == ""
    assert match_known_structure(_cubic("Mn", 3.0), [("mg", s)]) == ""
