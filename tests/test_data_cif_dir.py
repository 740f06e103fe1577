"""Tests of matdisco.data.cif_dir on tests/data/cifs (see its README.md)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matdisco.data.base import SourceResult
from matdisco.data.cif_dir import REASONS, _ordered_copy, _Reject, load_cif_dir
from matdisco.settings import DataCifDirSettings
from matdisco.store import (
    ENTRY_COLUMNS,
    StructureArrays,
    read_entries,
    read_structures,
    write_store,
)

CIFS = Path(__file__).parent / "data" / "cifs"

EXPECTED_ACCEPTED = {
    "cif-COD-1000026": "COD-1000026.cif",
    "cif-COD-1000054": "COD-1000054.cif",
    "cif-COD-1009031": "COD-1009031.cif",
    "cif-COD-9008098": "COD-9008098.cif",
    "cif-blocks-1": "multi/blocks.cif",
    "cif-blocks-4": "multi/blocks.cif",
}
EXPECTED_REJECTED = {
    ("COD-9000305.cif", "implicit_hydrogens"),
    ("COD-9009261.cif", "formula_mismatch"),
    ("broken_truncated.cif", "parse_error"),
    ("junk.CIF", "parse_error"),
    ("multi/blocks.cif", "partial_occupancy"),
    ("multi/blocks.cif", "parse_error"),
    ("partial/COD-1000049.cif", "partial_occupancy"),
    ("partial/COD-1501508.cif", "partial_occupancy"),
    ("partial/COD-9002107.cif", "partial_occupancy"),
}


@pytest.fixture(scope="module")
def result() -> SourceResult:
    return load_cif_dir({"path": str(CIFS)})


@pytest.fixture(scope="module")
def index() -> pd.DataFrame:
    return pd.read_csv(CIFS / "index.csv", dtype={"database_id": str})


def _category(reason: str) -> str:
    return reason.split(":", 1)[0]


def test_counts_and_provenance(result: SourceResult) -> None:
    prov = result.provenance
    assert prov["n_files"] == 12
    assert prov["n_accepted"] == len(result.entries) == len(result.structures) == 6
    assert prov["n_rejected"] == len(result.rejected) == 9
    assert prov["rejected_by_reason"] == {
        "formula_mismatch": 1,
        "implicit_hydrogens": 1,
        "parse_error": 3,
        "partial_occupancy": 4,
    }
    assert prov["folder"] == str(CIFS.resolve())
    assert prov["source"] == "cif_dir"


def test_accepted_ids_and_files(result: SourceResult) -> None:
    got = dict(zip(result.entries["id"], result.entries["source_file"], strict=True))
    assert got == EXPECTED_ACCEPTED


def test_rejected_reasons(result: SourceResult) -> None:
    assert list(result.rejected.columns) == ["file", "reason"]
    got = {
        (f, _category(r))
        for f, r in zip(result.rejected["file"], result.rejected["reason"], strict=True)
    }
    assert got == EXPECTED_REJECTED
    assert all(_category(r) in REASONS for r in result.rejected["reason"])
    by_file = result.rejected.groupby("file")["reason"].apply(list).to_dict()
    # the reasons say what is wrong
    assert "Ti1" in by_file["partial/COD-1501508.cif"][0]
    assert "H in _chemical_formula_sum" in by_file["COD-9009261.cif"][0]
    multi = " | ".join(by_file["multi/blocks.cif"])
    assert "data_NaCl_split" in multi and "data_bad_coords" in multi


def test_partially_occupied_files_are_never_accepted(
    result: SourceResult, index: pd.DataFrame
) -> None:
    disordered = index.loc[~index["is_ordered"], "file_in_tar"]
    rejected = dict(
        zip(
            result.rejected["file"].map(lambda f: f.split("/")[-1]),
            result.rejected["reason"],
            strict=True,
        )
    )
    for name in disordered:
        assert _category(rejected[name]) == "partial_occupancy", name
    assert not result.entries["has_partial_occupancy"].any()


def test_formulas_match_index(result: SourceResult, index: pd.DataFrame) -> None:
    idx = index.assign(id="cif-" + index["file_in_tar"].str.removesuffix(".cif")).set_index("id")
    cod = result.entries[result.entries["id"].str.startswith("cif-COD-")]
    assert len(cod) == 4
    for row in cod.itertuples():
        assert row.formula == idx.loc[row.id, "reduced_formula"], row.id
        assert row.nsites == idx.loc[row.id, "nsites_conventional_cell"], row.id
        assert bool(idx.loc[row.id, "is_ordered"]) is True
    hand = result.entries.set_index("id")
    assert hand.loc["cif-blocks-1", "formula"] == "CsCl"
    assert hand.loc["cif-blocks-4", "formula"] == "Po"


def test_entry_columns(result: SourceResult) -> None:
    e = result.entries
    assert list(e.columns) == list(ENTRY_COLUMNS)
    assert (e["source"] == "cif_dir").all()
    assert (e["is_experimental"] == 1).all()
    assert (e["duplicate_ids"] == "").all()
    for c in ("energy_per_atom", "formation_energy_per_atom", "e_above_hull", "band_gap"):
        assert e[c].isna().all()
    mgb2 = e.set_index("id").loc["cif-COD-1000026"]
    assert mgb2["composition"] == "Mg1 B2"
    assert mgb2["chemsys"] == "B-Mg"
    assert mgb2["nelements"] == 2
    digest = hashlib.sha256((CIFS / "COD-1000026.cif").read_bytes()).hexdigest()
    assert mgb2["source_hash"] == digest
    res = load_cif_dir({"path": str(CIFS), "experimental": False})
    assert not res.entries["is_experimental"].any()


def test_structures_round_trip(result: SourceResult, tmp_path: Path) -> None:
    arrays = result.structures
    assert isinstance(arrays, StructureArrays)
    assert arrays.site_offset[-1] == result.entries["nsites"].sum()
    structures = arrays.structures()
    for row, s in zip(result.entries.itertuples(), structures, strict=True):
        assert s.is_ordered
        assert s.composition.reduced_formula == row.formula
        assert len(s) == row.nsites
    pdo = structures[list(result.entries["id"]).index("cif-COD-1009031")]
    assert pdo.lattice.abc == pytest.approx((3.03, 3.03, 5.33))
    # ...and through the HDF5 store
    store = tmp_path / "entries.h5"
    write_store(store, result.entries, arrays, data_source="cif_dir", provenance=result.provenance)
    back = read_entries(store)
    assert back["id"].tolist() == result.entries["id"].tolist()
    for a, b in zip(read_structures(store), structures, strict=True):
        assert a.composition == b.composition
        np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-12)
        np.testing.assert_allclose(a.frac_coords, b.frac_coords, atol=1e-12)


def test_occupancy_tolerance(result: SourceResult) -> None:
    # Cs at 0.995 counts as full with the default tolerance 0.01 and is stored fully occupied
    cscl = result.structures.structure(list(result.entries["id"]).index("cif-blocks-1"))
    assert cscl.composition.formula == "Cs1 Cl1"
    strict = load_cif_dir({"path": str(CIFS), "occupancy_tolerance": 0.001})
    assert "cif-blocks-1" not in set(strict.entries["id"])
    assert strict.provenance["rejected_by_reason"]["partial_occupancy"] == 5
    with pytest.raises(ValueError, match="occupancy_tolerance"):
        load_cif_dir({"path": str(CIFS), "occupancy_tolerance": 0.7})


def test_rejections_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="matdisco.data"):
        load_cif_dir({"path": str(CIFS)})
    records = [r for r in caplog.records if r.name == "matdisco.data"]
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warned) == 9
    assert any("junk.CIF" in m and "parse_error" in m for m in warned)
    assert any(
        r.levelno == logging.INFO and "6 entries, 9 rejected" in r.getMessage() for r in records
    )


def test_bad_files_never_crash(tmp_path: Path) -> None:
    (tmp_path / "empty.cif").write_bytes(b"")
    (tmp_path / "binary.cif").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.cif").write_bytes(
        "data_x\n_chemical_name_common 'Fran\xe7ais'\n".encode("latin-1")
    )
    (tmp_path / "dir.cif").mkdir()  # a folder with a .cif name is not a file
    (tmp_path / "only_cell.cif").write_text(
        "data_c\n_cell_length_a 3\n_cell_length_b 3\n_cell_length_c 3\n"
    )
    truncated = (CIFS / "COD-1000026.cif").read_text()[:900]
    (tmp_path / "truncated_early.cif").write_text(truncated)
    (tmp_path / "notes.txt").write_text("not a cif, not picked up")
    res = load_cif_dir({"path": str(tmp_path)})
    assert res.provenance["n_files"] == 5
    assert len(res.entries) == 0 and len(res.structures) == 0
    assert list(res.entries.columns) == list(ENTRY_COLUMNS)
    assert set(res.rejected["file"]) == {
        "empty.cif",
        "binary.cif",
        "latin1.cif",
        "only_cell.cif",
        "truncated_early.cif",
    }
    assert all(_category(r) in {"parse_error", "no_structure"} for r in res.rejected["reason"])


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    res = load_cif_dir({"path": str(tmp_path)})
    assert len(res) == 0 and res.provenance["n_files"] == 0
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_cif_dir({"path": str(tmp_path / "nope")})
    with pytest.raises(FileNotFoundError, match=r"data\.cif_dir\.path: not set"):
        load_cif_dir(DataCifDirSettings())
    typed = load_cif_dir(DataCifDirSettings(path=str(tmp_path), experimental=False))
    assert typed.provenance["experimental"] is False


def test_ids_are_unique(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(CIFS / "COD-1000026.cif", tmp_path / sub / "MgB2 phase.cif")
    res = load_cif_dir({"path": str(tmp_path)})
    assert res.entries["id"].tolist() == ["cif-MgB2_phase", "cif-MgB2_phase-2"]
    assert res.entries["source_file"].tolist() == ["a/MgB2 phase.cif", "b/MgB2 phase.cif"]


def test_disordered_sites_are_detected_not_rounded() -> None:
    from pymatgen.core import Lattice, Structure

    lattice = Lattice.cubic(4.0)
    mixed = Structure(lattice, [{"Mg": 0.5, "Al": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(_Reject, match="mixed-species") as exc:
        _ordered_copy(mixed, 0.01)
    assert exc.value.category == "partial_occupancy"
    vacancy = Structure(lattice, [{"Mg": 0.98}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(_Reject, match="occupancy 0.98"):
        _ordered_copy(vacancy, 0.01)
    nearly = Structure(lattice, [{"Mg": 0.995}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert _ordered_copy(nearly, 0.01).is_ordered
