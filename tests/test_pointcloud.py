"""Point-cloud representation: exact round trip, augmentation, validity checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from matdisco.generate.pointcloud import (
    PointCloudSpec,
    ValiditySettings,
    augment,
    check_validity,
    counts_of,
    decode_frac,
    encode_frac,
    min_distances,
    permute_axes,
    sort_slots,
    supercells,
    translate,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "resources/bundled/mp2018_structures.h5"
KIM = ROOT.parent / "shared/data/raw/ccgan_mgmno/unique_sc_mgmno.npy"
ELEMENTS = ("Mg", "Mn", "O")

# strict matcher: no volume scaling, no supercell search: a decoded structure is the same crystal
STRICT = StructureMatcher(ltol=1e-3, stol=1e-3, angle_tol=0.01, primitive_cell=False, scale=False)


@pytest.fixture(scope="module")
def spinel() -> Structure:
    """MgMn2O4 spinel, 14-atom primitive cell (triclinic setting)."""
    s = Structure.from_spacegroup(
        "Fd-3m",
        Lattice.cubic(8.25),
        ["Mg", "Mn", "O"],
        [[0, 0, 0], [0.625, 0.625, 0.625], [0.3875, 0.3875, 0.3875]],
    )
    return s.get_primitive_structure()


@pytest.fixture(scope="module")
def store_structures() -> tuple[list[str], list[Structure]]:
    """Every Mg-Mn-O (sub)system entry of the bundled MP set (the default training pool)."""
    from matdisco.store import read_entries, read_structure_arrays

    if not BUNDLED.exists():
        pytest.skip(f"{BUNDLED} missing")
    e = read_entries(BUNDLED, ["id", "chemsys"])
    sel = np.flatnonzero(e["chemsys"].map(lambda c: set(c.split("-")) <= set(ELEMENTS)).to_numpy())
    return e["id"].iloc[sel].tolist(), read_structure_arrays(BUNDLED, sel).structures()


def test_coordinate_mapping_padding_distinct():
    assert encode_frac(np.zeros(3)) == pytest.approx(np.full(3, 1 / 6))
    assert encode_frac(np.array([0.999999]))[0] < 5 / 6
    assert encode_frac(np.array([-0.25, 1.0, 1.25])) == pytest.approx(
        [(0.75 * 10 + 2.5) / 15, 1 / 6, (2.5 + 2.5) / 15]
    )
    x = np.random.default_rng(0).random((50, 3))
    assert np.abs(decode_frac(encode_frac(x)) - x).max() < 1e-14
    # an atom at the origin is not padding, for either decoding rule
    spec = PointCloudSpec(("Mg", "O"), (2, 2))
    s = Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    img = spec.encode(s)
    assert img[2].tolist() == pytest.approx([1 / 6] * 3)
    assert (img[3] == 0).all() and (img[5] == 0).all()
    assert len(spec.decode(img)) == 2 and len(spec.decode(img, (1, 1))) == 2


def test_round_trip_exact(mgo, spinel):
    for s in (mgo, spinel, spinel.get_reduced_structure()):
        spec = PointCloudSpec(ELEMENTS, (4, 4, 8))
        img = spec.encode(s)
        back = spec.decode(img)
        assert STRICT.fit(s, back)
        assert np.allclose(back.lattice.abc, s.lattice.abc, atol=1e-10)
        assert np.allclose(back.lattice.angles, s.lattice.angles, atol=1e-10)
        assert np.allclose(spec.encode(back), img, atol=1e-12)  # idempotent
        assert counts_of(back, ELEMENTS) == counts_of(s, ELEMENTS)


def test_encode_rejects_misfits(spinel):
    with pytest.raises(ValueError, match="does not fit"):
        PointCloudSpec(ELEMENTS, (1, 1, 4)).encode(spinel)
    with pytest.raises(ValueError, match="does not fit"):
        PointCloudSpec(("Mg", "O"), (8, 8)).encode(spinel)


def test_every_store_structure_round_trips(store_structures):
    """All Mg-Mn-O (sub)system entries, as stored and Niggli-reduced, decode to a match."""
    ids, structures = store_structures
    assert len(structures) >= 20
    counts = np.array([counts_of(s, ELEMENTS) for s in structures])
    spec = PointCloudSpec(ELEMENTS, tuple(int(c) for c in counts.max(0)))
    for sid, s in zip(ids, structures, strict=True):
        for cell in (s, s.get_reduced_structure()):
            back = spec.decode(spec.encode(cell))
            assert STRICT.fit(cell, back), sid


def test_training_set_images_decode_to_their_sources(store_structures):
    """The default training set (<= 20 sites, supercells): each image matches its source cell."""
    from matdisco.generate.gan import build_training_set

    ids, structures = store_structures
    ts = build_training_set(structures, ids, ELEMENTS, max_sites=20)
    assert ts.n_base >= 20 and len(ts.images) > ts.n_base
    by_id = dict(zip(ids, structures, strict=True))
    masks = ts.masks()
    assert (
        (ts.images[:, 2:].sum(-1) > 0) == (masks[:, 2:] > 0)
    ).all()  # padding exactly where empty
    for sid, img, cnt in zip(ts.ids, ts.images, ts.counts, strict=True):
        base, _, mult = sid.partition("@")
        src = by_id[base]
        if mult:
            src = src.get_reduced_structure().make_supercell(
                [int(x) for x in mult.split("x")], in_place=False
            )
        back = ts.spec.decode(img, tuple(cnt))
        assert STRICT.fit(src, back), sid
        same = ts.spec.decode(img)  # the threshold rule reads the same atoms
        assert same.species == back.species and np.array_equal(
            same.frac_coords, back.frac_coords
        ), sid


def test_kim_arrays_decode_and_reencode():
    """The CCGAN Mg-Mn-O arrays (Kim et al. 2020) use this exact layout with slots 8/8/12."""
    if not KIM.exists():
        pytest.skip(f"{KIM} not present (reproduction data of Kim et al. 2020)")
    arr = np.load(KIM)[[*range(40), 1129, 2040, 2052, 2499, 2500]]  # incl. atoms with equal x
    spec = PointCloudSpec(ELEMENTS, (8, 8, 12))
    assert arr.shape[1:] == (spec.n_rows, 3)
    for img in arr:
        s = spec.decode(img)
        again = spec.encode(s)
        mask = spec.mask(counts_of(s, ELEMENTS))
        assert np.allclose(
            sort_slots(again.round(9)[None], mask[None], spec)[0],
            sort_slots(img.round(9)[None], mask[None], spec)[0],
            atol=1e-9,
        )
        D, R = min_distances(s)
        assert (D / R).min() > 0.5


def test_supercells_fit_slots(mgo):
    prim = mgo.get_primitive_structure()  # Mg1 O1
    spec = PointCloudSpec(("Mg", "O"), (4, 4))
    sc = supercells(prim, spec, max_sites=8)
    mults = [n for n, _ in sc]
    assert (2, 1, 1) in mults and (2, 2, 1) in mults and (1, 1, 1) not in mults
    assert all(n[0] * n[1] * n[2] <= 4 for n in mults)
    assert all(len(s) == 2 * n[0] * n[1] * n[2] for n, s in sc)
    assert supercells(prim, spec, max_sites=2) == []


def test_augmentations_preserve_the_crystal(spinel):
    # a triclinic distortion, so that a, b, c and alpha, beta, gamma all differ
    tri = Structure(
        Lattice.from_parameters(5.0, 6.0, 7.5, 55.0, 70.0, 85.0), spinel.species, spinel.frac_coords
    )
    spec = PointCloudSpec(ELEMENTS, (3, 5, 9))
    img = spec.encode(tri)
    mask = spec.mask(counts_of(tri, ELEMENTS))
    imgs, masks = np.repeat(img[None], 6, 0), np.repeat(mask[None], 6, 0)
    rng = np.random.default_rng(0)
    moved = translate(imgs, masks, rng.random((6, 3)))
    rolled = permute_axes(imgs, np.array([0, 1, 2, 0, 1, 2]))
    both = augment(imgs, masks, spec, rng)
    tight = StructureMatcher(ltol=0.01, stol=0.01, angle_tol=0.5, primitive_cell=False, scale=False)
    for batch in (moved, rolled, both, sort_slots(imgs, masks, spec)):
        assert (batch[:, 2:][masks[:, 2:] == 0] == 0).all()  # padding untouched
        assert (
            (batch[:, 2:][masks[:, 2:] > 0] >= 1 / 6 - 1e-12)
            & (batch[:, 2:][masks[:, 2:] > 0] < 5 / 6)
        ).all()
        for x in batch:
            assert tight.fit(tri, spec.decode(x))
    assert not np.allclose(moved[0], img)
    assert np.allclose(rolled[1][0], np.roll(img[0], -1))  # (a, b, c) -> (b, c, a)


def test_validity_checks(mgo):
    spec = PointCloudSpec(("Mg", "O"), (5, 5))
    st = ValiditySettings()
    ok = check_validity(spec.encode(mgo), spec, (4, 4), st)
    assert (
        ok["valid"] and ok["reason"] == "" and ok["min_distance"] == pytest.approx(2.105, abs=1e-3)
    )
    # two atoms 0.3 Angstrom apart
    close = mgo.copy()
    close.translate_sites([0], [0.3 / 4.21, 0, 0], frac_coords=True, to_unit_cell=True)
    close.replace(1, "O", [0, 0, 0])
    res = check_validity(spec.encode(close), spec, (3, 5), st)
    assert not res["distance_ok"] and not res["valid"] and res["reason"] == "distance"
    assert res["min_distance"] == pytest.approx(0.3, abs=1e-6)
    # a fixed-Angstrom floor applies too
    assert not check_validity(spec.encode(mgo), spec, (4, 4), ValiditySettings(min_distance=2.2))[
        "distance_ok"
    ]
    # flat cell: angles that cannot close
    flat = spec.encode(mgo)
    flat[1] = np.array([150.0, 150.0, 60.0]) / 180.0
    res = check_validity(flat, spec, (4, 4), st)
    assert not res["lattice_ok"] and res["reason"].startswith("lattice")
    # huge cell
    big = spec.encode(mgo)
    big[0] *= 3
    assert not check_validity(big, spec, (4, 4), st)["lattice_ok"]
    # threshold decoding: a dropped atom row is a composition failure; with counts it is not read
    img = spec.encode(mgo)
    img[spec.block(1).start + 3] = 0.0
    assert not check_validity(img, spec, (4, 4), st, use_counts=False)["composition_ok"]
    assert check_validity(img, spec, (4, 3), st, use_counts=False)["composition_ok"]


def test_min_distances_periodic_images():
    s = Structure(Lattice.from_parameters(1.9, 5, 5, 90, 90, 90), ["Mg"], [[0.5, 0.5, 0.5]])
    D, R = min_distances(s)
    assert D[0, 0] == pytest.approx(1.9)
    assert R[0, 0] == pytest.approx(2 * 1.41)
    # oblique cell: the shortest contact crosses the cell boundary along a diagonal
    s = Structure(
        Lattice.from_parameters(4, 4, 4, 60, 60, 60),
        ["O", "O"],
        [[0.02, 0.02, 0.02], [0.98, 0.98, 0.98]],
    )
    D, _ = min_distances(s)
    assert D[0, 1] == pytest.approx(s.get_distance(0, 1), abs=1e-9)
    assert D[0, 1] < 0.6


def test_spec_dict_round_trip():
    spec = PointCloudSpec(ELEMENTS, (8, 8, 12), length_scale=25.0)
    assert PointCloudSpec.from_dict(spec.to_dict()) == spec
    assert spec.n_rows == 30
    assert spec.counts_from_mask(spec.mask((2, 0, 5))) == (2, 0, 5)
    assert not spec.fits((0, 0, 0)) and not spec.fits((9, 0, 1)) and spec.fits((8, 8, 12))
