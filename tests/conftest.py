"""Shared fixtures: repository paths and tiny inline structures."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def snakemake_bin() -> str:
    """The snakemake executable of the running interpreter's environment."""
    exe = Path(sys.executable).parent / "snakemake"
    if exe.exists():
        return str(exe)
    found = shutil.which("snakemake")
    if not found:
        pytest.fail("snakemake is not installed in this environment (make test installs it)")
    return found


@pytest.fixture
def mgo():
    """Rock-salt MgO, conventional cell (8 atoms)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _cu_au_structures():
    """Cu, Au (fcc) and Cu3Au (L1_2) as pymatgen structures."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    l12 = bulk("Cu", "fcc", a=3.75, cubic=True)
    l12.symbols[0] = "Au"
    return [
        AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6)),
        AseAtomsAdaptor.get_structure(bulk("Au", "fcc", a=4.08)),
        AseAtomsAdaptor.get_structure(l12),
    ]


@pytest.fixture
def cu_au_store():
    """Builder of a Cu-Au entry store (k1 Cu, k2 Au, k3 Cu3Au with E_f -0.05 eV/atom):
    ``cu_au_store(path, labels=None) -> path`` (``labels``: an optional label table)."""

    def build(path: Path, labels=None) -> Path:
        import numpy as np
        import pandas as pd

        from matdisco.store import StructureArrays, write_store

        s = _cu_au_structures()
        df = pd.DataFrame(
            {
                "id": ["k1", "k2", "k3"],
                "source": "fixture",
                "formula": [x.composition.reduced_formula for x in s],
                "composition": [x.composition.formula for x in s],
                "chemsys": ["Cu", "Au", "Au-Cu"],
                "nelements": [1, 1, 2],
                "nsites": [len(x) for x in s],
                "formation_energy_per_atom": [0.0, 0.0, -0.05],
                "e_above_hull": [np.nan, np.nan, 0.0],
            }
        )
        write_store(
            path,
            df,
            StructureArrays.from_structures(s),
            labels,
            data_source="fixture",
            provenance={},
        )
        return path

    return build
