"""matdisco.core.composition: the one parser, charge balance and the ElMD."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from matdisco.core.composition import (
    FormulaError,
    amounts_by_z,
    charge_balance_possible,
    element_amounts,
    elmd,
    elmd_matrix,
    first_oxidation_guess,
    integer_composition,
    normalize_formula,
    oxidation_state_guess,
    parse_formula,
)


@pytest.fixture(scope="module")
def label_formulas(root) -> list[str]:
    df = pd.read_csv(root / "resources/bundled/formula_ehull_labels.csv.gz", keep_default_na=False)
    return df.loc[df["formula"] != "", "formula"].sample(300, random_state=1).tolist()


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "spellings",
    [
        ["BaFe2As2", "Ba(FeAs)2", "As2Fe2Ba", "Ba2Fe4As4", "Ba [Fe As]2", "Ba1Fe2As2"],
        ["MgMn2O4", "Mg2Mn4O8", "O4Mn2Mg", "Mg Mn2 O4"],
        ["Fe2O3", "Fe4O6", "O3Fe2"],
    ],
)
def test_spellings_of_one_composition_normalise_equal(spellings):
    keys = {normalize_formula(s) for s in spellings}
    assert len(keys) == 1
    from pymatgen.core import Composition

    assert normalize_formula(Composition(spellings[0])) in keys
    assert normalize_formula(element_amounts(spellings[0])) in keys  # a mapping


def test_different_compositions_differ():
    assert normalize_formula("BaFe2As2") != normalize_formula("BaFeAs2")
    assert normalize_formula("FeO") != normalize_formula("Fe2O3")


def test_element_amounts_and_integer_composition():
    assert element_amounts("K4[Fe(CN)6]") == {"K": 4, "Fe": 1, "C": 6, "N": 6}
    assert element_amounts("Fe0O") == {"O": 1.0}
    assert integer_composition("Mg2Mn4O8") == {"Mg": 1, "Mn": 2, "O": 4}
    assert integer_composition("Li0.5CoO2") is None
    assert integer_composition("not a formula") is None
    z = amounts_by_z("MgMn2O4")
    assert z[12] == 1 and z[25] == 2 and z[8] == 4 and z.sum() == 7


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty formula"),
        ("Xx2O", "unknown element 'Xx'"),  # pymatgen alone would make a dummy species
        ("D2O", "unknown element 'D'"),  # pymatgen alone would read H2O
        ("(Fe2]O3", "unbalanced ']'"),  # pymatgen alone would accept it
        ("Fe2O3)", "unbalanced ')'"),
        ("(Fe2O3", "unclosed '('"),
        ("Fe-O", "invalid character '-'"),
        ("2Fe", "follows no element"),
        ("Fe0O0", "no element with a positive amount"),
        ("fe2o3", "invalid formula"),
    ],
)
def test_bad_formulas_raise_a_value_error_naming_them(bad, reason):
    with pytest.raises(ValueError) as info:
        parse_formula(bad)
    assert isinstance(info.value, FormulaError)
    assert repr(bad) in str(info.value)  # the message names the formula
    assert reason in str(info.value)
    with pytest.raises(FormulaError):
        normalize_formula(bad)


def test_non_strings_are_rejected():
    with pytest.raises(FormulaError, match="not a string"):
        parse_formula(None)  # type: ignore[arg-type]
    with pytest.raises(FormulaError, match="unknown element 'Qq'"):
        parse_formula({"Qq": 1})


def test_parser_agrees_with_pymatgen_on_bundled_formulas(label_formulas):
    from pymatgen.core import Composition

    for f in label_formulas:
        assert element_amounts(f) == pytest.approx(Composition(f).get_el_amt_dict()), f
        assert normalize_formula(f) == Composition(f).reduced_formula, f


# ---------------------------------------------------------------------------- charge balance


def test_charge_balance_known_cases():
    # spinel MgMn2O4 with Mn fixed to 3+: Mg2+ Mn3+ O2-
    assert charge_balance_possible("MgMn2O4", {"Mn": [3, 3]})
    assert oxidation_state_guess("MgMn2O4", {"Mn": [3, 3]}) == {"Mg": 2.0, "Mn": 3.0, "O": -2.0}
    assert oxidation_state_guess({"Mg": 1, "Mn": 2, "O": 4}, {"Mn": [2, 4]}) == {
        "Mg": 2.0,
        "Mn": 3.0,
        "O": -2.0,
    }
    # mixed valence: Mn3O4 = Mn2+ Mn3+ Mn3+ (average 8/3)
    got = oxidation_state_guess("Mn3O4", {"Mn": [2, 4]})
    assert got is not None and got["Mn"] == pytest.approx(8 / 3)
    # Mn fixed to 2+ cannot balance MgMn2O4 (2 + 4 - 8 = -2); MgO2 has no peroxide state
    assert not charge_balance_possible("MgMn2O4", {"Mn": [2, 2]})
    assert oxidation_state_guess("MgMn2O4", {"Mn": [2, 2]}) is None
    assert not charge_balance_possible("NaCl2")
    assert first_oxidation_guess("MgMn2O4")["Mg"] == 2.0


def test_charge_balance_needs_integer_amounts():
    with pytest.raises(ValueError, match="Li0.5CoO2"):
        charge_balance_possible("Li0.5CoO2")


# ---------------------------------------------------------------------------- ElMD


PAIRS = [("CaTiO3", "SrTiO3"), ("Fe2O3", "FeO"), ("LiFePO4", "LiMnPO4"), ("MgMn2O4", "NaCl")]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_elmd_matches_the_elmd_package_and_is_symmetric(a, b):
    from ElMD import ElMD

    d = elmd(a, b)
    assert d == pytest.approx(ElMD(a, metric="mod_petti").elmd(b), abs=1e-9)
    assert d == pytest.approx(elmd(b, a), abs=1e-12)
    assert d > 0


def test_elmd_is_zero_for_one_composition():
    assert elmd("Fe2O3", "Fe4O6") == 0.0
    assert elmd("BaFe2As2", "Ba(FeAs)2") == 0.0


def test_elmd_matrix_is_the_pairwise_elmd_with_nan_for_invalid():
    a = ["MgMn2O4", "bad(", "HeO"]
    b = ["ZnMn2O4", "Mn3O4", "MgMn2O4"]
    d = elmd_matrix(a, b)
    assert d.shape == (3, 3)
    for j, f in enumerate(b):
        assert d[0, j] == pytest.approx(elmd("MgMn2O4", f), abs=1e-12)
    assert d[0, 2] == 0.0
    assert np.isnan(d[1]).all() and np.isnan(d[2]).all()  # unparsable; He has no Pettifor number
    with pytest.raises(ValueError, match="HeO"):
        elmd("HeO", "MgO")
