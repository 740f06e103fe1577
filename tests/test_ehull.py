"""E_hull against a reference hull on the same energy scale; reference selection; rates; plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matdisco.relax.ehull import candidate_ehull, compute_ehull, metastable_rates
from matdisco.relax.reference import (
    compute_reference,
    hull_screen,
    load_reference,
    phase_diagram,
    select_reference,
    store_hull,
)
from matdisco.relax.testing import mgo, mno
from matdisco.store import StructureArrays, read_entries, write_store


def _ref_table(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["id", "composition", "energy_per_atom"])
    df["formula"] = df["composition"]
    df["energy_scale"] = "toy"
    df["status"] = "ok"
    df["store_e_above_hull"] = np.nan
    return df


@pytest.fixture
def toy_ref(tmp_path) -> Path:
    """A-B toy hull on the 'toy' scale: A = -1, B = -2, AB = -2.0 (stable, E_f = -0.5)."""
    ref = _ref_table(
        [
            ("r-Mg", "Mg1", -1.0),
            ("r-O", "O2", -2.0),
            ("r-MgO", "Mg1 O1", -2.0),
            ("r-MgO2", "Mg1 O2", -2.0),
        ]
    )
    path = tmp_path / "ref.csv"
    ref.to_csv(path, index=False)
    return path


def test_candidate_ehull_and_decomposition(toy_ref):
    pdg = phase_diagram(load_reference(toy_ref))
    e, ef, dec = candidate_ehull(pdg, "Mg1 O1", -1.8)  # 0.2 above MgO
    assert e == pytest.approx(0.2) and ef == pytest.approx(-0.3)
    assert dec == "MgO (r-MgO): 1.000"
    e, _, dec = candidate_ehull(
        pdg, "Mg2 O1", -5 / 3
    )  # on the Mg-MgO tie line: (1 x -1 + 2 x -2) / 3
    assert (
        e == pytest.approx(0.0, abs=1e-9) and dec.startswith("MgO (r-MgO)") and "Mg (r-Mg)" in dec
    )
    e, _, _ = candidate_ehull(pdg, "Mg1 O1", -2.1)  # below the hull: negative (a new ground state)
    assert e == pytest.approx(-0.1)
    assert np.isnan(candidate_ehull(pdg, "Mg1 Mn1 O2", -3.0)[0])  # Mn not in the reference system
    assert np.isnan(candidate_ehull(pdg, "Mg1 O1", float("nan"))[0])


def test_metastable_rates():
    df = pd.DataFrame(
        {
            "generator": ["gan", "gan", "gan", "gan", "template", "template"],
            "status": ["ok", "ok", "failed", "prescreen_rejected", "ok", "ok"],
            "converged": [True, False, False, False, True, True],
            "e_above_hull": [0.05, 0.15, np.nan, np.nan, 0.5, -0.01],
        }
    )
    r = metastable_rates(df, (0.2, 0.08))
    gan, tmpl = r["by_generator"]["gan"], r["by_generator"]["template"]
    assert (
        gan["n"] == 4
        and gan["n_relaxed"] == 2
        and gan["n_failed"] == 1
        and gan["n_prescreen_rejected"] == 1
    )
    assert gan["n_not_converged"] == 1
    assert gan["rate_le_200meV"] == 0.5 and gan["rate_le_200meV_of_relaxed"] == 1.0
    assert gan["rate_le_80meV"] == 0.25
    assert tmpl["rate_le_80meV"] == 0.5 and tmpl["n_below_reference_hull"] == 1
    assert r["all"]["n_le_200meV"] == 3


def _store(path: Path) -> None:
    """Mg-Mn-O 'store': elements, MgO (+ a high polymorph), MnO, an unstable Mn-O phase."""
    from pymatgen.core import Lattice, Structure

    def cubic(el, a):
        return Structure(Lattice.cubic(a), [el], [[0, 0, 0]])

    s = [
        cubic("Mg", 3.2),
        cubic("Mg", 3.3),
        cubic("Mn", 2.8),
        Structure(Lattice.cubic(5), ["O", "O"], [[0, 0, 0], [0.24, 0, 0]]),
        mgo(),
        mgo(),
        mno(),
        mno(),
    ]
    rows = [
        ("mp-a", "Mg", 0.0),
        ("mp-b", "Mg", 0.3),
        ("mp-c", "Mn", 0.0),
        ("mp-d", "O", 0.0),
        ("mp-e", "Mg-O", -3.0),
        ("mp-f", "Mg-O", -2.5),
        ("mp-g", "Mn-O", -2.0),
        ("mp-h", "Mn-O", -1.95),
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
            "e_above_hull": [np.nan, np.nan, np.nan, np.nan, 0.0, 0.5, 0.0, 0.05],
            "energy_per_atom": np.nan,
        }
    )
    write_store(path, df, StructureArrays.from_structures(s), data_source="fixture", provenance={})


def test_store_hull_and_reference_selection(tmp_path):
    _store(tmp_path / "s.h5")
    hull = store_hull(tmp_path / "s.h5", ["Mg", "Mn", "O"])
    got = dict(zip(hull["id"], hull["store_hull_e_above_hull"], strict=True))
    assert (
        got["mp-e"] == pytest.approx(0.0)
        and got["mp-f"] == pytest.approx(0.5)
        and got["mp-h"] == pytest.approx(0.05)
    )
    sel = select_reference(tmp_path / "s.h5", ["Mg", "Mn", "O"], max_e_above_hull=0.1)
    assert set(sel["id"]) == {"mp-a", "mp-c", "mp-d", "mp-e", "mp-g", "mp-h"}  # mp-b, mp-f too high
    assert len(select_reference(tmp_path / "s.h5", ["Mg", "Mn", "O"], max_e_above_hull=None)) == 8
    assert set(select_reference(tmp_path / "s.h5", ["Mg", "O"], max_e_above_hull=0.0)["id"]) == {
        "mp-a",
        "mp-d",
        "mp-e",
    }
    with pytest.raises(ValueError, match="no elemental entry"):
        store_hull(tmp_path / "s.h5", ["Mg", "Ca", "O"])


def test_compute_ehull_end_to_end_and_scale_check(tmp_path, toy_ref):
    from pymatgen.core import Lattice, Structure

    s = [
        mgo(),
        mgo(),
        Structure(Lattice.cubic(4), ["Mg", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]]),
    ]
    df = pd.DataFrame(
        {
            "id": ["c1", "c2", "c3"],
            "composition": [x.composition.formula for x in s],
            "formula": [x.composition.reduced_formula for x in s],
            "generator": ["gan", "template", "gan"],
            "status": ["ok", "failed", "ok"],
            "converged": [True, False, True],
            "steps": [10, 0, 20],
            "energy_per_atom": [-1.9, np.nan, -2.0],
            "prescreen_energy_per_atom": [-1.5, -1.0, np.nan],
            "energy_scale": ["toy", "", "toy"],
        }
    )
    write_store(
        tmp_path / "relaxed.h5",
        df,
        StructureArrays.from_structures(s),
        data_source="relax",
        provenance={},
    )
    out = compute_ehull(
        tmp_path / "relaxed.h5",
        toy_ref,
        tmp_path / "e.csv",
        tmp_path / "e.h5",
        tmp_path / "r.json",
        reference_mode="relax",
    )
    assert out["e_above_hull"].iloc[0] == pytest.approx(0.1) and np.isnan(
        out["e_above_hull"].iloc[1]
    )
    assert out["e_above_hull"].iloc[2] == pytest.approx(0.0, abs=1e-9)  # MgO2 on its own hull point
    assert out["prescreen_e_above_hull"].iloc[0] == pytest.approx(0.5)
    assert set(out["energy_scale"]) == {"toy"} and "MgO (r-MgO)" in out["decomposition"].iloc[0]
    stored = read_entries(tmp_path / "e.h5")
    assert (
        stored["e_above_hull"].iloc[0] == pytest.approx(0.1)
        and "toy" in stored["e_above_hull_method"].iloc[0]
    )
    rates = json.loads((tmp_path / "r.json").read_text())
    assert rates["energy_scale"] == "toy" and rates["by_generator"]["gan"]["n_le_80meV"] == 1
    # a reference on another scale is refused
    ref = load_reference(toy_ref)
    ref["energy_scale"] = "chgnet-0.3.0/mp2020"
    ref.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match="energy scales differ"):
        compute_ehull(
            tmp_path / "relaxed.h5",
            tmp_path / "other.csv",
            tmp_path / "x.csv",
            tmp_path / "x.h5",
            tmp_path / "x.json",
        )
    with pytest.raises(ValueError, match="refusing to mix"):
        hull_screen(tmp_path / "other.csv", "toy", {})


def test_hull_screen_prescreen_and_early_stop(toy_ref):
    from ase import Atoms

    pre, early = hull_screen(
        toy_ref,
        "toy",
        {"max_e_above_hull": 1.0, "early_stop_e_above_hull": 0.3, "early_stop_after_steps": 20},
    )
    reasons = pre(["a", "b", "c"], [mgo(), mgo(), mgo()], [-1.5, -0.5, float("nan")])
    assert reasons[0] == "" and "pre-screen" in reasons[1] and "failed" in reasons[2]
    atoms = Atoms("MgO", cell=[3, 3, 3], pbc=True)
    assert early("x", atoms, -2 * 1.5, 20).startswith("early stop")  # 0.5 above the hull
    assert early("x", atoms, -2 * 1.5, 19) == ""  # too early
    assert early("x", atoms, -2 * 1.9, 30) == ""  # close to the hull: keep going
    _, none = hull_screen(toy_ref, "toy", {"max_e_above_hull": 1.0, "early_stop_after_steps": None})
    assert none is None
    record_only, _ = hull_screen(toy_ref, "toy", {"max_e_above_hull": None})  # the default
    assert record_only(["a", "b"], [mgo(), mgo()], [-1.5, 50.0]) == ["", ""]


def test_compute_reference_static_emt(tmp_path, cu_au_store):
    """Reference phases recomputed with the backend (EMT single points), resumable."""
    cu_au_store(tmp_path / "s.h5")
    ref = compute_reference(
        tmp_path / "s.h5",
        tmp_path / "r.jsonl",
        tmp_path / "r.csv",
        tmp_path / "p.jsonl",
        elements=["Cu", "Au"],
        backend="emt",
        reference={"mode": "static", "max_e_above_hull": None},
    )
    assert list(ref["status"]) == ["ok"] * 3 and set(ref["energy_scale"]) == {"emt"}
    assert np.isfinite(ref["e_above_hull_model"]).all()
    again = compute_reference(
        tmp_path / "s.h5",
        tmp_path / "r.jsonl",
        tmp_path / "r2.csv",
        tmp_path / "p.jsonl",
        elements=["Cu", "Au"],
        backend="emt",
        reference={"mode": "static", "max_e_above_hull": None},
    )
    pd.testing.assert_frame_equal(
        ref.reset_index(drop=True), again.reset_index(drop=True), check_dtype=False
    )


def test_plots(tmp_path, toy_ref):
    from matdisco.relax.plots import plot_ehull_distribution, plot_hull

    table = pd.DataFrame(
        {
            "id": ["c1", "c2", "c3"],
            "formula": ["MgO", "Mg2O", "MgO2"],
            "generator": ["gan", "template", "gan"],
            "status": ["ok", "ok", "failed"],
            "e_above_hull": [0.1, 0.05, np.nan],
            "formation_energy_per_atom": [-0.4, -0.3, np.nan],
            "energy_scale": "toy",
        }
    )
    table.to_csv(tmp_path / "e.csv", index=False)
    plot_hull(toy_ref, tmp_path / "e.csv", tmp_path / "hull.png")
    plot_ehull_distribution(tmp_path / "e.csv", tmp_path / "dist.png")
    assert (tmp_path / "hull.png").stat().st_size > 5000 and (
        tmp_path / "dist.png"
    ).stat().st_size > 5000


def test_empty_pool_gathers_to_empty_outputs(tmp_path, toy_ref):
    """No candidate selected (no shard): gather, E_hull and plots still write their files."""
    from matdisco.relax.plots import plot_ehull_distribution, plot_hull
    from matdisco.relax.shards import gather_shards

    gather_shards([], [], tmp_path / "relaxed.h5", tmp_path / "relaxed.csv")
    out = compute_ehull(
        tmp_path / "relaxed.h5", toy_ref, tmp_path / "e.csv", tmp_path / "e.h5", tmp_path / "r.json"
    )
    assert len(out) == 0 and json.loads((tmp_path / "r.json").read_text())["all"] == {"n": 0}
    plot_hull(toy_ref, tmp_path / "e.csv", tmp_path / "hull.png")
    plot_ehull_distribution(tmp_path / "e.csv", tmp_path / "dist.png")
    assert (tmp_path / "hull.png").exists() and (tmp_path / "dist.png").exists()


# --------------------------------------------------------------------------------------
# public API (matdisco.ehull), input validation before output, CLI
# --------------------------------------------------------------------------------------


def _li_o_entries():
    """A tiny Li-O system: references and candidates as pymatgen ComputedStructureEntry."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    li = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    o2 = Structure(Lattice.cubic(5.0), ["O", "O"], [[0, 0, 0], [0, 0, 0.24]])
    li2o = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.61), ["O", "Li"], [[0, 0, 0], [0.25, 0.25, 0.25]]
    )
    li2o2 = Structure(
        Lattice.hexagonal(3.14, 7.65),
        ["Li"] * 4 + ["O"] * 4,
        [
            [0, 0, 0],
            [0, 0, 0.5],
            [1 / 3, 2 / 3, 0.25],
            [2 / 3, 1 / 3, 0.75],
            [1 / 3, 2 / 3, 0.85],
            [1 / 3, 2 / 3, 0.65],
            [2 / 3, 1 / 3, 0.15],
            [2 / 3, 1 / 3, 0.35],
        ],
    )
    lio2 = Structure(
        Lattice.cubic(4.0), ["Li", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0.3]]
    )

    def entry(s, e_pa, i, corr=0.0):
        return ComputedStructureEntry(s, e_pa * len(s) - corr, correction=corr, entry_id=i)

    ref = [
        entry(li, -1.9, "r-Li"),
        entry(o2, -4.9, "r-O2"),
        entry(li2o, -4.8, "r-Li2O", corr=0.3 * 12),
        entry(li2o2, -4.5, "r-Li2O2"),
    ]
    cand = [
        entry(li2o, -4.7, "c-Li2O"),
        entry(lio2, -4.0, "c-LiO2"),
        entry(li2o, -4.9, "c-Li2O-low"),
        entry(li2o2, -4.2, "c-Li2O2"),
    ]
    return ref, cand


def _write_ref_csv(ref_entries, path, scale="toy", drop=()):
    rows = [
        {
            "id": e.entry_id,
            "formula": e.composition.reduced_formula,
            "composition": e.composition.formula,
            "nsites": len(e.structure),
            "energy_per_atom": e.energy_per_atom,
            "energy_scale": scale,
            "status": "ok",
            "reason": "",
            "steps": 0,
        }
        for e in ref_entries
    ]
    pd.DataFrame(rows).drop(columns=list(drop)).to_csv(path, index=False)
    return path


def test_from_entries_matches_pymatgen_phase_diagram(tmp_path):
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    from matdisco.ehull import ENTRY_COLUMNS, from_entries

    ref, cand = _li_o_entries()
    pdg = PhaseDiagram(ref)
    expected = [pdg.get_e_above_hull(c, allow_negative=True) for c in cand]
    expected_ef = [pdg.get_form_energy_per_atom(c) for c in cand]
    assert min(expected) < 0 < max(expected)  # one below the hull, others above
    for reference in (ref, _write_ref_csv(ref, tmp_path / "ref.csv")):
        out = from_entries(cand, reference)
        assert list(out.columns) == list(ENTRY_COLUMNS)
        assert out["id"].tolist() == ["c-Li2O", "c-LiO2", "c-Li2O-low", "c-Li2O2"]
        np.testing.assert_allclose(out["e_above_hull"], expected, atol=1e-9)
        np.testing.assert_allclose(out["formation_energy_per_atom"], expected_ef, atol=1e-9)
    assert set(out["energy_scale"]) == {"toy"}
    assert out["decomposition"].iloc[0] == "Li2O (r-Li2O): 1.000"
    # self-hull: the entries are their own reference; an element outside the system -> NaN + reason
    from pymatgen.entries.computed_entries import ComputedEntry

    self_hull = from_entries(ref + [ComputedEntry("Na2O", -20.0, entry_id="x")], ref)
    assert np.isnan(self_hull["e_above_hull"].iloc[-1]) and "Na" in self_hull["reason"].iloc[-1]
    own = from_entries(ref)
    np.testing.assert_allclose(
        own["e_above_hull"], [pdg.get_e_above_hull(e) for e in ref], atol=1e-9
    )
    with pytest.raises(ValueError, match="energy scales differ"):
        from_entries(cand, tmp_path / "ref.csv", energy_scale="chgnet")


@pytest.mark.parametrize("column", ["energy_scale", "energy_per_atom", "status", "composition"])
def test_reference_missing_column_fails_before_any_output(tmp_path, column):
    from matdisco.ehull import from_entries

    ref, cand = _li_o_entries()
    bad = _write_ref_csv(ref, tmp_path / "bad.csv", drop=[column])
    with pytest.raises(ValueError, match=column):
        from_entries(cand, bad)
    s = [c.structure for c in cand]
    df = pd.DataFrame(
        {
            "id": [c.entry_id for c in cand],
            "composition": [c.composition.formula for c in cand],
            "formula": [c.composition.reduced_formula for c in cand],
            "status": "ok",
            "converged": True,
            "energy_per_atom": [c.energy_per_atom for c in cand],
            "energy_scale": "toy",
        }
    )
    write_store(
        tmp_path / "relaxed.h5",
        df,
        StructureArrays.from_structures(s),
        data_source="relax",
        provenance={},
    )
    outs = [tmp_path / "o.csv", tmp_path / "o.h5", tmp_path / "o.json"]
    with pytest.raises(ValueError, match=column):
        compute_ehull(tmp_path / "relaxed.h5", bad, *outs)
    assert not any(p.exists() for p in outs)
    # a reference without the optional store_* columns works (it used to raise KeyError
    # after writing the CSV and the store)
    good = _write_ref_csv(ref, tmp_path / "good.csv")
    table = compute_ehull(tmp_path / "relaxed.h5", good, *outs)
    assert all(p.exists() for p in outs) and np.isfinite(table["e_above_hull"]).all()


def test_candidate_store_missing_column_fails_before_any_output(tmp_path):
    ref, cand = _li_o_entries()
    good = _write_ref_csv(ref, tmp_path / "ref.csv")
    df = pd.DataFrame(
        {"id": ["a"], "composition": ["Li2 O1"], "status": ["ok"], "energy_per_atom": [-4.7]}
    )
    write_store(
        tmp_path / "relaxed.h5",
        df,
        StructureArrays.from_structures([cand[0].structure]),
        data_source="relax",
        provenance={},
    )
    outs = [tmp_path / "o.csv", tmp_path / "o.h5", tmp_path / "o.json"]
    with pytest.raises(ValueError, match="energy_scale"):
        compute_ehull(tmp_path / "relaxed.h5", good, *outs)
    assert not any(p.exists() for p in outs)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        compute_ehull(tmp_path / "nope.h5", good, *outs)
    assert not any(p.exists() for p in outs)


def test_cli_ehull(tmp_path, capsys):
    from monty.json import MontyEncoder

    from matdisco.cli import main

    ref, cand = _li_o_entries()
    entries_json = tmp_path / "entries.json"
    entries_json.write_text(json.dumps([c.as_dict() for c in cand], cls=MontyEncoder))
    ref_csv = _write_ref_csv(ref, tmp_path / "ref.csv")
    assert (
        main(
            [
                "ehull",
                str(entries_json),
                "--reference",
                str(ref_csv),
                "-o",
                str(tmp_path / "out.csv"),
            ]
        )
        == 0
    )
    out = pd.read_csv(tmp_path / "out.csv")
    from matdisco.ehull import from_entries

    np.testing.assert_allclose(
        out["e_above_hull"], from_entries(cand, ref)["e_above_hull"], atol=1e-9
    )
    # a reference JSON of entries works too; a bad reference fails with the column named and
    # no output
    ref_json = tmp_path / "ref.json"
    ref_json.write_text(json.dumps([e.as_dict() for e in ref], cls=MontyEncoder))
    assert main(["ehull", str(entries_json), "--reference", str(ref_json)]) == 0
    assert "c-LiO2" in capsys.readouterr().out
    bad = _write_ref_csv(ref, tmp_path / "bad.csv", drop=["energy_scale"])
    assert (
        main(["ehull", str(entries_json), "--reference", str(bad), "-o", str(tmp_path / "x.csv")])
        == 2
    )
    assert "energy_scale" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
