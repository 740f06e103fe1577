"""Aqueous stability of candidates: Pourbaix decomposition energy ΔG_pbx, built offline.

ΔG_pbx of a candidate is the largest free energy above the Pourbaix hull (eV/atom, pymatgen
``PourbaixDiagram.get_decomposition_energy``) on the line of fixed potential *vs RHE*
``U_RHE`` (default 1.5 V, the photoanode operating point) for pH from ``ph_min`` to ``ph_max``
(default 0-14).

**Potential scale.** pymatgen's ``PourbaixDiagram`` works on the SHE scale:
``G(pH, V) = G0 + npH·0.0591·pH + nPhi·V`` with ``V`` vs SHE and 0.0591 V/pH its constant
``PREFAC`` (ln 10·RT/F at 298 K). A fixed potential vs RHE is therefore the line
``V_SHE = U_RHE − 0.0591·pH`` (−0.0591·pH V shift from RHE to SHE), e.g. 1.5 V_RHE is
1.5 V_SHE at pH 0 and 0.673 V_SHE at pH 14.

Along that line each species' free energy is linear in pH and the Pourbaix hull (minimum
over stable species) is concave, so the candidate's energy above the hull is convex in pH: its
maximum lies at pH ``ph_min`` or ``ph_max``. :func:`dg_pbx` still evaluates a full pH grid
(for the profile and the plot) and reports where the maximum is.

**Entries, as the Materials Project builds them** (mp-api ``MPRester.get_pourbaix_entries`` and
``get_ion_entries``), but offline:

* Solids: known phases with *total energies on the MP2020-corrected scale*, rebuilt from a
  store's formation energies as ``E = E_f + Σ x_el μ_el`` with the MP elemental reference
  energies ``μ`` (bundled JSON), plus the elemental references themselves. The H2O entries
  carry MP2020's H2O correction as their ``correction`` (MP data do; the aqueous scheme reads
  it for hydrates). pymatgen's ``MaterialsProjectAqueousCompatibility`` (with
  ``solid_compat=None``: the energies are already corrected) then fits the H2 energy to the
  experimental ΔG_f(H2O) = −2.4583 eV, adds −TΔS to O2/H2O and adjusts hydrates. Solid
  Pourbaix energies are formation energies on that phase diagram.
* Ions: ``ΔG_f(ion)`` from the MP aqueous ion reference data (kJ/mol ÷ 96.485 → eV, mp-api's
  conversion) shifted by the difference between the computed and the experimental formation
  energy of the ion's reference solid (Persson et al., PRB 85, 235438 (2012)), times the
  ratio of the major element in the ion and in the solid.
* Candidate: its energy above hull from the relax stage (on the relax backend's own scale,
  against known phases on that scale) is put on top of the *known-solid* hull at its
  composition: ``E_cand = E_hull_surface(known solids) + e_above_hull``. So the candidate sits
  on the same MP-type scale as every other solid, and only its hull distance comes from the
  relaxation backend. It is left out of the diagram: ΔG_pbx < 0 means the candidate would
  itself become a Pourbaix-stable phase at the worst pH.

With the bundled data the known solids are MP (2018 database) formation energies, which carry
MP's legacy corrections, not MP2020 ones; the ``method`` field of the outputs says so.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.store import atomic_write

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.analysis.pourbaix_diagram import IonEntry, PourbaixDiagram, PourbaixEntry
    from pymatgen.entries.compatibility import MaterialsProjectAqueousCompatibility
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = [
    "PREFAC",
    "KJ_PER_MOL_PER_EV",
    "POURBAIX_DEFAULTS",
    "load_ion_references",
    "ion_references_for",
    "ion_entries",
    "mp_elemental_energies",
    "known_solids",
    "AqueousSystem",
    "build_aqueous_system",
    "candidate_pourbaix_entry",
    "pourbaix_diagram",
    "she_potential",
    "PourbaixHull",
    "DgPbx",
    "dg_pbx",
    "screen_pourbaix",
    "plot_candidate",
    "plot_candidate_pourbaix",
]

log = logging.getLogger(__name__)

#: pymatgen's Nernst prefactor ln(10)·RT/F at 298 K, V per pH unit (pourbaix_diagram.PREFAC)
PREFAC = 0.0591
#: kJ/mol per eV as used by mp-api's MPRester.get_ion_entries (ΔG / 96.485 → eV)
KJ_PER_MOL_PER_EV = 96.485
_HO = frozenset({"H", "O"})

#: defaults of the ``screen.pourbaix`` config section
POURBAIX_DEFAULTS: dict[str, Any] = {
    "potential_vs_rhe": 1.5,
    "ph_min": 0.0,
    "ph_max": 14.0,
    "n_ph": 141,
    "ion_concentration": 1.0e-6,
    "solids": "resources/bundled/mp2018_structures.h5",
    "ion_references": "resources/bundled/mp_aqueous_ion_references.json.gz",
    "elemental_references": "resources/bundled/mp_elemental_reference_entries_2023-02-07.json.gz",
    "max_candidates": 200,
}


def _read_json(path: str | Path) -> Any:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------------------
# reference data
# --------------------------------------------------------------------------------------


def load_ion_references(path: str | Path) -> list[dict[str, Any]]:
    """The MP aqueous ion reference records (MPContribs ``ion_ref_data`` format).

    Each record: ``formula`` (e.g. ``Mn[+2]``), ``data.MajElements``, ``data.RefSolid``,
    ``data.ΔGᶠ`` and ``data.ΔGᶠRefSolid`` (value + unit, kJ/mol), ``data.charge``.
    """
    data = _read_json(path)
    if not isinstance(data, list) or not data or "data" not in data[0]:
        raise ValueError(f"{path}: not a list of MP ion reference records")
    return data


def ion_references_for(ion_data: Sequence[dict[str, Any]], elements: Sequence[str]) -> list[dict[str, Any]]:
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
            raise ValueError(f"reference solid {d['RefSolid']} of {rec['formula']} not in the entries")
        stable_ref = min(refs, key=lambda x: x.energy_per_atom)  # first lowest, as mp-api's sorted()[0]
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

    entry = ComputedEntry(formula, 0.0, parameters={"run_type": "GGA", "is_hubbard": False, "hubbards": {}})
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
        raise ValueError(f"no MP elemental reference energy for {missing} in {elemental_references}")
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
        e_tot = (e_f + sum(comp.get_atomic_fraction(el) * mu[str(el)] for el in comp.elements)) * comp.num_atoms
        corr = 0.0
        if comp.reduced_formula == "H2O":
            corr = h2o_corr * comp.get_reduced_composition_and_factor()[1]
        out.append(ComputedEntry(comp, e_tot - corr, correction=corr, entry_id=str(rid), parameters=params))
    for el in sorted(els):
        comp_d, e = refs[el]
        out.append(ComputedEntry(Composition(comp_d), e, entry_id=f"mp-elemental-ref:{el}", parameters=params))
    return out


# --------------------------------------------------------------------------------------
# Pourbaix entries of a chemical system
# --------------------------------------------------------------------------------------


@dataclass
class AqueousSystem:
    """Pourbaix entries of one chemical system (non-H/O elements), ready for diagrams.

    Attributes:
        elements: the non-H/O elements.
        entries: ion and solid Pourbaix entries (energies: formation free energies, eV).
        ion_ref_pd: the aqueous-corrected phase diagram the entries were placed on.
        solid_pd: phase diagram of the known solids *without* aqueous adjustments (the
            hull a candidate's E_hull is measured against).
        compat: the fitted ``MaterialsProjectAqueousCompatibility`` (for candidate entries).
        skipped_ions: ion formulas left out (reference solid missing), with the reason.
        n_ions: ion entries; n_solids: solid entries.
    """

    elements: tuple[str, ...]
    entries: list[PourbaixEntry]
    ion_ref_pd: PhaseDiagram
    solid_pd: PhaseDiagram
    compat: MaterialsProjectAqueousCompatibility
    skipped_ions: list[str] = field(default_factory=list)

    @property
    def n_ions(self) -> int:
        """Number of ion entries."""
        return sum(e.phase_type == "Ion" for e in self.entries)

    @property
    def n_solids(self) -> int:
        """Number of solid entries."""
        return sum(e.phase_type == "Solid" for e in self.entries)


def _aqueous_compat() -> MaterialsProjectAqueousCompatibility:
    from pymatgen.entries.compatibility import MaterialsProjectAqueousCompatibility

    with warnings.catch_warnings():  # "You did not provide the required O2 and H2O energies"
        warnings.simplefilter("ignore")
        return MaterialsProjectAqueousCompatibility(solid_compat=None)


def build_aqueous_system(
    solids: Sequence[ComputedEntry], ion_data: Sequence[dict[str, Any]], elements: Sequence[str]
) -> AqueousSystem:
    """Ion and solid Pourbaix entries of a chemical system (mp-api ``get_pourbaix_entries``).

    Follows mp-api's construction with ``solid_compat=None`` (the solids' energies are on the
    MP2020 scale already): the solids of the ions' reference-solid elements + the system +
    O + H go through ``MaterialsProjectAqueousCompatibility``; ions are placed on that phase
    diagram (:func:`ion_entries`); solids become formation-energy entries, except pure H/O
    phases and phases with elements foreign to the system.

    Args:
        solids: known solids on the MP2020 scale including O2, H2, H2O (:func:`known_solids`).
        ion_data: ion reference records (all, or already filtered).
        elements: the non-H/O elements of the system (H/O are ignored if given).

    Raises:
        ValueError: the solids lack O2, H2 or H2O, or an element has no solid at all.
    """
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.analysis.pourbaix_diagram import PourbaixEntry
    from pymatgen.core import Element
    from pymatgen.core.ion import Ion
    from pymatgen.entries.computed_entries import ComputedEntry

    els = tuple(sorted(set(elements) - _HO))
    if not els:
        raise ValueError("a Pourbaix system needs at least one element other than H and O")
    formulas = {e.composition.reduced_formula for e in solids}
    for f in ("O2", "H2", "H2O"):
        if f not in formulas:
            raise ValueError(f"the known solids have no {f} entry: the aqueous scheme needs O2, H2 and H2O")
    data = ion_references_for(ion_data, els)
    kept, skipped = [], []
    for rec in data:
        if rec["data"]["RefSolid"] in formulas:
            kept.append(rec)
        else:
            skipped.append(f"{rec['formula']} (reference solid {rec['data']['RefSolid']} not among the known solids)")
    if skipped:
        log.warning("ions left out of %s: %s", "-".join(els), "; ".join(skipped))
    ion_ref_elts = {str(e) for rec in kept for e in Ion.from_formula(rec["data"]["RefSolid"]).composition.elements}
    space = ion_ref_elts | set(els) | _HO
    chosen = [copy.deepcopy(e) for e in solids if {str(x) for x in e.composition.elements} <= space]
    present = {str(x) for e in chosen for x in e.composition.elements}
    if not set(els) <= present:
        raise ValueError(f"no known solid contains {sorted(set(els) - present)}")
    compat = _aqueous_compat()
    with warnings.catch_warnings():  # "Failed to guess oxidation states"
        warnings.simplefilter("ignore")
        processed = compat.process_entries(chosen, inplace=True)
    ion_ref_pd = PhaseDiagram(processed)
    entries: list[PourbaixEntry] = [PourbaixEntry(e, f"ion-{n}") for n, e in enumerate(ion_entries(ion_ref_pd, kept))]
    extra = {Element(x) for x in ion_ref_elts} - {Element(s) for s in els} - {Element("H"), Element("O")}
    for entry in processed:
        entry_elts = set(entry.composition.elements)
        if entry_elts <= {Element("H"), Element("O")} or extra & entry_elts:
            continue
        form_e = ion_ref_pd.get_form_energy(entry)
        entries.append(PourbaixEntry(ComputedEntry(entry.composition, form_e, entry_id=entry.entry_id)))
    raw = [e for e in solids if {str(x) for x in e.composition.elements} <= set(els) | _HO]
    solid_pd = PhaseDiagram(raw)
    return AqueousSystem(els, entries, ion_ref_pd, solid_pd, compat, skipped)


def candidate_pourbaix_entry(
    system: AqueousSystem, composition: str, e_above_hull: float, entry_id: str
) -> PourbaixEntry:
    """A candidate as a solid Pourbaix entry on the system's scale.

    Its total energy per atom is the known-solid hull energy at its composition plus its
    ``e_above_hull`` (eV/atom); then the same aqueous adjustments as every known solid, and
    its formation energy on the aqueous phase diagram.
    """
    from pymatgen.analysis.pourbaix_diagram import PourbaixEntry
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    comp = Composition(composition)
    if not math.isfinite(e_above_hull):
        raise ValueError(f"{entry_id}: e_above_hull is not finite")
    unknown = {str(e) for e in comp.elements} - {str(e) for e in system.solid_pd.elements}
    if unknown:
        raise ValueError(f"{entry_id}: elements {sorted(unknown)} are outside the system {system.elements}")
    e_pa = system.solid_pd.get_hull_energy_per_atom(comp) + float(e_above_hull)
    entry = ComputedEntry(comp, e_pa * comp.num_atoms, entry_id=entry_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processed = system.compat.process_entry(entry)
    if processed is None:  # pragma: no cover - aqueous compatibility rejects nothing it can process
        raise ValueError(f"{entry_id}: MaterialsProjectAqueousCompatibility rejected the entry")
    form_e = system.ion_ref_pd.get_form_energy(processed)
    return PourbaixEntry(ComputedEntry(comp, form_e, entry_id=entry_id), entry_id=entry_id)


def _comp_dict(composition: Any) -> dict[str, float]:
    from pymatgen.core import Composition

    comp = Composition(composition)
    amounts = {str(el): float(amt) for el, amt in comp.items() if str(el) not in _HO}
    total = sum(amounts.values())
    return {el: round(a / total, 10) for el, a in sorted(amounts.items())}


def pourbaix_diagram(
    system: AqueousSystem, composition: Any, *, ion_concentration: float = 1e-6
) -> PourbaixDiagram:
    """pymatgen PourbaixDiagram of ``system`` at the non-H/O composition of ``composition``.

    Solids are filtered by stability (``filter_solids=True``, as MP does); every element's
    ions are at ``ion_concentration`` (mol/L).
    """
    from pymatgen.analysis.pourbaix_diagram import PourbaixDiagram

    comp = _comp_dict(composition)
    conc = {el: float(ion_concentration) for el in system.elements}
    present = {str(x) for e in system.entries for x in e.composition.elements} - _HO
    entries = [e for e in system.entries if {str(x) for x in e.composition.elements} - _HO <= set(comp)]
    if not set(comp) <= present:
        raise ValueError(f"no Pourbaix entries for {sorted(set(comp) - present)}")
    return PourbaixDiagram(entries, comp_dict=comp, conc_dict={k: conc[k] for k in comp}, filter_solids=True)


# --------------------------------------------------------------------------------------
# ΔG_pbx along a line of fixed potential vs RHE
# --------------------------------------------------------------------------------------


def she_potential(u_rhe: float, ph: np.ndarray | float) -> np.ndarray | float:
    """Potential vs SHE (pymatgen's scale) of ``u_rhe`` V vs RHE at ``ph``: ``U_RHE − 0.0591·pH``."""
    return u_rhe - PREFAC * np.asarray(ph, dtype=float) if np.ndim(ph) else u_rhe - PREFAC * float(ph)


class PourbaixHull:
    """The Pourbaix hull of a diagram as plane coefficients, evaluated with NumPy.

    Every stable (multi-)entry *j* contributes the plane ``g_j(pH, V) = c_j + a_j·pH + b_j·V``
    (normalised per non-H/O atom, eV); the hull is their minimum. Coefficients are read off
    ``normalized_energy_at_conditions`` at three points, so multi-entries and concentration
    terms are handled exactly as pymatgen does.
    """

    def __init__(self, pbx: PourbaixDiagram) -> None:
        self.entries = list(pbx.stable_entries)
        self.comp = pbx._elt_comp  # the composition pymatgen's own check uses
        self.c, self.a, self.b = self._planes(self.entries)

    @staticmethod
    def _planes(entries: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.array([e.normalized_energy_at_conditions(0.0, 0.0) for e in entries], dtype=float)
        a = np.array([e.normalized_energy_at_conditions(1.0, 0.0) for e in entries], dtype=float) - c
        b = np.array([e.normalized_energy_at_conditions(0.0, 1.0) for e in entries], dtype=float) - c
        return c, a, b

    def energy(self, ph: np.ndarray, v_she: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hull energy (eV per non-H/O atom) and index of the lowest plane at each point."""
        g = self.c[:, None] + self.a[:, None] * np.ravel(ph)[None, :] + self.b[:, None] * np.ravel(v_she)[None, :]
        idx = np.argmin(g, axis=0)
        return g[idx, np.arange(g.shape[1])], idx

    def decomposition_energy(self, entry: PourbaixEntry, ph: np.ndarray, v_she: np.ndarray) -> np.ndarray:
        """Energy of ``entry`` above the hull, eV/atom (pymatgen ``get_decomposition_energy``)."""
        from pymatgen.core import Composition

        ent = Composition({el: amt for el, amt in entry.composition.items() if str(el) not in _HO})
        if ent.fractional_composition != Composition(self.comp).fractional_composition:
            raise ValueError("composition of the entry does not match the Pourbaix diagram")
        (c,), (a,), (b,) = self._planes([entry])
        ph = np.ravel(np.asarray(ph, dtype=float))
        v = np.ravel(np.asarray(v_she, dtype=float))
        hull, _ = self.energy(ph, v)
        return (c + a * ph + b * v - hull) / entry.normalization_factor / entry.composition.num_atoms


@dataclass
class DgPbx:
    """ΔG_pbx of one entry along ``U_RHE``: the maximum, where it is, and the profile.

    Attributes:
        value: max over the pH grid of the energy above the Pourbaix hull, eV/atom.
        ph_at_max: pH of that maximum.
        v_she_at_max: the potential there, V vs SHE.
        at_ph_min, at_ph_max: the values at the two ends of the pH range (eV/atom).
        decomposes_to: names of the hull species at the maximum.
        ph, profile: the grid and the energy above the hull along it.
    """

    value: float
    ph_at_max: float
    v_she_at_max: float
    at_ph_min: float
    at_ph_max: float
    decomposes_to: str
    ph: np.ndarray
    profile: np.ndarray


def dg_pbx(
    pbx: PourbaixDiagram | PourbaixHull,
    entry: PourbaixEntry,
    *,
    potential_vs_rhe: float = 1.5,
    ph_min: float = 0.0,
    ph_max: float = 14.0,
    n_ph: int = 141,
) -> DgPbx:
    """Maximum over pH of ``entry``'s energy above the Pourbaix hull at a fixed potential vs RHE.

    Args:
        pbx: the diagram (or its :class:`PourbaixHull`) at the entry's composition.
        entry: the candidate's Pourbaix entry.
        potential_vs_rhe: electrode potential vs RHE, V (converted to SHE per point:
            ``V_SHE = U_RHE − 0.0591·pH``).
        ph_min, ph_max: pH range (both ends are evaluated).
        n_ph: grid points over the range (>= 2).

    Returns:
        A :class:`DgPbx` (eV/atom).
    """
    hull = pbx if isinstance(pbx, PourbaixHull) else PourbaixHull(pbx)
    ph = np.linspace(float(ph_min), float(ph_max), max(int(n_ph), 2))
    v = she_potential(potential_vs_rhe, ph)
    prof = hull.decomposition_energy(entry, ph, v)
    i = int(np.argmax(prof))
    _, idx = hull.energy(ph[i : i + 1], v[i : i + 1])
    stable = hull.entries[int(idx[0])]
    names = [e.name for e in getattr(stable, "entry_list", [stable])]
    return DgPbx(
        float(prof[i]), float(ph[i]), float(v[i]), float(prof[0]), float(prof[-1]), " + ".join(names), ph, prof
    )


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------

POURBAIX_COLUMNS = (
    "id",
    "formula",
    "composition",
    "e_above_hull",
    "energy_scale",
    "dG_pbx",
    "dG_pbx_ph_at_max",
    "dG_pbx_v_she_at_max",
    "dG_pbx_at_ph_min",
    "dG_pbx_at_ph_max",
    "dG_pbx_decomposes_to",
    "n_ions",
    "n_solids",
    "status",
    "reason",
)


def _method_text(settings: dict[str, Any], solids_source: str) -> str:
    return (
        f"max over pH {settings['ph_min']:g}-{settings['ph_max']:g} at {settings['potential_vs_rhe']:g} V vs RHE "
        f"(V_SHE = U_RHE - {PREFAC}*pH) of the energy above the pymatgen Pourbaix hull; ions from MP aqueous ion "
        f"references at {settings['ion_concentration']:g} M; known solids from {solids_source} formation energies + "
        "MP elemental references with MaterialsProjectAqueousCompatibility; candidate = known-solid hull + its "
        "e_above_hull (relax backend scale)"
    )


def screen_pourbaix(
    *,
    candidates: str | Path,
    out_csv: str | Path,
    out_summary: str | Path,
    settings: dict[str, Any],
    max_e_above_hull: float,
) -> pd.DataFrame:
    """ΔG_pbx of every candidate that passes the E_hull filter.

    Args:
        candidates: relaxed candidates (entry-store format) with ``e_above_hull`` (eV/atom)
            and ``energy_scale``; candidates above ``max_e_above_hull`` or without an
            E_hull are listed with status ``skipped``.
        out_csv: per-candidate table (:data:`POURBAIX_COLUMNS`).
        out_summary: JSON with settings, data hashes, counts, timings and the candidate with
            the lowest ΔG_pbx.
        settings: ``screen.pourbaix`` (see :data:`POURBAIX_DEFAULTS`).
        max_e_above_hull: E_hull filter, eV/atom.
    """
    from pymatgen.core import Composition

    from matdisco.provenance import sha256_file
    from matdisco.store import read_entries

    t0 = time.perf_counter()
    s = {**POURBAIX_DEFAULTS, **settings}
    cand = read_entries(candidates)
    for c in ("e_above_hull", "energy_scale", "composition", "formula"):
        if c not in cand.columns:
            cand[c] = np.nan if c == "e_above_hull" else ""
    eh = cand["e_above_hull"].to_numpy(dtype=float)
    passing = np.isfinite(eh) & (eh <= max_e_above_hull + 1e-9)
    order = np.argsort(np.where(passing, eh, np.inf), kind="stable")
    chosen = [i for i in order if passing[i]][: int(s["max_candidates"])]
    rows: list[dict[str, Any]] = []
    for i, r in cand.iterrows():
        base = {c: r[c] for c in ("id", "formula", "composition", "e_above_hull", "energy_scale")}
        if not passing[i]:
            why = "no E_hull" if not np.isfinite(eh[i]) else f"E_hull {eh[i]:.3f} > {max_e_above_hull:g} eV/atom"
            rows.append({**base, "status": "skipped", "reason": why})
        elif i not in set(chosen):
            rows.append({**base, "status": "skipped", "reason": f"beyond max_candidates={s['max_candidates']}"})
    ion_data = load_ion_references(s["ion_references"])
    systems: dict[tuple[str, ...], AqueousSystem | Exception] = {}
    hulls: dict[tuple[tuple[str, float], ...], PourbaixHull | Exception] = {}
    diagrams: dict[tuple[tuple[str, float], ...], Any] = {}
    best: tuple[float, Any, Any, str] | None = None
    t_build = 0.0
    for i in chosen:
        r = cand.loc[i]
        base = {c: r[c] for c in ("id", "formula", "composition", "e_above_hull", "energy_scale")}
        comp = Composition(str(r["composition"]) or str(r["formula"]))
        els = tuple(sorted({str(e) for e in comp.elements} - _HO))
        if not els:
            rows.append({**base, "status": "failed", "reason": "no element other than H and O"})
            continue
        tb = time.perf_counter()
        if els not in systems:
            try:
                solids = known_solids(s["solids"], set(els) | _HO | _ref_elements(ion_data, els), s["elemental_references"])
                systems[els] = build_aqueous_system(solids, ion_data, els)
            except Exception as err:  # noqa: BLE001 - reported per candidate
                log.warning("no Pourbaix system for %s: %s", "-".join(els), err)
                systems[els] = err
        system = systems[els]
        if isinstance(system, Exception):
            rows.append({**base, "status": "failed", "reason": f"Pourbaix system: {system}"})
            continue
        key = tuple(_comp_dict(comp).items())
        if key not in hulls:
            try:
                diagrams[key] = pourbaix_diagram(system, comp, ion_concentration=s["ion_concentration"])
                hulls[key] = PourbaixHull(diagrams[key])
            except Exception as err:  # noqa: BLE001
                hulls[key] = err
        t_build += time.perf_counter() - tb
        hull = hulls[key]
        if isinstance(hull, Exception):
            rows.append({**base, "status": "failed", "reason": f"Pourbaix diagram: {hull}"})
            continue
        try:
            entry = candidate_pourbaix_entry(system, str(comp.formula), float(r["e_above_hull"]), str(r["id"]))
            res = dg_pbx(
                hull, entry, potential_vs_rhe=s["potential_vs_rhe"], ph_min=s["ph_min"], ph_max=s["ph_max"], n_ph=s["n_ph"]
            )
        except Exception as err:  # noqa: BLE001
            rows.append({**base, "status": "failed", "reason": str(err)})
            continue
        rows.append(
            {
                **base,
                "dG_pbx": res.value,
                "dG_pbx_ph_at_max": res.ph_at_max,
                "dG_pbx_v_she_at_max": res.v_she_at_max,
                "dG_pbx_at_ph_min": res.at_ph_min,
                "dG_pbx_at_ph_max": res.at_ph_max,
                "dG_pbx_decomposes_to": res.decomposes_to,
                "n_ions": system.n_ions,
                "n_solids": system.n_solids,
                "status": "ok",
                "reason": "",
            }
        )
        rank = (res.value, float(r["e_above_hull"]))
        if best is None or rank < best[0]:
            best = (rank, diagrams[key], entry, str(r["formula"]))
    table = pd.DataFrame(rows)
    for c in POURBAIX_COLUMNS:
        if c not in table.columns:
            table[c] = np.nan
    table = table[list(POURBAIX_COLUMNS)]
    with atomic_write(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    ok = table["status"] == "ok"
    summary = {
        "method": _method_text(s, str(s["solids"])),
        "settings": {k: s[k] for k in POURBAIX_DEFAULTS},
        "max_e_above_hull": max_e_above_hull,
        "potential_scale": "pymatgen PourbaixDiagram uses V vs SHE; V_SHE = U_RHE - 0.0591*pH",
        "data": {k: {"path": str(s[k]), "sha256": sha256_file(s[k])} for k in ("solids", "ion_references", "elemental_references")},
        "n_candidates": len(cand),
        "n_evaluated": int(ok.sum()),
        "n_failed": int((table["status"] == "failed").sum()),
        "n_skipped": int((table["status"] == "skipped").sum()),
        "n_systems": len(systems),
        "n_diagrams": len(hulls),
        "lowest_dG_pbx": None
        if best is None
        else {"formula": best[3], "id": best[2].entry_id, "dG_pbx": best[0][0], "e_above_hull": best[0][1]},
        "seconds": {"total": round(time.perf_counter() - t0, 2), "diagrams": round(t_build, 2)},
    }
    with atomic_write(out_summary) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    log.info(
        "ΔG_pbx of %d candidates (%d failed, %d skipped) in %.1f s",
        summary["n_evaluated"], summary["n_failed"], summary["n_skipped"], summary["seconds"]["total"],
    )
    return table


def _ref_elements(ion_data: Sequence[dict[str, Any]], elements: Sequence[str]) -> set[str]:
    """Elements of the reference solids of the ions of ``elements`` (their solids are needed)."""
    from pymatgen.core.ion import Ion

    return {
        str(e) for rec in ion_references_for(ion_data, elements) for e in Ion.from_formula(rec["data"]["RefSolid"]).composition.elements
    }


def plot_candidate(
    path: str | Path,
    *,
    composition: str | None,
    e_above_hull: float,
    entry_id: str,
    title: str,
    settings: dict[str, Any],
    empty_reason: str = "",
) -> None:
    """Rebuild one candidate's Pourbaix diagram and plot it (:func:`plot_candidate_pourbaix`).

    ``composition`` None writes the "nothing to plot" figure with ``empty_reason``.
    """
    from pymatgen.core import Composition

    s = {**POURBAIX_DEFAULTS, **settings}
    if composition is None:
        plot_candidate_pourbaix(path, None, None, title=None, settings=s, empty_reason=empty_reason)
        return
    comp = Composition(composition)
    els = tuple(sorted({str(e) for e in comp.elements} - _HO))
    ion_data = load_ion_references(s["ion_references"])
    solids = known_solids(s["solids"], set(els) | _HO | _ref_elements(ion_data, els), s["elemental_references"])
    system = build_aqueous_system(solids, ion_data, els)
    pbx = pourbaix_diagram(system, comp, ion_concentration=s["ion_concentration"])
    entry = candidate_pourbaix_entry(system, str(comp.formula), float(e_above_hull), entry_id)
    plot_candidate_pourbaix(path, pbx, entry, title=title, settings=s)


def plot_candidate_pourbaix(
    path: str | Path,
    pbx: PourbaixDiagram | None,
    entry: PourbaixEntry | None,
    *,
    title: str | None,
    settings: dict[str, Any],
    empty_reason: str = "",
) -> None:
    """Pourbaix diagram with the candidate's energy above the hull as a colour map.

    The line of the screening potential vs RHE (pH range of the screen) is drawn in white;
    without a diagram a figure saying why is written (the report always has the file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    if pbx is None or entry is None:
        ax.text(0.5, 0.5, empty_reason or "no candidate evaluated", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    else:
        from pymatgen.analysis.pourbaix_diagram import PourbaixPlotter

        plotter = PourbaixPlotter(pbx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plotter.plot_entry_stability(
                entry, pH_range=(-1, 15), pH_resolution=60, V_range=(-1.5, 2.5), V_resolution=60,
                e_hull_max=1.0, ax=ax, limits=((-1, 15), (-1.5, 2.5)), label_fontsize=7,
            )
        ph = np.array([settings["ph_min"], settings["ph_max"]], dtype=float)
        ax.plot(ph, she_potential(settings["potential_vs_rhe"], ph), "w-", lw=2.5)
        ax.plot(ph, she_potential(settings["potential_vs_rhe"], ph), "k:", lw=1.5,
                label=f"{settings['potential_vs_rhe']:g} V vs RHE (screen)")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_title(title or "", fontsize=9)
        ax.set_xlabel("pH")
        ax.set_ylabel("E (V vs SHE)")
        for t in ax.texts:
            t.set_fontsize(7)
    fig.tight_layout()
    with atomic_write(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
