"""The shared structure-matching service (matdisco.core.matching): dedupe and novelty."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matdisco.core.matching import (
    SPACEGROUP_UNKNOWN,
    MatchSettings,
    StructureIndex,
    dedupe,
    prepare,
    spacegroup_number,
)
from matdisco.store import StructureArrays

SETTINGS = {
    "fingerprints": MatchSettings(),
    "spacegroup": MatchSettings(fingerprint_tol=None, symprec=0.1),
    "both": MatchSettings(symprec=0.1),
    "none": MatchSettings(fingerprint_tol=None),
}


def _rocksalt(a: float = 4.21) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _cscl() -> Structure:
    return Structure(Lattice.cubic(2.6), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _wurtzite() -> Structure:
    return Structure.from_spacegroup(
        "P6_3mc",
        Lattice.hexagonal(3.2, 5.2),
        ["Zn", "O"],
        [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.38]],
    )


def _translated(s: Structure, shift=(0.13, 0.27, 0.41)) -> Structure:
    out = s.copy()
    out.translate_sites(list(range(len(out))), shift, frac_coords=True)
    return out


def _broken() -> Structure:
    """MgO with two pairs of nearly overlapping atoms: spglib fails on it (0.004 Angstrom)."""
    return Structure(
        Lattice.cubic(4.0),
        ["Mg", "Mg", "O", "O"],
        [[0, 0, 0], [0, 0, 0.001], [0.5, 0.5, 0.5], [0.5, 0.5, 0.501]],
    )


@pytest.mark.parametrize("name", list(SETTINGS))
def test_supercell_and_translated_copy_are_one_cluster(name):
    base = _rocksalt()
    structures = [base, base * (2, 1, 1), _translated(base), _cscl(), _translated(base * (1, 2, 2))]
    clusters = dedupe(structures, SETTINGS[name])
    assert clusters.rep.tolist() == [0, 0, 0, 3, 0]
    assert clusters.representatives.tolist() == [0, 3]
    assert clusters.groups() == [[0, 1, 2, 4], [3]]


def test_different_structures_and_formulas_are_different_clusters():
    zno = _wurtzite()
    zno_rs = _rocksalt().copy()
    zno_rs.replace_species({"Mg": "Zn"})
    structures = [_rocksalt(), _cscl(), zno, zno_rs, _translated(zno), _rocksalt(4.5)]
    clusters = dedupe(structures, MatchSettings(symprec=0.1))
    # volume scaling: the expanded rock salt matches; ZnO polymorphs stay apart; MgO != ZnO
    assert clusters.rep.tolist() == [0, 1, 2, 3, 2, 0]
    # caller-supplied labels are the grouping key: different labels never match
    labelled = dedupe(structures[:1] * 2, formulas=["a", "b"])
    assert labelled.rep.tolist() == [0, 1]


def test_dedupe_accepts_structure_arrays_and_runs_parallel():
    base, other = _rocksalt(), _cscl()
    structures = []
    for k in range(10):  # ten formula groups of three: enough for the process pool
        el = ["Mg", "Ca", "Sr", "Ba", "Zn", "Cd", "Ni", "Co", "Fe", "Mn"][k]
        for s in (base, other, base * (1, 1, 2)):
            t = s.copy()
            t.replace_species({"Mg": el})
            structures.append(t)
    arrays = StructureArrays.from_structures(structures)
    serial = dedupe(arrays, MatchSettings())
    parallel = dedupe(arrays, MatchSettings(), workers=2)
    assert np.array_equal(serial.rep, parallel.rep)
    assert serial.rep.tolist() == [3 * k + r for k in range(10) for r in (0, 1, 0)]


def test_spglib_failure_fallback_is_deterministic():
    broken = _broken()
    assert spacegroup_number(broken, 0.1) is SPACEGROUP_UNKNOWN
    z = np.array([site.specie.Z for site in broken])
    assert prepare(broken.lattice.matrix, broken.frac_coords, z, symprec=0.1).spacegroup is None
    # the unknown space group skips the space-group pre-filter: the broken cell and its
    # translated copy are compared (and match); a same-size MgO with a known space group is
    # compared too but does not match
    structures = [broken, _rocksalt(), _translated(broken), _cscl() * (2, 1, 1)]
    runs = [dedupe(structures, SETTINGS["spacegroup"]).rep.tolist() for _ in range(2)]
    assert runs[0] == runs[1] == [0, 1, 0, 3]
    index = StructureIndex([_rocksalt(), broken], SETTINGS["spacegroup"], ids=["rs", "broken"])
    assert index.find_match(_translated(broken)) == "broken"


def test_find_match_novelty():
    known = [_rocksalt(), _cscl(), _wurtzite()]
    for settings in SETTINGS.values():
        index = StructureIndex(known, settings, ids=["mp-rs", "mp-cscl", "mp-wz"])
        assert index.find_match(_translated(_rocksalt(4.4)) * (1, 1, 2)) == "mp-rs"
        assert index.find_match(_wurtzite() * (1, 1, 2)) == "mp-wz"
        zno_rs = _rocksalt().copy()
        zno_rs.replace_species({"Mg": "Zn"})
        nias = Structure(
            Lattice.hexagonal(3.0, 5.0),
            ["Mg", "Mg", "O", "O"],
            [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]],
        )
        assert index.find_matches([zno_rs, nias, _cscl()]) == [None, None, "mp-cscl"]
    assert index.n_fits > 0
    # positions are the default ids; the first match in reference order wins
    dup = StructureIndex([_cscl(), _rocksalt(), _rocksalt() * (2, 1, 1)])
    assert dup.find_match(_rocksalt()) == 1


def test_settings_from_config():
    s = MatchSettings.from_config({"ltol": 0.3, "fingerprint_tol": None, "unknown": 1})
    assert s == MatchSettings(ltol=0.3)
    assert s.as_dict()["symprec"] is None
