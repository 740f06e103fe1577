"""Template-based structure prediction on tiny inline stores."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from matdisco.cli import main as cli_main
from matdisco.core.composition import FormulaError
from matdisco.core.composition import elmd as elmd_mod_petti
from matdisco.generate.templates import (
    TemplateLibrary,
    TemplateSettings,
    generate_templates,
)
from matdisco.store import StructureArrays, read_entries, read_structures, write_store


def _perovskite(a: str, b: str, x: str = "O", lattice: float = 3.9):
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice.cubic(lattice),
        [a, b, x, x, x],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


def _rocksalt(a: str, b: str, lattice: float = 4.2):
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _store(path, structures, ids=None, ehull=None):
    """A minimal entry store of the given structures."""
    ids = ids or [f"mp-{i + 1}" for i in range(len(structures))]
    table = pd.DataFrame(
        {
            "id": ids,
            "source": "bundled",
            "formula": [s.composition.reduced_formula for s in structures],
            "nelements": [len(s.composition.elements) for s in structures],
            "nsites": [len(s) for s in structures],
            "e_above_hull": ehull if ehull is not None else [0.0] * len(structures),
            "is_experimental": 1,
        }
    )
    write_store(
        path, table, StructureArrays.from_structures(structures), data_source="test", provenance={}
    )
    return path


def _matches(a, b) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StructureMatcher().fit(a, b)


@pytest.mark.parametrize(
    ("a", "b"), [("MgMn2O4", "ZnAl2O4"), ("CaTiO3", "SrTiO3"), ("Li2O", "MgAl2O4")]
)
def test_elmd_equals_the_elmd_package(a, b):
    from ElMD import ElMD

    assert elmd_mod_petti(a, b) == pytest.approx(ElMD(a, metric="mod_petti").elmd(b), abs=1e-9)


def test_substitution_maps_cations_by_role_and_rescales(tmp_path):
    store = _store(
        tmp_path / "s.h5",
        [_perovskite("Ca", "Ti"), _rocksalt("Mg", "O"), _rocksalt("Na", "Cl", 5.6)],
    )
    lib = TemplateLibrary.from_store(store, TemplateSettings(volume_rule="ionic_radii", top_k=3))
    cands, summary = lib.predict("KNbO3")
    assert summary["same_stoichiometry_templates"] == 1
    best = cands[0]
    assert best.parent == "mp-1" and best.method == "substitution"
    assert best.structure.composition.reduced_formula == "KNbO3"
    # the large monovalent cation takes the A site (origin), Nb(5+) the B site
    assert best.structure[0].specie.symbol == "K" and best.structure[1].specie.symbol == "Nb"
    assert "Ca->K" in best.mapping and "Ti->Nb" in best.mapping
    # K+ and Nb5+ are larger than Ca2+ and Ti4+: the cell grows, coordinates are kept
    assert best.volume_scale > 1.0
    assert best.structure.volume == pytest.approx(
        _perovskite("Ca", "Ti").volume * best.volume_scale, rel=1e-3
    )
    np.testing.assert_allclose(best.structure.frac_coords, _perovskite("Ca", "Ti").frac_coords)
    assert best.template_distance >= best.elmd - 1e-9  # the ElMD is a lower bound of the cost


def test_oxidation_states_decide_between_equal_amounts(tmp_path):
    """MnTiO3 (Mn2+, Ti4+) -> MgMnO3 (Mg2+, Mn4+): both mappings cost the same on the Pettifor
    scale; the oxidation-state penalty puts Mg on the Mn(2+) site and Mn(4+) on the Ti site."""
    store = _store(tmp_path / "s.h5", [_perovskite("Mn", "Ti")])
    lib = TemplateLibrary.from_store(store, TemplateSettings(top_k=2, oxidation_weight=4.0))
    cands, _ = lib.predict("MgMnO3")
    assert len(cands) == 2
    assert set(cands[0].mapping.split()) == {"Mn->Mg", "Ti->Mn", "O->O"}
    assert cands[0].structure[0].specie.symbol == "Mg"
    # the swapped mapping pays w_ox * (|2 - 4| + |4 - 2|) / 5 atoms = 3.2 on top
    assert cands[1].template_distance - cands[0].template_distance == pytest.approx(3.2, abs=1e-3)
    flat = TemplateLibrary.from_store(store, TemplateSettings(top_k=2, oxidation_weight=0.0))
    costs = [c.template_distance for c in flat.predict("MgMnO3")[0]]
    assert abs(costs[0] - costs[1]) < 1.0  # nearly tied without the charges


def test_distinct_candidates_only(tmp_path):
    """Two templates of one prototype give one candidate, not two copies."""
    store = _store(
        tmp_path / "s.h5",
        [
            _perovskite("Ca", "Ti", lattice=3.85),
            _perovskite("Sr", "Ti", lattice=3.95),
            _rocksalt("Mg", "O"),
        ],
    )
    lib = TemplateLibrary.from_store(store, TemplateSettings(top_k=5, fallback=False))
    cands, summary = lib.predict("BaTiO3")
    structures = [c.structure for c in cands]
    for i in range(len(structures)):
        for j in range(i + 1, len(structures)):
            assert not _matches(structures[i], structures[j])
    assert summary["options_examined"] >= 2  # the second perovskite was built and rejected
    assert sum(c.template_formula in {"CaTiO3", "SrTiO3"} for c in cands) == 1


def test_fallback_splits_site_orbits(tmp_path):
    """No ABO3 template: the two Ti orbits of a 'Ti2O3 perovskite' are split into Ca and Ti."""
    store = _store(tmp_path / "s.h5", [_perovskite("Ti", "Ti"), _rocksalt("Mg", "O")])
    lib = TemplateLibrary.from_store(store, TemplateSettings(top_k=2))
    cands, summary = lib.predict("CaTiO3")
    assert summary["same_stoichiometry_templates"] == 0
    assert cands and cands[0].method == "site_split"
    assert _matches(cands[0].structure, _perovskite("Ca", "Ti"))
    # without the fallback nothing is found, and that is not an error
    lib2 = TemplateLibrary.from_store(store, TemplateSettings(top_k=2, fallback=False))
    assert lib2.predict("CaTiO3")[0] == []


def test_leave_one_out_hides_the_formula(tmp_path):
    store = _store(tmp_path / "s.h5", [_perovskite("Ca", "Ti"), _perovskite("Sr", "Ti")])
    lib = TemplateLibrary.from_store(store, TemplateSettings(top_k=3))
    cands, _ = lib.predict("CaTiO3", exclude_formulas=["CaTiO3"])
    assert cands and all(c.parent != "mp-1" for c in cands)
    assert _matches(cands[0].structure, _perovskite("Ca", "Ti"))  # recovered from SrTiO3


def test_generate_templates_writes_the_store_format(tmp_path):
    store = _store(tmp_path / "s.h5", [_perovskite("Ca", "Ti"), _rocksalt("Mg", "O")])
    out, summ = tmp_path / "c.h5", tmp_path / "c.json"
    summary = generate_templates(
        store, ["SrTiO3", "ZnO"], out_store=out, out_summary=summ, settings={"top_k": 2}
    )
    table = read_entries(out)
    assert set(table["source"]) == {"template"} and set(table["generator"]) == {"template"}
    assert set(table["target_formula"]) == {"SrTiO3", "ZnO"}
    assert table["id"].is_unique and table["parent"].isin(["mp-1", "mp-2"]).all()
    assert (table["template_distance"] >= 0).all()
    assert (table["formula"] == table["target_formula"]).all()
    structures = read_structures(out)
    assert [s.composition.reduced_formula for s in structures] == table["formula"].tolist()
    assert json.loads(summ.read_text())["n_candidates"] == len(table) == summary["n_candidates"]


def test_no_template_gives_an_empty_store_and_a_warning(tmp_path, caplog):
    store = _store(tmp_path / "s.h5", [_rocksalt("Mg", "O")])
    out = tmp_path / "c.h5"
    with caplog.at_level(logging.WARNING, logger="matdisco"):
        generate_templates(store, ["LiFePO4"], out_store=out, out_summary=tmp_path / "c.json")
    assert len(read_entries(out)) == 0
    assert "no candidates" in caplog.text


def _thcr2si2(a: str = "Ba", b: str = "Fe", x: str = "As", c: float = 13.0, z: float = 0.354):
    """ThCr2Si2-type (I4/mmm) AB2X2, the BaFe2As2 structure; stored as the 10-site cell."""
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup(
        "I4/mmm", Lattice.tetragonal(3.96, c), [a, b, x], [[0, 0, 0], [0, 0.5, 0.25], [0, 0, z]]
    )
    return s.get_sorted_structure()


def _big_cell(s, n: int):
    """A supercell of ``s`` with at least ``n`` sites (same composition, more sites)."""
    m = 1
    while len(s) * m**3 < n:
        m += 1
    return s * (m, m, m)


def test_exclusion_compares_compositions_not_strings(tmp_path):
    """The store holds BaFe2As2 as pymatgen's 'Ba(FeAs)2'; excluding 'BaFe2As2' must hide it."""
    store = _store(
        tmp_path / "s.h5",
        [_thcr2si2("Ba", "Fe", "As"), _thcr2si2("Sr", "Co", "As", c=11.6), _rocksalt("Mg", "O")],
    )
    assert read_entries(store)["formula"].iloc[0] == "Ba(FeAs)2"
    lib = TemplateLibrary.from_store(store, TemplateSettings(top_k=3))
    kept, _ = lib.predict("BaFe2As2")
    assert kept[0].parent == "mp-1" and kept[0].template_distance == 0.0  # itself, when allowed
    for spelling in ("BaFe2As2", "Ba(FeAs)2", "As2Fe2Ba", "Ba2Fe4As4"):
        cands, summary = lib.predict("BaFe2As2", exclude_formulas=[spelling])
        assert cands, spelling
        assert all(c.parent != "mp-1" for c in cands), spelling
        assert all(c.template_formula != "Ba(FeAs)2" for c in cands), spelling
        assert cands[0].parent == "mp-2"  # SrCo2As2 with Sr->Ba, Co->Fe
        assert (
            "1 template of the same stoichiometry skipped: excluded formula" in summary["skipped"]
        )
    with pytest.raises(FormulaError, match="Ba\\(FeAs"):
        lib.predict("BaFe2As2", exclude_formulas=["Ba(FeAs"])


def test_max_sites_skips_are_reported(tmp_path, caplog):
    """Templates removed by max_sites are counted and named, also when none is left."""
    big = _big_cell(_thcr2si2("Sr", "Co", "As", c=11.6), 81)
    store = _store(tmp_path / "s.h5", [big, _rocksalt("Mg", "O")])
    lib = TemplateLibrary.from_store(store, TemplateSettings(top_k=2, fallback=False))
    with caplog.at_level(logging.WARNING, logger="matdisco"):
        cands, summary = lib.predict("BaFe2As2")
    assert cands == []
    msg = "1 template of the same stoichiometry skipped: more than max_sites=80 sites"
    assert any(m.startswith(msg) for m in summary["skipped"])
    assert msg in summary["reason"] and msg in caplog.text
    # raising the limit makes the template usable
    roomy = TemplateLibrary.from_store(
        store, TemplateSettings(top_k=2, fallback=False, max_sites=len(big))
    )
    cands, summary = roomy.predict("BaFe2As2")
    assert cands and cands[0].parent == "mp-1" and summary["skipped"] == []


def test_generate_templates_excludes_formulas(tmp_path):
    store = _store(
        tmp_path / "s.h5", [_thcr2si2("Ba", "Fe", "As"), _thcr2si2("Sr", "Co", "As", c=11.6)]
    )
    out, summ = tmp_path / "c.h5", tmp_path / "c.json"
    summary = generate_templates(
        store,
        ["BaFe2As2"],
        out_store=out,
        out_summary=summ,
        settings={"top_k": 2},
        exclude_formulas=["BaFe2As2"],
    )
    table = read_entries(out)
    assert len(table) >= 1 and set(table["parent"]) == {"mp-2"}
    assert summary["exclude_formulas"] == ["Ba(FeAs)2"]
    with pytest.raises(FormulaError, match="Xx2O"):
        generate_templates(
            store, ["Xx2O"], out_store=tmp_path / "d.h5", out_summary=tmp_path / "d.json"
        )
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "d.json").exists()


def test_cli_templates_ranks_and_excludes_self(tmp_path, capsys):
    store = _store(
        tmp_path / "s.h5",
        [_thcr2si2("Ba", "Fe", "As"), _thcr2si2("Sr", "Co", "As", c=11.6), _rocksalt("Mg", "O")],
    )
    assert cli_main(["templates", "BaFe2As2", "--top", "2", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("1 ")]
    assert lines and "mp-1" in lines[0] and "Ba(FeAs)2" in lines[0]
    assert (
        cli_main(["templates", "BaFe2As2", "--top", "2", "--exclude-self", "--store", str(store)])
        == 0
    )
    out = capsys.readouterr().out
    assert "mp-1 " not in out and "excluded formula" in out
    first = next(ln for ln in out.splitlines() if ln.strip().startswith("1 "))
    assert "mp-2" in first and "Sr->Ba" in first and "Co->Fe" in first
    # every template skipped by max_sites: exit 1, and the message says why
    assert (
        cli_main(
            ["templates", "BaFe2As2", "--exclude-self", "--max-sites", "4", "--store", str(store)]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "more than max_sites=4 sites" in captured.err


def test_cli_templates_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/default/data/entries.h5 here
    assert cli_main(["templates", "BaFe2As2"]) == 2
    err = capsys.readouterr().err
    assert "results/default/data/entries.h5" in err and "--store" in err
    assert cli_main(["templates", "Ba(FeAs", "--store", "x.h5"]) == 2
    assert "Ba(FeAs" in capsys.readouterr().err


def test_settings_are_the_typed_section_and_bad_values_fail(tmp_path):
    from matdisco.settings import SettingsError
    from matdisco.settings import TemplateSettings as Typed

    assert TemplateSettings is Typed  # the package re-exports the one typed class
    store = tmp_path / "s.h5"
    _store(store, [_perovskite("Sr", "Ti")])
    typed = TemplateLibrary.from_store(store, Typed(top_k=2))
    mapped = TemplateLibrary.from_store(store, {"top_k": 2})  # a mapping is coerced
    assert mapped.settings == typed.settings
    with pytest.raises(SettingsError, match="volume_rule"):
        TemplateLibrary.from_store(store, {"volume_rule": "bad"})
    with pytest.raises(ValueError, match="templates.volume_rule"):
        TemplateLibrary.from_store(store, Typed(volume_rule="bad"))
