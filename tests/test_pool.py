"""The candidate pool: fingerprints, dedupe, novelty / validity flags and metrics."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from matdisco.core.matching import (
    MatchSettings,
    StructureComparer,
    dedupe,
    neighbour_stats,
    primitive_size,
)
from matdisco.pool import build_pool, charge_neutral, pool_metrics
from matdisco.store import StructureArrays, read_entries, read_structures, write_store


def _perovskite(a: str = "Ca", b: str = "Ti", lattice: float = 3.9):
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice.cubic(lattice),
        [a, b, "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


def _ilmenite_like():
    """A CaTiO3 polymorph that is not the cubic perovskite (distorted, layered)."""
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice.hexagonal(5.1, 14.0),
        ["Ca", "Ca", "Ti", "Ti", "O", "O", "O", "O", "O", "O"],
        [
            [0, 0, 0.35],
            [0, 0, 0.85],
            [0, 0, 0.15],
            [0, 0, 0.65],
            [0.3, 0.0, 0.25],
            [0.0, 0.3, 0.25],
            [0.7, 0.7, 0.25],
            [0.7, 0.0, 0.75],
            [0.0, 0.7, 0.75],
            [0.3, 0.3, 0.75],
        ],
    )


def _perturbed(s, seed: int, noise: float = 0.03):
    """Noisy, strained, rescaled, rotated copy with shuffled sites."""
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(seed)
    strain = np.eye(3) + rng.normal(0, 0.01, (3, 3))
    lat = s.lattice.matrix @ (strain + strain.T) / 2
    cart = s.frac_coords @ lat + rng.normal(0, noise, (len(s), 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    order = rng.permutation(len(s))
    out = Structure(
        Lattice(lat @ q.T),
        [s[i].specie for i in order],
        (cart @ q.T)[order],
        coords_are_cartesian=True,
    )
    out.scale_lattice(out.volume * 1.05)
    return out


def _store(path, structures, ids, extra=None, source="bundled"):
    table = pd.DataFrame(
        {
            "id": ids,
            "source": source,
            "formula": [s.composition.reduced_formula for s in structures],
            "nsites": [len(s) for s in structures],
        }
    )
    for k, v in (extra or {}).items():
        table[k] = v
    write_store(
        path, table, StructureArrays.from_structures(structures), data_source="test", provenance={}
    )
    return path


def test_min_distance_and_fingerprint_invariances(mgo):
    s = mgo  # rock salt, a = 4.21
    variants = [s, s * (2, 1, 1), _perturbed(s, 0, noise=0.0)]
    mins, fps = neighbour_stats(StructureArrays.from_structures(variants))
    assert mins[0] == pytest.approx(4.21 / 2, abs=1e-6)
    assert mins[1] == pytest.approx(4.21 / 2, abs=1e-6)
    # supercell, rotation, site order, strain of 1 % and uniform scaling barely move it
    assert np.abs(fps[0] - fps[1]).max() < 1e-9
    assert np.abs(fps[0] - fps[2]).max() < 0.05
    # a different structure of the same formula is far away
    from pymatgen.core import Lattice, Structure

    cscl = Structure(Lattice.cubic(2.6), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert (
        np.abs(fps[0] - neighbour_stats(StructureArrays.from_structures([cscl]))[1][0]).max() > 0.15
    )


def test_comparer_agrees_with_structure_matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    base = _perovskite()
    structures = [
        base,
        _perturbed(base, 1),
        base * (1, 1, 2),
        _ilmenite_like(),
        _perturbed(base, 2, noise=0.6),
    ]
    comparer = StructureComparer(structures, MatchSettings())
    reference = StructureMatcher(primitive_cell=True, scale=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(1, len(structures)):
            assert comparer.match(0, j) == reference.fit(base, structures[j]), j
    assert [comparer.match(0, j) for j in range(1, 5)] == [True, True, False, False]


def test_superstructures_are_other_polymorphs():
    """A distorted 2x1x1 superstructure is not the parent structure (as in the store's dedupe),
    although StructureMatcher with attempt_supercell would match it."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    base = _perovskite()
    sup = base * (2, 1, 1)
    ti = [i for i, site in enumerate(sup) if site.specie.symbol == "Ti"]
    sup.translate_sites([ti[0]], [0.2, 0, 0], frac_coords=False)
    sup.translate_sites([ti[1]], [-0.2, 0, 0], frac_coords=False)
    assert (
        primitive_size(base) == 5
        and primitive_size(base * (2, 2, 1)) == 5
        and primitive_size(sup) == 10
    )
    comparer = StructureComparer([base, sup, base * (2, 1, 1)], MatchSettings())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert StructureMatcher(attempt_supercell=True).fit(base, sup)
        assert not StructureMatcher().fit(base, sup)
    assert not comparer.match(0, 1)
    assert comparer.match(0, 2)


def test_find_duplicates_keeps_the_first_of_each_group():
    base, other = _perovskite(), _ilmenite_like()
    structures = [
        base,
        other,
        _perturbed(base, 3),
        base * (2, 1, 1),
        _perturbed(other, 4),
        _perturbed(base, 5, 0.6),
    ]
    fps = neighbour_stats(StructureArrays.from_structures(structures))[1]
    clusters = dedupe(structures, MatchSettings(), fingerprints=fps)
    rep, fits = clusters.rep, clusters.n_fits
    assert rep.tolist() == [0, 1, 0, 0, 1, 5]
    assert fits >= 3
    # a tolerance of zero turns the pre-filter into "identical fingerprints only"
    rep0 = dedupe(structures, MatchSettings(fingerprint_tol=1e-12), fingerprints=fps).rep
    assert rep0.tolist()[:3] == [0, 1, 2] and rep0[3] == 0


@pytest.mark.parametrize(
    ("formula", "method", "expected"),
    [
        ("MgMn2O4", "smact", True),
        ("Mn3O4", "smact", True),
        ("Mg2O", "smact", False),
        ("NaCl2", "pymatgen", False),
        ("LiFePO4", "pymatgen", True),
        ("Fe", "smact", True),
    ],
)
def test_charge_neutral(formula, method, expected):
    assert charge_neutral(formula, method) is expected


def test_build_pool_merges_flags_and_measures(tmp_path):
    """Templates + GAN files: a cross-generator duplicate, a known structure, an overlap."""
    from pymatgen.core import Lattice, Structure

    known = _store(
        tmp_path / "known.h5", [_perovskite(), _perovskite("Sr", "Ti", 3.95)], ["mp-1", "mp-2"]
    )
    tpl = [_perovskite("Ba", "Ti", 4.0), _ilmenite_like(), _perturbed(_perovskite(), 6)]
    tpl_file = _store(
        tmp_path / "tpl.h5",
        tpl,
        ["tpl-BaTiO3-001", "tpl-CaTiO3-001", "tpl-CaTiO3-002"],
        source="template",
        extra={
            "generator": "template",
            "parent": ["mp-2", "mp-x", "mp-1"],
            "target_formula": ["BaTiO3", "CaTiO3", "CaTiO3"],
            "template_distance": [1.0, 2.0, 0.0],
        },
    )
    squashed = Structure(
        Lattice.cubic(3.0),
        ["Ba", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.05, 0.05, 0.05], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    gan = [_perturbed(_perovskite("Ba", "Ti", 4.0), 7), squashed, _perovskite("Mg", "Mn", 3.8)]
    gan_file = _store(
        tmp_path / "gan.h5",
        gan,
        ["gan-0", "gan-1", "gan-2"],
        source="gan",
        extra={
            "generator": "wgan_gp",
            "parent": "",
            "target_formula": ["BaTiO3", "BaTiO3", "MgMnO3"],
        },
    )
    out = tmp_path / "pool"
    metrics = build_pool(
        [tpl_file, gan_file],
        known,
        out_store=out / "pool.h5",
        out_csv=out / "pool.csv",
        out_metrics=out / "metrics.json",
        out_cif_dir=out / "cifs",
        settings={"min_distance": 0.5},
        workers=1,
    )
    pool = read_entries(out / "pool.h5").set_index("id")
    # the GAN's BaTiO3 perovskite duplicates the template's (kept: the template, listed first)
    assert "gan-0" not in pool.index and pool.at["tpl-BaTiO3-001", "duplicate_ids"] == "gan-0"
    assert len(pool) == 5
    # a perturbed CaTiO3 perovskite is a known structure; the other polymorph is not
    assert (
        not pool.at["tpl-CaTiO3-002", "novel_structure"]
        and pool.at["tpl-CaTiO3-002", "known_id"] == "mp-1"
    )
    assert (
        pool.at["tpl-CaTiO3-001", "novel_structure"]
        and not pool.at["tpl-CaTiO3-001", "novel_composition"]
    )
    assert pool.at["tpl-BaTiO3-001", "novel_composition"]
    # atoms 0.26 A apart (Ba-Ti along the body diagonal of the squashed cell)
    assert pool.at["gan-1", "min_distance"] == pytest.approx(0.05 * 3.0 * np.sqrt(3), abs=1e-3)
    assert not pool.at["gan-1", "valid"] and pool.drop(index="gan-1")["valid"].all()
    assert pool["charge_neutral"].all()
    assert set(pool["generator"]) == {"template", "wgan_gp"}
    assert pool.at["tpl-CaTiO3-002", "template_distance"] == 0.0 and np.isnan(
        pool.at["gan-2", "template_distance"]
    )
    assert len(read_structures(out / "pool.h5")) == 5
    csv = pd.read_csv(out / "pool.csv")
    assert len(csv) == 5 and {"novel_structure", "charge_neutral", "min_distance", "valid"} <= set(
        csv.columns
    )
    assert sorted(p.name for p in (out / "cifs").iterdir()) == sorted(
        f"{i}.cif" for i in pool.index
    )
    # metrics per generator: 3 template candidates, all distinct, 1 of them known
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(metrics))
    t, g = m["per_generator"]["template"], m["per_generator"]["wgan_gp"]
    assert t["n"] == 3 and t["uniqueness"] == 1.0 and t["novelty"] == pytest.approx(2 / 3, abs=1e-3)
    assert (
        g["n"] == 3
        and g["structure_validity"] == pytest.approx(2 / 3, abs=1e-3)
        and g["pool_share"] < 1.0
    )
    assert m["overall"]["n"] == 6 and m["overall"]["n_unique"] == 5


def test_empty_inputs_give_an_empty_pool(tmp_path, caplog):
    known = _store(tmp_path / "known.h5", [_perovskite()], ["mp-1"])
    empty = _store(tmp_path / "empty.h5", [], [])
    with caplog.at_level(logging.WARNING, logger="matdisco"):
        metrics = build_pool(
            [empty],
            known,
            out_store=tmp_path / "p.h5",
            out_csv=tmp_path / "p.csv",
            out_metrics=tmp_path / "m.json",
            out_cif_dir=tmp_path / "cifs",
        )
    assert len(read_entries(tmp_path / "p.h5")) == 0 and metrics["overall"] == {"n": 0}
    assert (tmp_path / "cifs").is_dir() and "no candidates" in caplog.text


def test_pool_metrics_definitions():
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "generator": ["g", "g", "g", "h"],
            "representative": ["a", "a", "c", "a"],
            "valid": [True, True, False, True],
            "charge_neutral": [True, True, True, False],
            "novel_structure": [True, True, False, True],
            "novel_composition": [False, False, False, False],
        }
    )
    m = pool_metrics(df)["per_generator"]
    assert m["g"]["uniqueness"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["g"]["validity"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["g"]["novelty"] == 0.5 and m["g"]["valid_unique_novel"] == pytest.approx(
        1 / 3, abs=1e-4
    )
    assert m["h"]["pool_share"] == 0.0 and m["h"]["composition_validity"] == 0.0


def test_match_settings_are_built_from_the_pool_section():
    from matdisco.core.composition import charge_neutral as core_charge_neutral
    from matdisco.core.matching import MatchSettings
    from matdisco.pool import match_settings
    from matdisco.settings import PoolSettings

    ms = match_settings(PoolSettings.from_config({"ltol": 0.3, "fingerprint_tol": 0.2}))
    assert ms == MatchSettings(ltol=0.3, stol=0.3, angle_tol=5.0, fingerprint_tol=0.2)
    assert ms.symprec is None  # the pool uses no space-group pre-filter
    assert charge_neutral is core_charge_neutral  # one implementation
