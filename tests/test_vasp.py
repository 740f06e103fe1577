"""VASP backend: offline MPRelaxSet inputs, parsing real vasprun.xml files, MP2020, fake runs."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matdisco.relax import RelaxSettings, get_backend
from matdisco.relax.testing import spinel_mgmn2o4
from matdisco.relax.vasp import parse_vasprun, write_inputs

DATA = Path(__file__).parent / "data" / "vasp"
MG = DATA / "qmpy_mg_relax"
NBCO = DATA / "chgnet_nb16c8o8_relax"


def test_parse_qmpy_mg_relaxation():
    """hcp Mg, 3 ionic steps, GGA: no MP2020 correction."""
    r = parse_vasprun(MG / "vasprun.xml.gz")
    assert r.final_structure.composition.reduced_formula == "Mg" and len(r.final_structure) == 2
    assert r.energy_raw == pytest.approx(-3.0821269, abs=1e-6)
    assert r.correction == 0.0 and r.energy_corrected == r.energy_raw
    assert r.n_ionic_steps == 3 and r.converged_ionic and r.converged_electronic
    assert r.run_type == "GGA" and r.forces.shape == (2, 3)
    assert r.stress_kbar[2, 2] == pytest.approx(0.19014189)
    # the final energy in OSZICAR agrees with vasprun
    last = [x for x in (MG / "OSZICAR").read_text().splitlines() if "F=" in x][-1]
    assert float(last.split("E0=")[1].split()[0]) == pytest.approx(r.energy_raw, abs=1e-4)


def test_parse_chgnet_oxide_relaxation_gets_mp2020_oxide_correction():
    """Nb16C8O8 (32 atoms, 49 ionic steps): MP2020 adds the oxide correction, -0.687 eV per O."""
    r = parse_vasprun(NBCO / "vasprun.xml.gz")
    assert r.final_structure.composition.formula == "Nb16 C8 O8"
    assert r.n_ionic_steps == 49 and r.converged_ionic
    assert r.energy_raw == pytest.approx(-253.79850545, abs=1e-6)
    assert r.correction == pytest.approx(-0.687 * 8, abs=1e-3)
    assert r.energy_corrected == pytest.approx(r.energy_raw + r.correction)
    assert r.entry is not None and any("oxide" in adj.name for adj in r.entry.energy_adjustments)


def test_write_mprelaxset_inputs_offline(tmp_path):
    """MgMn2O4: GGA+U for Mn, POTCAR.spec without POTCAR files, our NSW/EDIFFG."""
    from pymatgen.io.vasp import Incar

    write_inputs(spinel_mgmn2o4(), tmp_path, nsw=150, ediffg=-0.1)
    assert {"INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "POTCAR").exists()
    incar = Incar.from_file(tmp_path / "INCAR")
    assert incar["LDAU"] is True and list(incar["LDAUU"]) == [0, 3.9, 0]
    assert (
        incar["ENCUT"] == 520
        and incar["ISPIN"] == 2
        and incar["NSW"] == 150
        and incar["EDIFFG"] == -0.1
    )
    assert (tmp_path / "POTCAR.spec").read_text().split() == ["Mg_pv", "Mn_pv", "O"]


_FAKE_VASP = textwrap.dedent(
    """
    # fake VASP: checks the inputs are there, then copies a real vasprun.xml.gz into the run folder
    import shutil, sys
    from pathlib import Path
    for name in ("INCAR", "KPOINTS", "POSCAR"):
        assert Path(name).exists(), name
    if sys.argv[2] == "fail":
        sys.exit(3)
    shutil.copy(Path(sys.argv[1]) / "vasprun.xml.gz", "vasprun.xml.gz")
    """
)


def _backend(tmp_path, mode="ok"):
    script = tmp_path / "fake_vasp.py"
    script.write_text(_FAKE_VASP)
    return get_backend(
        "vasp",
        {"command": f"{sys.executable} {script} {MG} {mode}", "workdir": str(tmp_path / "runs")},
    )


def test_vasp_backend_fake_run(tmp_path):
    from pymatgen.core import Lattice, Structure

    be = _backend(tmp_path)
    assert be.energy_scale == "vasp-pbe/mp2020" and be.external_relax
    start = Structure(
        Lattice.hexagonal(3.2, 5.2), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]
    )
    res = be.relax("mg-1", start, RelaxSettings(rattle=0.01))
    assert res.status == "ok", res.reason
    assert res.energy_per_atom == pytest.approx(-3.0821269 / 2) and res.correction_per_atom == 0.0
    assert res.steps == 3 and res.converged and res.energy_scale == "vasp-pbe/mp2020"
    assert len(res.forces) == 2 and len(res.stress_gpa) == 6
    assert (tmp_path / "runs" / "mg-1" / "POTCAR.spec").exists()
    # a finished folder is parsed again without rerunning VASP
    (tmp_path / "fake_vasp.py").write_text("import sys; sys.exit(9)\n")
    assert be.relax("mg-1", start, RelaxSettings(rattle=0.01)).status == "ok"


def test_vasp_backend_failures_are_recorded(tmp_path):
    from pymatgen.core import Lattice, Structure

    start = Structure(Lattice.cubic(3.0), ["Mg"], [[0, 0, 0]])
    res = _backend(tmp_path, "fail").relax("bad", start, RelaxSettings())
    assert res.status == "failed" and "exited with 3" in res.reason
    res = get_backend("vasp", {"workdir": str(tmp_path / "r2")}).relax(
        "nocmd", start, RelaxSettings()
    )
    assert res.status == "failed" and "relax.vasp.command is not set" in res.reason


def test_vasp_shard_through_the_common_interface(tmp_path):
    """run_shard with backend vasp (external relaxation, one structure at a time)."""
    from pymatgen.core import Lattice, Structure

    from matdisco.relax.shards import read_records, run_shard
    from matdisco.store import StructureArrays, write_store

    s = Structure(
        Lattice.hexagonal(3.2, 5.2), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]
    )
    write_store(
        tmp_path / "shard.h5",
        pd.DataFrame({"id": ["a", "b"], "generator": ["gan", "gan"]}),
        StructureArrays.from_structures([s, s]),
        data_source="t",
        provenance={},
    )
    script = tmp_path / "fake_vasp.py"
    script.write_text(_FAKE_VASP)
    meta = run_shard(
        tmp_path / "shard.h5",
        tmp_path / "out.jsonl",
        tmp_path / "p.jsonl",
        backend="vasp",
        backend_options={
            "command": f"{sys.executable} {script} {MG} ok",
            "workdir": str(tmp_path / "runs"),
        },
        relax={"steps": 50},
    )
    _, results = read_records(tmp_path / "out.jsonl")
    assert meta["counts"] == {"ok": 2} and [r.id for r in results] == ["a", "b"]


def test_vasp_reference_from_store_formation_energies(tmp_path):
    """VASP hull: E = E_f + sum x mu with MP elemental references (JSON of ComputedEntry dicts)."""
    from pymatgen.core import Lattice, Structure

    from matdisco.relax.reference import elemental_references, select_reference, vasp_reference
    from matdisco.relax.testing import mgo
    from matdisco.store import StructureArrays, write_store

    s = [
        Structure(Lattice.cubic(3.2), ["Mg"], [[0, 0, 0]]),
        Structure(Lattice.cubic(2.8), ["Mn"], [[0, 0, 0]]),
        Structure(Lattice.cubic(5), ["O", "O"], [[0, 0, 0], [0.24, 0, 0]]),
        mgo(),
    ]
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "formula": ["Mg", "Mn", "O2", "MgO"],
            "composition": [x.composition.formula for x in s],
            "chemsys": ["Mg", "Mn", "O", "Mg-O"],
            "nelements": [1, 1, 1, 2],
            "nsites": [1, 1, 2, 2],
            "formation_energy_per_atom": [0.0, 0.0, 0.0, -3.0],
            "e_above_hull": [np.nan, np.nan, np.nan, 0.0],
        }
    )
    write_store(
        tmp_path / "s.h5", df, StructureArrays.from_structures(s), data_source="t", provenance={}
    )
    refs = DATA / "mp_elemental_refs_MgMnO.json"
    mu = elemental_references(tmp_path / "s.h5", ["Mg", "Mn", "O"], refs)
    raw = json.loads(refs.read_text())
    assert mu["Mn"] == pytest.approx(raw["Mn"]["energy"] / 29) and mu["O"] == pytest.approx(
        raw["O"]["energy"] / 8
    )
    sel = select_reference(tmp_path / "s.h5", ["Mg", "Mn", "O"], max_e_above_hull=None)
    ref = vasp_reference(tmp_path / "s.h5", sel, ["Mg", "Mn", "O"], refs)
    e_mgo = ref.set_index("id").loc["d", "energy_per_atom"]
    assert e_mgo == pytest.approx(-3.0 + 0.5 * (mu["Mg"] + mu["O"]))
    assert set(ref["energy_scale"]) == {"vasp-pbe/mp2020"}
    with pytest.raises(ValueError, match="elemental_references"):
        elemental_references(
            tmp_path / "s.h5", ["Mg", "Mn", "O"], None
        )  # bundled-like store, no file
