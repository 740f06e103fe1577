"""Reference data of the Pourbaix screen: MP aqueous ion references, MP elemental reference
energies, known solids rebuilt on the MP energy scale, and ion entries placed on them.

See :mod:`matdisco.screen.pourbaix` for the construction as a whole.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.analysis.pourbaix_diagram import IonEntry
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = [
    "KJ_PER_MOL_PER_EV",
    "ion_entries",
    "ion_references_for",
    "known_solids",
    "load_ion_references",
    "mp_elemental_energies",
]

#: kJ/mol per eV as used by mp-api's MPRester.get_ion_entries (ΔG / 96.485 → eV)
KJ_PER_MOL_PER_EV = 96.485
#: the elements every Pourbaix system has besides its own
HO = frozenset({"H", "O"})


def _read_json(path: str | Path) -> Any:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def load_ion_references(path: str | Path) -> list[dict[str, Any]]:
    """The MP aqueous ion reference records (MPContribs ``ion_ref_data`` format).

    Each record: ``formula`` (e.g. ``Mn[+2]``), ``data.MajElements``, ``data.RefSolid``,
    ``data.ΔGᶠ`` and ``data.ΔGᶠRefSolid`` (value + unit, kJ/mol), ``data.charge``.
    """
    data = _read_json(path)
    if not isinstance(data, list) or not data or "data" not in data[0]:
        raise ValueError(f"{path}: not a list of MP ion reference records")
    return data


def ion_references_for(
    ion_data: Sequence[dict[str, Any]], elements: Sequence[str]
) -> list[dict[str, Any]]:
    """Records whose major element is one of ``elements`` (mp-api's ``..._for_chemsys``)."""
    els = set(elements)
    return [d for d in ion_data if d["data"]["MajElements"] in els]


def _to_ev(quantity: dict[str, Any], what: str) -> float:
    unit = quantity["unit"]
    if unit == "kJ/mol":
        return float(quantity["value"]) / KJ_PER_MOL_PER_EV
    if unit == "MJ/mol":
        return float(quantity["value"]) / (KJ_PER_MOL_PER_EV * 1e-3)
    raise ValueError(f"{what} has unit {unit!r} (expected kJ/mol or MJ/mol)")


def ion_entries(pd: PhaseDiagram, ion_data: Sequence[dict[str, Any]]) -> list[IonEntry]:
    """IonEntry objects positioned on the solids of ``pd`` (mp-api ``get_ion_entries``, offline).

    ``energy = ΔG_f(ion) + [E_f^pd(ref solid) − ΔG_f^exp(ref solid)·rf] · n_el(ion)/n_el(ref)``
    with the most stable reference-solid entry of ``pd`` (lowest energy per atom), ``rf`` its
    formula-unit factor and ``n_el`` the amount of the major element. All in eV.

    Args:
        pd: phase diagram of the solids, already processed with
            ``MaterialsProjectAqueousCompatibility``; must contain H and O.
        ion_data: ion reference records (:func:`load_ion_references`).

    Raises:
        ValueError: ``pd`` lacks H or O, or an ion's reference solid is not in ``pd``.
    """
    from pymatgen.analysis.pourbaix_diagram import IonEntry
    from pymatgen.core.ion import Ion

    symbols = {el.symbol for el in pd.elements}
    if not {"H", "O"} <= symbols:
        raise ValueError(f"the phase diagram must contain H and O (has {sorted(symbols)})")
    out = []
    for rec in ion_data:
        ion = Ion.from_formula(rec["formula"])
        d = rec["data"]
        refs = [e for e in pd.all_entries if e.composition.reduced_formula == d["RefSolid"]]
        if not refs:
            raise ValueError(
                f"reference solid {d['RefSolid']} of {rec['formula']} not in the entries"
            )
        stable_ref = min(
            refs, key=lambda x: x.energy_per_atom
        )  # first lowest, as mp-api's sorted()[0]
        rf = stable_ref.composition.get_reduced_composition_and_factor()[1]
        solid_diff = pd.get_form_energy(stable_ref) - _to_ev(d["ΔGᶠRefSolid"], "ΔGᶠRefSolid") * rf
        elt = d["MajElements"]
        factor = ion.composition[elt] / stable_ref.composition[elt]
        out.append(IonEntry(ion, _to_ev(d["ΔGᶠ"], "ΔGᶠ") + solid_diff * factor))
    return out


def mp_elemental_energies(path: str | Path) -> dict[str, tuple[dict[str, float], float]]:
    """MP elemental reference entries: element -> (cell composition, total energy in eV).

    Reads a JSON mapping element -> pymatgen ``ComputedEntry`` dict (matbench-discovery's
    ``mp-elemental-reference-entries``; uncorrected energies, MP2020 corrects no element)."""
    raw = _read_json(path)
    out = {}
    for el, d in raw.items():
        comp = {str(k): float(v) for k, v in d["composition"].items()}
        out[el] = (comp, float(d["energy"]) + float(d.get("correction", 0.0)))
    return out


def _mp2020_correction(formula: str) -> float:
    """MP2020 correction (eV per formula given) of a GGA entry of ``formula`` (e.g. H2O: −0.687)."""
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry

    entry = ComputedEntry(
        formula, 0.0, parameters={"run_type": "GGA", "is_hubbard": False, "hubbards": {}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = MaterialsProject2020Compatibility(check_potcar=False).process_entry(entry)
    return float(out.correction) if out is not None else 0.0


def known_solids(
    store: str | Path,
    elements: Sequence[str],
    elemental_references: str | Path,
    *,
    exclude_ids: Sequence[str] = (),
) -> list[ComputedEntry]:
    """Known solids of a chemical space with total energies rebuilt on the MP scale.

    ``E/atom = E_f + Σ_el x_el μ_el`` from the store's formation energies and the MP elemental
    reference energies ``μ``; the elemental references are added as entries of their own
    (``entry_id`` ``mp-elemental-ref:<El>``). H2O entries carry the MP2020 H2O correction as
    their ``correction`` (the total energy is unchanged), as MP's H2O entries do.

    Args:
        store: an entry store (``matdisco.store`` format) with formation energies.
        elements: every element allowed in an entry (include H and O for Pourbaix diagrams).
        elemental_references: MP elemental reference entries (JSON, optionally gzipped).
        exclude_ids: store ids to leave out (e.g. entries with disputed formation energies).

    Raises:
        ValueError: an element has no MP elemental reference energy.
    """
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    from matdisco.store import read_attrs, read_entries

    els = set(elements)
    refs = mp_elemental_energies(elemental_references)
    missing = sorted(els - set(refs))
    if missing:
        raise ValueError(
            f"no MP elemental reference energy for {missing} in {elemental_references}"
        )
    mu = {el: refs[el][1] / sum(refs[el][0].values()) for el in els}
    df = read_entries(store, ["id", "composition", "chemsys", "formation_energy_per_atom"])
    excl = set(exclude_ids)
    prov = read_attrs(store).get("provenance", {})
    if isinstance(prov, dict):  # the bundled set lists entries whose upstream E_f disagree
        excl |= set(prov.get("formation_energy_disagree_ids", []))
    in_space = df["chemsys"].map(lambda c: set(str(c).split("-")) <= els).to_numpy(dtype=bool)
    ef = df["formation_energy_per_atom"].to_numpy(dtype=float)
    keep = in_space & np.isfinite(ef) & ~df["id"].isin(excl).to_numpy()
    h2o_corr = _mp2020_correction("H2O") if {"H", "O"} <= els else 0.0
    params = {"run_type": "GGA", "source": "store formation energy + MP elemental references"}
    out = []
    for rid, comp_s, e_f in zip(df["id"][keep], df["composition"][keep], ef[keep], strict=True):
        comp = Composition(comp_s)
        e_tot = (
            e_f + sum(comp.get_atomic_fraction(el) * mu[str(el)] for el in comp.elements)
        ) * comp.num_atoms
        corr = 0.0
        if comp.reduced_formula == "H2O":
            corr = h2o_corr * comp.get_reduced_composition_and_factor()[1]
        out.append(
            ComputedEntry(comp, e_tot - corr, correction=corr, entry_id=str(rid), parameters=params)
        )
    for el in sorted(els):
        comp_d, e = refs[el]
        out.append(
            ComputedEntry(
                Composition(comp_d), e, entry_id=f"mp-elemental-ref:{el}", parameters=params
            )
        )
    return out


def _ref_elements(ion_data: Sequence[dict[str, Any]], elements: Sequence[str]) -> set[str]:
    """Elements of the reference solids of the ions of ``elements`` (their solids are needed)."""
    from pymatgen.core.ion import Ion

    return {
        str(e)
        for rec in ion_references_for(ion_data, elements)
        for e in Ion.from_formula(rec["data"]["RefSolid"]).composition.elements
    }
