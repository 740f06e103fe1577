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
