"""Template-based structure prediction on tiny inline stores."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from matdisco.generate.templates import (
    TemplateLibrary,
    TemplateSettings,
    elmd_mod_petti,
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

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


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
    write_store(path, table, StructureArrays.from_structures(structures), data_source="test", provenance={})
    return path


def _matches(a, b) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StructureMatcher().fit(a, b)


@pytest.mark.parametrize(("a", "b"), [("MgMn2O4", "ZnAl2O4"), ("CaTiO3", "SrTiO3"), ("Li2O", "MgAl2O4")])
def test_elmd_equals_the_elmd_package(a, b):
    from ElMD import ElMD

    assert elmd_mod_petti(a, b) == pytest.approx(ElMD(a, metric="mod_petti").elmd(b), abs=1e-9)


def test_substitution_maps_cations_by_role_and_rescales(tmp_path):
    store = _store(tmp_path / "s.h5", [_perovskite("Ca", "Ti"), _rocksalt("Mg", "O"), _rocksalt("Na", "Cl", 5.6)])
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
    assert best.structure.volume == pytest.approx(_perovskite("Ca", "Ti").volume * best.volume_scale, rel=1e-3)
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
        tmp_path / "s.h5", [_perovskite("Ca", "Ti", lattice=3.85), _perovskite("Sr", "Ti", lattice=3.95), _rocksalt("Mg", "O")]
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
    summary = generate_templates(store, ["SrTiO3", "ZnO"], out_store=out, out_summary=summ, settings={"top_k": 2})
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
