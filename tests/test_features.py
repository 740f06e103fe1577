"""Composition features: parser, hand-computed feature values, rejects, ElMD, HDF5 cache."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from matdisco.core.composition import FormulaError
from matdisco.core.composition import element_amounts as parse_formula
from matdisco.features import (
    ElementTable,
    composition_keys,
    elmd,
    featurize,
    featurize_store,
    parse_formulas,
    read_feature_meta,
    read_features,
    write_features,
)


@pytest.fixture(scope="module")
def table(root) -> ElementTable:
    return ElementTable.from_files(
        root / "resources/bundled/magpie_elements.csv",
        root / "resources/bundled/elmd_element_properties.json.gz",
    )


@pytest.fixture(scope="module")
def label_formulas(root) -> list[str]:
    df = pd.read_csv(root / "resources/bundled/formula_ehull_labels.csv.gz", keep_default_na=False)
    df = df[
        df["formula"] != ""
    ]  # the bundled file lost "NaN" (sodium nitride) to pandas NA parsing
    return df["formula"].sample(400, random_state=0).tolist()


def feat(fs, row: int, name: str) -> float:
    return float(fs.X[row, fs.feature_names.index(name)])


# ---------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("Fe2O3", {"Fe": 2, "O": 3}),
        ("CdH8(NO5)2", {"Cd": 1, "H": 8, "N": 2, "O": 10}),
        ("(NH4)2SO4", {"N": 2, "H": 8, "S": 1, "O": 4}),
        ("Ca[OH]2", {"Ca": 1, "O": 2, "H": 2}),
        ("Mg2 Mn4 O8", {"Mg": 2, "Mn": 4, "O": 8}),
        ("Li0.5CoO2", {"Li": 0.5, "Co": 1, "O": 2}),
        ("H6Mg2Ru1", {"H": 6, "Mg": 2, "Ru": 1}),
        ("CH3COOH", {"C": 2, "H": 4, "O": 2}),
        ("K4[Fe(CN)6]", {"K": 4, "Fe": 1, "C": 6, "N": 6}),
        ("Fe0O", {"O": 1}),
    ],
)
def test_parse_formula(formula, expected):
    got = parse_formula(formula)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)


def test_parser_agrees_with_pymatgen(label_formulas):
    from pymatgen.core import Composition

    extra = ["(NH4)2SO4", "Ca(OH)2", "K4[Fe(CN)6]", "Li0.5CoO2", "Mg2 Mn4 O8", "Ba(Fe0.5Nb0.5)O3"]
    for f in label_formulas + extra:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = Composition(f).get_el_amt_dict()
        got = parse_formula(f)
        assert got.keys() == ref.keys(), f
        for k in ref:
            assert got[k] == pytest.approx(ref[k]), f


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Xx2O", "unknown element 'Xx'"),
        ("Fe2O3)", "unbalanced ')'"),
        ("(Fe2O3", "unclosed '('"),
        ("(Fe2]O3", "unbalanced ']'"),
        ("Fe-O", "invalid character '-'"),
        ("fe2o3", "fe2o3 is an invalid formula"),
        ("2Fe", "follows no element"),
        ("Fe0O0", "no element with a positive amount"),
        ("()2", "empty group"),
    ],
)
def test_parse_formula_errors(bad, reason):
    with pytest.raises(
        FormulaError,
        match=reason.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        parse_formula(bad)


def test_bad_formulas_are_rejected_with_reason_not_raised(table):
    formulas = ["NaCl", "Xx2O", "", "Fe2O3)", "Cf2O3", None, float("nan"), "Fe0", "Fe2O3"]
    fs = featurize(formulas, table)
    assert fs.valid.tolist() == [True, False, False, False, False, False, False, False, True]
    reasons = dict(zip(range(len(formulas)), fs.reasons, strict=True))
    assert "unknown element 'Xx'" in reasons[1]
    assert "empty" in reasons[2]
    assert "unbalanced" in reasons[3]
    assert reasons[4] == "no element data for Cf"
    assert "not a string" in reasons[5] and "not a string" in reasons[6]
    assert "positive amount" in reasons[7]
    assert reasons[0] == reasons[8] == ""
    assert np.isnan(fs.X[~fs.valid]).all()
    assert np.isfinite(fs.X[0]).all()
    rej = fs.rejects()
    assert len(rej) == 7 and set(rej.columns) == {"formula", "reason"}


# ---------------------------------------------------------------------------- features


def test_nacl_hand_computed(table):
    fs = featurize(["NaCl"], table)
    # Magpie: Na Z=11, Cl Z=17; electronegativity 0.93 / 3.16; valence Na s1, Cl s2 p5
    assert feat(fs, 0, "mean_Number") == pytest.approx(14.0)
    assert feat(fs, 0, "avg_dev_Number") == pytest.approx(3.0)
    assert feat(fs, 0, "minimum_Number") == pytest.approx(11.0)
    assert feat(fs, 0, "maximum_Number") == pytest.approx(17.0)
    assert feat(fs, 0, "range_Number") == pytest.approx(6.0)
    assert feat(fs, 0, "mode_Number") == pytest.approx(11.0)  # tie: smallest value
    assert feat(fs, 0, "L0_norm") == 2
    assert feat(fs, 0, "L2_norm") == pytest.approx(math.sqrt(0.5), rel=1e-6)
    assert feat(fs, 0, "L3_norm") == pytest.approx((2 * 0.5**3) ** (1 / 3), rel=1e-6)
    assert feat(fs, 0, "frac_s_valence") == pytest.approx(1.5 / 4)
    assert feat(fs, 0, "frac_p_valence") == pytest.approx(2.5 / 4)
    assert feat(fs, 0, "frac_d_valence") == pytest.approx(0.0)
    ionic = 1 - math.exp(-0.25 * (3.16 - 0.93) ** 2)
    assert feat(fs, 0, "max_ionic_char") == pytest.approx(ionic, rel=1e-5)
    assert feat(fs, 0, "avg_ionic_char") == pytest.approx(0.25 * ionic, rel=1e-5)
    assert feat(fs, 0, "charge_balanced") == 1.0
    assert feat(fs, 0, "frac_Na") == pytest.approx(0.5) and feat(fs, 0, "frac_Cl") == pytest.approx(
        0.5
    )
    assert feat(fs, 0, "frac_O") == 0.0
    assert feat(fs, 0, "formula_unit_atoms") == 2


def test_fe2o3_hand_computed(table):
    fs = featurize(["Fe4O6", "NaCl2"], table)
    # fractions 0.4 / 0.6; Z 26 / 8; O is the most abundant element
    assert feat(fs, 0, "mean_Number") == pytest.approx(0.4 * 26 + 0.6 * 8)
    assert feat(fs, 0, "avg_dev_Number") == pytest.approx(0.4 * 10.8 + 0.6 * 7.2)
    assert feat(fs, 0, "mode_Number") == pytest.approx(8.0)
    assert feat(fs, 0, "mean_elmd_mod_petti") == pytest.approx(0.4 * 70 + 0.6 * 96)
    assert feat(fs, 0, "L0_norm") == 2
    assert feat(fs, 0, "charge_balanced") == 1.0  # Fe3+ / O2-
    assert feat(fs, 0, "formula_unit_atoms") == 5  # reduced to Fe2O3
    assert feat(fs, 0, "formula_unit_max_count") == 3
    assert feat(fs, 1, "charge_balanced") == 0.0  # Na+ with two Cl in -1, 1, 3, 5, 7


def test_charge_balance_matches_brute_force(table, label_formulas):
    fs = featurize(label_formulas, table)
    col = fs.feature_names.index("charge_balanced")
    for i, f in enumerate(label_formulas[:150]):
        amounts = parse_formula(f)
        if len(amounts) > 5:
            continue
        tot = sum(amounts.values())
        states = [table.oxidation_states[e] for e in amounts]
        want = any(
            abs(sum(a / tot * s for a, s in zip(amounts.values(), combo, strict=True))) < 1e-6
            for combo in itertools.product(*states)
        )
        assert fs.X[i, col] == float(want), f


def test_features_do_not_depend_on_batch(table, label_formulas):
    all_fs = featurize(label_formulas, table)
    one = featurize(label_formulas[7:8], table)
    np.testing.assert_array_equal(all_fs.X[7], one.X[0])


def test_composition_keys(table):
    parsed = parse_formulas(["Fe2O3", "Fe4O6", "O3Fe2", "FeO", "bad("], table)
    keys = composition_keys(parsed, table)
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert keys[4] == ""


# ---------------------------------------------------------------------------- ElMD


ELMD_PAIRS = [
    ("CaTiO3", "SrTiO3"),
    ("Fe2O3", "FeO"),
    ("LiFePO4", "LiMnPO4"),
    ("NaCl", "KBr"),
    ("MgMn2O4", "Mn3O4"),
]


@pytest.fixture(scope="module")
def elmd_reference() -> list[float]:
    """ElMD package distances, computed in a subprocess with numba's JIT off (saves ~10 s)."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, sys, warnings; warnings.simplefilter('ignore'); from ElMD import ElMD; "
        "pairs = json.loads(sys.argv[1]); print(json.dumps([ElMD(a).elmd(b) for a, b in pairs]))"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ELMD_PAIRS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_elmd_package_reference_value(elmd_reference):
    # ElMD("CaTiO3").elmd("SrTiO3"): 0.2 of the atoms move one step on the modified Pettifor scale
    assert elmd_reference[0] == pytest.approx(0.2, abs=1e-9)


def test_vectorised_elmd_matches_package(table, elmd_reference):
    a, b = zip(*ELMD_PAIRS, strict=True)
    got = elmd(list(a), list(b), table)
    assert got == pytest.approx(elmd_reference, abs=1e-9)
    assert got[0] == pytest.approx(0.2)
    assert got[1] == pytest.approx(0.1 * (96 - 70))  # 0.1 of the atoms move from Fe (70) to O (96)
    assert np.isnan(elmd(["NaCl"], ["Xx"], table)[0])


# ---------------------------------------------------------------------------- cache / stage


def test_hdf5_roundtrip(table, tmp_path):
    fs = featurize(["NaCl", "bad(", "Fe2O3"], table)
    write_features(tmp_path / "f.h5", fs, {"a": 1})
    back = read_features(tmp_path / "f.h5")
    assert back.formulas == fs.formulas and back.reasons == fs.reasons and back.keys == fs.keys
    np.testing.assert_array_equal(back.X, fs.X)
    assert back.valid.tolist() == [True, False, True]
    assert read_feature_meta(tmp_path / "f.h5") == {"a": 1}


def test_featurize_store_stage(root, tmp_path, mgo):
    from matdisco.store import StructureArrays, write_store

    store = tmp_path / "entries.h5"
    entries = pd.DataFrame({"id": ["x-1"], "source": "t", "formula": ["MgO"], "chemsys": ["Mg-O"]})
    labels = pd.DataFrame(
        {"formula": ["MgO", "Mg(OH)2", "Zz3"], "e_above_hull": [0.0, 0.1, 0.0], "source": "t"}
    )
    write_store(
        store,
        entries,
        StructureArrays.from_structures([mgo]),
        labels,
        data_source="t",
        provenance={},
    )
    extra = tmp_path / "extra.csv"
    pd.DataFrame({"formula": ["NaN", "MgO"], "decomposition_enthalpy": [-0.1, -0.2]}).to_csv(
        extra, index=False
    )
    fs = featurize_store(
        store=store,
        extra_labels=extra,
        magpie_table=root / "resources/bundled/magpie_elements.csv",
        elmd_table=root / "resources/bundled/elmd_element_properties.json.gz",
        settings={},
        out_features=tmp_path / "f.h5",
        out_rejects=tmp_path / "rejects.csv",
    )
    assert fs.formulas == [
        "MgO",
        "Mg(OH)2",
        "Zz3",
        "NaN",
    ]  # distinct; 'NaN' (sodium nitride) kept as text
    rej = pd.read_csv(tmp_path / "rejects.csv")
    assert rej["formula"].tolist() == ["Zz3"] and "unknown element" in rej["reason"][0]
    assert read_features(tmp_path / "f.h5").valid.tolist() == [True, True, False, True]


def test_embedding_statistics_by_hand(root, table):
    """Fe2O3 on MEGNet-16: fraction-weighted mean/std and element-wise min/max per dimension;
    the Magpie-style columns are unchanged when embeddings are appended."""
    from matdisco.features import ElementEmbeddings, featurize_with_embeddings

    emb = ElementEmbeddings.from_file(
        root / "resources/bundled/elmd_element_properties.json.gz", ["megnet16"]
    )
    sym, vec = emb.tables["megnet16"]
    fe, o = vec[sym.index("Fe")], vec[sym.index("O")]
    mean = 0.4 * fe + 0.6 * o
    std = np.sqrt(0.4 * (fe - mean) ** 2 + 0.6 * (o - mean) ** 2)
    fs = featurize_with_embeddings(["Fe2O3", "bad(", "NaCl"], table, emb)
    plain = featurize(["Fe2O3", "bad(", "NaCl"], table)
    n = len(plain.feature_names)
    assert fs.feature_names[:n] == plain.feature_names
    np.testing.assert_array_equal(fs.X[:, :n], plain.X)
    row = dict(zip(fs.feature_names, fs.X[0], strict=True))
    for j in range(16):
        assert row[f"megnet16_mean_{j}"] == pytest.approx(mean[j], rel=1e-5, abs=1e-6)
        assert row[f"megnet16_std_{j}"] == pytest.approx(std[j], rel=1e-4, abs=1e-6)
        assert row[f"megnet16_minimum_{j}"] == pytest.approx(min(fe[j], o[j]), rel=1e-6)
        assert row[f"megnet16_maximum_{j}"] == pytest.approx(max(fe[j], o[j]), rel=1e-6)
    assert np.isnan(fs.X[1, n:]).all() and np.isfinite(fs.X[2, n:]).all()
    with pytest.raises(ValueError, match="scalar scale"):
        ElementEmbeddings.from_file(
            root / "resources/bundled/elmd_element_properties.json.gz", ["mod_petti"]
        )
