"""Substitution training set of the GAN (rule build_gan_training_set) and a tiny training on it
that does not collapse."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matdisco.core.composition import charge_balance_possible
from matdisco.core.matching import MatchSettings, dedupe
from matdisco.generate.gan.training_set import build_gan_training_set, target_ions
from matdisco.settings import GANSettings, GANTrainingSetSettings
from matdisco.store import StructureArrays, read_entries, read_structures, write_store

WINDOWS = {"Mn": [2, 4]}
ELEMENTS = ["Mg", "Mn", "O"]


def _prototypes() -> dict[str, Structure]:
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.17), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    ).get_primitive_structure()
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )
    spinel = Structure.from_spacegroup(
        "Fd-3m",
        Lattice.cubic(8.08),
        ["Zn", "Al", "O"],
        [[0.125, 0.125, 0.125], [0.5, 0.5, 0.5], [0.264, 0.264, 0.264]],
    ).get_primitive_structure()
    corundum = Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(4.76, 12.99), ["Al", "O"], [[0, 0, 0.352], [0.306, 0, 0.25]]
    ).get_primitive_structure()
    target_mno = Structure.from_spacegroup(  # of the target system: held out, never a parent
        "Fm-3m", Lattice.cubic(4.45), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    ).get_primitive_structure()
    oxyfluoride = Structure(  # an anion that is not the target's: never a parent
        Lattice.cubic(4.0), ["Ni", "O", "F"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]]
    )
    return {
        "p-rocksalt": rocksalt,
        "p-rutile": rutile,
        "p-spinel": spinel,
        "p-corundum": corundum,
        "p-mno": target_mno,
        "p-nio-f": oxyfluoride,
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ganset")
    protos = _prototypes()
    rows = []
    for sid, s in protos.items():
        c = s.composition
        rows.append(
            {
                "id": sid,
                "formula": c.reduced_formula,
                "composition": c.formula,
                "chemsys": "-".join(sorted(e.symbol for e in c.elements)),
                "nelements": len(c.elements),
                "nsites": len(s),
            }
        )
    store = tmp / "store.h5"
    write_store(
        store,
        pd.DataFrame(rows),
        StructureArrays.from_structures(list(protos.values())),
        data_source="test",
        provenance={},
    )
    summary = build_gan_training_set(
        store,
        elements=ELEMENTS,
        oxidation_states=WINDOWS,
        max_atoms=20,
        settings=GANTrainingSetSettings(),
        out_store=tmp / "ts.h5",
        out_summary=tmp / "ts.json",
    )
    return tmp, summary


def test_target_ions():
    assert target_ions(ELEMENTS, WINDOWS) == (["Mg", "Mn"], ["O"])


def test_substitution_is_charge_balanced_and_recorded(built):
    tmp, summary = built
    e = read_entries(tmp / "ts.h5")
    structures = read_structures(tmp / "ts.h5")
    assert len(e) == summary["unique"] == len(structures) > 5
    assert json.loads((tmp / "ts.json").read_text())["unique"] == len(e)
    for s in structures:
        counts = {el.symbol: int(n) for el, n in s.composition.items()}
        assert set(counts) <= set(ELEMENTS)
        assert charge_balance_possible(counts, WINDOWS)
    # the held-out target-system entry and the oxyfluoride are never parents
    assert set(e["parent"]) <= {"p-rocksalt", "p-rutile", "p-spinel", "p-corundum"}
    assert summary["prototypes"] == 4
    formulas = set(e["formula"])
    # rock salt -> MgO and MnO; rutile -> MnO2 only (MgO2 cannot be balanced); spinel -> MgMn2O4
    assert {"MgO", "MnO", "MnO2", "MgMn2O4", "Mn2O3"} <= formulas
    assert "MgO2" not in formulas
    assert (e["substitution"].str.len() > 0).all()
    spinel = e[(e["parent"] == "p-spinel") & (e["formula"] == "MgMn2O4")]
    assert len(spinel) >= 1
    assert "[2]->Mg" in spinel["substitution"].iloc[0]  # the 2-site orbit of the cell holds Mg
    assert "[4]->Mn" in spinel["substitution"].iloc[0]


def test_no_duplicate_training_structures(built):
    tmp, _ = built
    structures = read_structures(tmp / "ts.h5")
    groups = dedupe(structures, MatchSettings()).groups()
    assert len(groups) == len(structures)


def test_tiny_training_is_not_collapsed(built):
    """A short training on the fixture gives several distinct structures per composition."""
    from dataclasses import replace

    from matdisco.generate.gan import generate_structures, train_gan, training_set_from_store

    tmp, _ = built
    data = training_set_from_store(tmp / "ts.h5", ELEMENTS, max_sites=20, use_supercells=False)
    assert data.n_base == len(read_entries(tmp / "ts.h5"))
    st = GANSettings.from_config(
        {
            "model": {"latent_dim": 8, "hidden": 32, "distance_features": 2, "pack": 2},
            # batches of 4 (2 packs): the fixture's few images give >= 1 generator step an epoch
            "train": {"epochs": 3, "batch_size": 4, "n_critic": 2},
            "augment": {"copies": 2},
            "device": "cpu",
        }
    )
    model, hist, _ = train_gan(data, st, threads=1)
    assert np.isfinite(hist["critic_loss"]).all()
    assert (hist["generator_steps"] > 0).all()  # the generator really trains every epoch
    loose = replace(
        st.validity,
        min_distance_factor=0.0,
        min_distance=0.0,
        min_angle=0.0,
        min_volume_per_atom=0.0,
        max_volume_per_atom=1e9,
    )
    _, _, summary = generate_structures(
        model, ["MgMn2O4", "MnO2"], n_per_composition=12, max_sites=20, validity=loose
    )
    for f in ("MgMn2O4", "MnO2"):
        assert summary["per_formula"][f]["valid"] == 12
        assert summary["per_formula"][f]["unique"] > 1, f


def test_diversity_monitor_leaves_training_unchanged(built):
    """The per-epoch monitor adds validity/uniqueness columns and changes no weight."""
    import torch

    from matdisco.generate.gan import train_gan, training_set_from_store
    from matdisco.generate.gan.metrics import diversity_monitor

    tmp, _ = built
    data = training_set_from_store(tmp / "ts.h5", ELEMENTS, max_sites=20, use_supercells=False)
    st = GANSettings.from_config(
        {
            "model": {"latent_dim": 8, "hidden": 16, "distance_features": 2},
            "train": {"epochs": 2, "batch_size": 8, "n_critic": 2},
            "augment": {"copies": 1},
            "device": "cpu",
        }
    )
    plain, _, _ = train_gan(data, st, threads=1)
    mon = diversity_monitor([tuple(int(x) for x in data.counts[0])], st, n=4)
    watched, hist, _ = train_gan(data, st, threads=1, monitor=mon, monitor_every=1)
    assert hist["monitor_valid_rate"].between(0, 1).all()
    a, b = plain.generator.state_dict(), watched.generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
