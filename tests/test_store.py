"""The entry store: exact round trips, atomic writes, schema checks."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from matdisco.store import (
    ENTRY_COLUMNS,
    StructureArrays,
    read_attrs,
    read_entries,
    read_labels,
    read_structures,
    write_store,
)


@pytest.fixture
def structures(mgo):
    spinel = Structure.from_spacegroup(
        "Fd-3m",
        Lattice.cubic(8.25),
        ["Mg", "Mn", "O"],
        [[0, 0, 0], [0.625, 0.625, 0.625], [0.3875, 0.3875, 0.3875]],
    ).get_primitive_structure()
    tri = Structure(
        Lattice.from_parameters(3.1, 4.2, 5.3, 80, 95, 110),
        ["Li", "Fe", "O", "O"],
        np.random.default_rng(0).random((4, 3)),
    )
    return [mgo, spinel, tri]


def _entries(structures):
    return pd.DataFrame(
        {
            "id": ["a-1", "b-2", "c-3"],
            "source": "test",
            "formula": [s.composition.reduced_formula for s in structures],
            "composition": [s.composition.formula for s in structures],
            "chemsys": [s.composition.chemical_system for s in structures],
            "nsites": [len(s) for s in structures],
            "formation_energy_per_atom": [-3.0, np.nan, -1.5],
            "is_experimental": [1, 0, -1],
            "source_file": ["x/é.cif", "", "y.cif"],
        }
    )


def test_round_trip(tmp_path, structures):
    path = tmp_path / "s.h5"
    labels = pd.DataFrame(
        {"formula": ["MgO", "Fe2O3"], "e_above_hull": [0.0, 0.012], "source": "t"}
    )
    write_store(
        path,
        _entries(structures),
        StructureArrays.from_structures(structures),
        labels,
        data_source="test",
        provenance={"k": [1, 2]},
    )
    e = read_entries(path)
    assert list(e.columns) == list(ENTRY_COLUMNS)
    assert e["id"].tolist() == ["a-1", "b-2", "c-3"]
    assert e["source_file"].tolist() == ["x/é.cif", "", "y.cif"]
    assert (
        np.isnan(e.loc[1, "formation_energy_per_atom"])
        and e.loc[2, "formation_energy_per_atom"] == -1.5
    )
    assert e["nelements"].tolist() == [-1, -1, -1]  # missing int columns get the "unknown" value
    assert np.isnan(e["band_gap"]).all()
    back = read_structures(path)
    m = StructureMatcher()
    for a, b in zip(structures, back, strict=True):
        assert np.allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-7)
        assert np.allclose(a.frac_coords, b.frac_coords, atol=1e-7)
        assert [s.specie for s in a] == [s.specie for s in b]
        assert m.fit(a, b)
    # by id, in the order asked
    sel = read_structures(path, ["c-3", "a-1"])
    assert sel[0].composition.reduced_formula == structures[2].composition.reduced_formula
    assert read_labels(path)["e_above_hull"].tolist() == [0.0, 0.012]
    assert read_attrs(path)["provenance"] == {"k": [1, 2]}
    with pytest.raises(KeyError):
        read_structures(path, ["nope"])


def test_take_and_concat(structures):
    arr = StructureArrays.from_structures(structures)
    sub = arr.take([2, 0])
    assert len(sub) == 2 and sub.structure(0) == structures[2] and sub.structure(1) == structures[0]
    both = StructureArrays.concat([arr.take([1]), arr.take([0, 2])])
    assert [len(s) for s in both.structures()] == [
        len(structures[1]),
        len(structures[0]),
        len(structures[2]),
    ]
    assert both.site_offset[-1] == sum(len(s) for s in structures)


def test_disordered_structure_rejected():
    s = Structure(Lattice.cubic(4), [{"Mg": 0.5, "Ca": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered"):
        StructureArrays.from_structures([s])


def test_duplicate_ids_and_length_mismatch(tmp_path, structures):
    arr = StructureArrays.from_structures(structures)
    e = _entries(structures)
    e.loc[1, "id"] = "a-1"
    with pytest.raises(ValueError, match="duplicate entry ids"):
        write_store(tmp_path / "x.h5", e, arr, data_source="t", provenance={})
    with pytest.raises(ValueError, match="entries but"):
        write_store(
            tmp_path / "x.h5", _entries(structures), arr.take([0]), data_source="t", provenance={}
        )
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_failed_write_leaves_no_partial_file(tmp_path, structures, monkeypatch):
    path = tmp_path / "s.h5"
    write_store(
        path,
        _entries(structures),
        StructureArrays.from_structures(structures),
        data_source="t",
        provenance={},
    )
    before = path.read_bytes()
    bad = pd.DataFrame({"formula": ["MgO"], "e_above_hull": ["not a number"], "source": ["t"]})
    with pytest.raises(ValueError):
        write_store(
            path,
            _entries(structures),
            StructureArrays.from_structures(structures),
            bad,
            data_source="t",
            provenance={},
        )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_schema_version_checked(tmp_path, structures):
    path = tmp_path / "s.h5"
    write_store(
        path,
        _entries(structures),
        StructureArrays.from_structures(structures),
        data_source="t",
        provenance={},
    )
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = 99
    with pytest.raises(ValueError, match="schema version 99"):
        read_entries(path)


def test_extra_columns_are_kept(tmp_path, structures):
    e = _entries(structures)
    e["template_id"] = ["mp-1", "", "mp-3"]
    e["distance"] = [0.1, np.nan, 0.3]
    e["rank"] = [1, 2, 3]
    e["novel"] = [True, False, True]
    write_store(
        tmp_path / "x.h5",
        e,
        StructureArrays.from_structures(structures),
        data_source="gan",
        provenance={},
    )
    back = read_entries(tmp_path / "x.h5")
    assert back["template_id"].tolist() == ["mp-1", "", "mp-3"]
    assert back["rank"].tolist() == [1, 2, 3] and back["novel"].tolist() == [True, False, True]
    assert np.isnan(back["distance"][1]) and back["distance"][2] == 0.3
    assert list(back.columns[: len(ENTRY_COLUMNS)]) == list(ENTRY_COLUMNS)
