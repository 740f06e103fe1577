"""Stand-in candidate pools for tests and benchmarks (until/unless a real pool is at hand).

:func:`fixture_pool` writes a pool in the format of ``candidates/pool.h5`` (entry store plus
the pool columns) from known structures: ``template``-like candidates (a known structure,
one cation swapped, strained and perturbed) and ``gan``-like ones (random cells at an oxide
density with a minimum distance, as an unrelaxed generator output looks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from matdisco.store import StructureArrays, write_store

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["fixture_pool", "random_structure", "template_variant", "mgo", "mno", "spinel_mgmn2o4"]


def mgo() -> Structure:
    """Rock-salt MgO, primitive cell (2 atoms)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    ).get_primitive_structure()


def mno() -> Structure:
    """Rock-salt MnO, primitive cell (2 atoms)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.45), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    ).get_primitive_structure()


def spinel_mgmn2o4() -> Structure:
    """Cubic spinel MgMn2O4, 14-atom primitive cell (pymatgen Fd-3m origin choice 1)."""
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup(
        "Fd-3m",
        Lattice.cubic(8.25),
        ["Mg", "Mn", "O"],
        [[0, 0, 0], [0.625, 0.625, 0.625], [0.3875, 0.3875, 0.3875]],
    )
    return s.get_primitive_structure()


def template_variant(
    structure: Structure, rng: np.random.Generator, *, swap: tuple[str, str] = ("Mg", "Mn")
) -> Structure:
    """A known structure, one ``swap[0]`` site made ``swap[1]`` (or back), strained, perturbed."""
    s = structure.copy()
    a, b = swap
    sites = [i for i, site in enumerate(s) if site.specie.symbol in (a, b)]
    if sites:
        i = int(rng.choice(sites))
        s.replace(i, b if s[i].specie.symbol == a else a)
    s.apply_strain(rng.uniform(-0.03, 0.03, 3).tolist())
    s.perturb(0.1, min_distance=0.02)
    return s


def random_structure(
    formula: str, rng: np.random.Generator, *, volume_per_atom: float = 11.0, dmin: float = 1.7
) -> Structure:
    """A random cell of ``formula`` (cell formula, e.g. 'Mg2Mn2O6'), all distances >= ``dmin``."""
    from pymatgen.core import Composition, Lattice, Structure

    comp = Composition(formula)
    species = [str(el) for el, n in comp.items() for _ in range(int(n))]
    vol = volume_per_atom * len(species)
    for _ in range(200):
        lengths = rng.uniform(0.85, 1.15, 3)
        angles = rng.uniform(75, 105, 3)
        lat = Lattice.from_parameters(*lengths, *angles)
        lat = lat.scale(vol)
        coords: list[np.ndarray] = []
        ok = True
        for _sp in species:
            for _try in range(300):
                f = rng.random(3)
                if not coords:
                    coords.append(f)
                    break
                d = lat.get_all_distances([f], coords)
                if d.min() >= dmin:
                    coords.append(f)
                    break
            else:
                ok = False
                break
        if ok:
            return Structure(lat, species, coords)
    raise RuntimeError(f"could not place {formula} at {volume_per_atom} A^3/atom with d_min {dmin}")


def fixture_pool(
    path: str | Path,
    known: Sequence[tuple[str, Structure]],
    *,
    n_random: int = 0,
    random_formulas: Sequence[str] = ("Mg2Mn2O6", "Mg1Mn2O4", "Mg2Mn1O4", "Mg3Mn3O8"),
    seed: int = 0,
    invalid_ids: Sequence[str] = (),
) -> pd.DataFrame:
    """Write a stand-in ``candidates/pool.h5`` and return its entry table.

    Args:
        path: output store.
        known: (id, structure) of known phases to derive ``template`` candidates from.
        n_random: number of ``gan``-like random candidates, cycling over ``random_formulas``.
        random_formulas: cell formulas of the random candidates.
        seed: random seed.
        invalid_ids: candidate ids to flag ``valid=False``.
    """
    rng = np.random.default_rng(seed)
    rows, structures = [], []
    for k, (pid, s) in enumerate(known):
        c = template_variant(s, rng)
        rows.append(
            {"id": f"tmpl-{k:03d}", "source": "template", "generator": "template", "parent": pid}
        )
        structures.append(c)
    for k in range(n_random):
        f = random_formulas[k % len(random_formulas)]
        c = random_structure(f, rng)
        rows.append({"id": f"gan-{k:03d}", "source": "gan", "generator": "gan", "parent": ""})
        structures.append(c)
    for r, s in zip(rows, structures, strict=True):
        dm = s.distance_matrix[np.triu_indices(len(s), 1)]
        r.update(
            formula=s.composition.reduced_formula,
            composition=s.composition.formula,
            chemsys="-".join(sorted(el.symbol for el in s.composition.elements)),
            nelements=len(s.composition.elements),
            nsites=len(s),
            target_formula=s.composition.reduced_formula,
            novel_composition=True,
            novel_structure=True,
            charge_neutral=True,
            min_distance=float(dm.min()) if len(dm) else float("nan"),
            valid=r["id"] not in set(invalid_ids),
        )
    df = pd.DataFrame(rows)
    write_store(
        path,
        df,
        StructureArrays.from_structures(structures),
        data_source="fixture",
        provenance={"seed": seed},
    )
    return df
