"""SevenNet backend: the three checkpoints from the sevenn wheel, offline, on the MP2020 scale."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from matdisco.relax import RelaxSettings, get_backend, relax_batch

pytest.importorskip("sevenn", reason="sevenn==0.13.0 is a project dependency (make install)")

MODELS = ["7net-0", "7net-l3i5", "7net-mf-0"]


@pytest.fixture(scope="module")
def mgo_mp(root):
    """MP's MgO (mp-1265, 2 sites) from the bundled store and its MP total energy per atom.

    MP2020-scale total energy = stored formation energy + MP's elemental references (the
    bundled 2023 MP elemental entries, energy + correction per atom).
    """
    from matdisco.store import read_entries, read_structure_arrays

    store = root / "resources/bundled/mp2018_structures.h5"
    df = read_entries(store)
    row = int(np.flatnonzero(df["id"].to_numpy() == "mp-1265")[0])
    s = read_structure_arrays(store, [row]).structures()[0]
    with gzip.open(
        root / "resources/bundled/mp_elemental_reference_entries_2023-02-07.json.gz"
    ) as fh:
        refs = json.load(fh)
    mu = {
        el: (refs[el]["energy"] + refs[el].get("correction", 0.0))
        / sum(refs[el]["composition"].values())
        for el in ("Mg", "O")
    }
    ef = float(df["formation_energy_per_atom"].iloc[row])
    return s, ef + 0.5 * mu["Mg"] + 0.5 * mu["O"]


@pytest.mark.parametrize("model", MODELS)
def test_sevennet_relaxes_mgo_on_the_mp2020_scale(model, mgo_mp):
    """Each shipped model relaxes MgO offline; with MP2020 corrections it matches MP
    (0.05 eV/atom)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    s, e_mp = mgo_mp
    be = get_backend("sevennet", {"model": model}, threads=1)
    tag = model if model != "7net-mf-0" else "7net-mf-0[PBE]"
    assert be.energy_scale == f"sevennet-{tag}/mp2020"
    (r,) = relax_batch([("mgo", AseAtomsAdaptor.get_atoms(s))], be, RelaxSettings(steps=50))
    assert r.status == "ok" and r.converged
    assert r.energy_scale == be.energy_scale
    # the correction is recorded per structure: MP2020 oxide correction, one O in two atoms
    assert r.correction_per_atom == pytest.approx(-0.687 / 2, abs=0.002)
    assert r.energy_per_atom == pytest.approx(r.energy_per_atom_raw + r.correction_per_atom)
    assert abs(r.energy_per_atom - e_mp) < 0.05, (model, r.energy_per_atom, e_mp)
    # raw (uncorrected) energies are far off the MP scale: the correction matters
    assert abs(r.energy_per_atom_raw - e_mp) > 0.3


def test_sevennet_batched_predict_matches_calculator():
    """One batched forward pass gives the SevenNetCalculator's energies, forces and stresses."""
    from ase.build import bulk

    be = get_backend("sevennet", {"model": "7net-0", "batch_size": 4}, threads=1)
    a = bulk("MgO", "rocksalt", a=4.25)
    b = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    b.symbols[0] = "Mn"
    b.rattle(0.05, seed=1)
    preds = be.predict([a, b, a.copy()])
    for atoms, p in zip([a, b, a], preds, strict=True):
        x = atoms.copy()
        x.calc = be.calculator(x)
        assert p["energy"] == pytest.approx(x.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(p["forces"], x.get_forces(), atol=1e-5)
        np.testing.assert_allclose(p["stress"], x.get_stress(), atol=1e-6)
    assert np.abs(preds[1]["stress"][3:]).max() > 1e-3  # shear components really compared


def test_sevennet_options_are_checked():
    with pytest.raises(ValueError, match="relax.sevennet.model 'nonsense'"):
        get_backend("sevennet", {"model": "nonsense"})
    with pytest.raises(ValueError, match="not multi-fidelity"):
        get_backend("sevennet", {"model": "7net-0", "modal": "PBE"})
    with pytest.raises(ValueError, match="relax.sevennet.modal 'HSE'"):
        get_backend("sevennet", {"model": "7net-mf-0", "modal": "HSE"})
    r2 = get_backend("sevennet", {"model": "7net-mf-0", "modal": "R2SCAN"})
    assert r2.energy_scale == "sevennet-7net-mf-0[R2SCAN]/raw"
    from matdisco.relax.testing import mgo

    assert r2.correction(mgo(), -12.0) == 0.0  # no MP2020 on r2SCAN energies


def test_reference_on_another_scale_is_refused(tmp_path):
    """A hull recomputed with CHGNet (or another SevenNet model) never meets SevenNet candidates."""
    from matdisco.relax.reference import REFERENCE_COLUMNS, hull_screen

    ref = pd.DataFrame(
        [
            {
                "id": "a",
                "formula": "Mg",
                "composition": "Mg1",
                "nsites": 1,
                "energy_per_atom": -1.6,
                "energy_scale": "sevennet-7net-0/mp2020",
                "status": "ok",
            },
            {
                "id": "b",
                "formula": "O2",
                "composition": "O2",
                "nsites": 2,
                "energy_per_atom": -4.9,
                "energy_scale": "sevennet-7net-0/mp2020",
                "status": "ok",
            },
        ]
    )
    path = tmp_path / "reference.csv"
    ref.reindex(columns=list(REFERENCE_COLUMNS)).to_csv(path, index=False)
    hull_screen(path, "sevennet-7net-0/mp2020", {})  # same model and scale: accepted
    for other in ("sevennet-7net-l3i5/mp2020", "chgnet-0.3.0/mp2020"):
        with pytest.raises(ValueError, match="refusing to mix"):
            hull_screen(path, other, {})
