"""Pourbaix entries of a chemical system (ions + solids, mp-api's construction offline), a
candidate's entry on that scale, and the pymatgen PourbaixDiagram at a composition.

See :mod:`matdisco.screen.pourbaix` for the energy scales.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from matdisco.screen.pourbaix.references import HO as _HO
from matdisco.screen.pourbaix.references import ion_entries, ion_references_for

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.analysis.pourbaix_diagram import PourbaixDiagram, PourbaixEntry
    from pymatgen.entries.compatibility import MaterialsProjectAqueousCompatibility
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = ["AqueousSystem", "build_aqueous_system", "candidate_pourbaix_entry", "pourbaix_diagram"]

log = logging.getLogger("matdisco.screen.pourbaix")


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
            raise ValueError(
                f"the known solids have no {f} entry: the aqueous scheme needs O2, H2 and H2O"
            )
    data = ion_references_for(ion_data, els)
    kept, skipped = [], []
    for rec in data:
        if rec["data"]["RefSolid"] in formulas:
            kept.append(rec)
        else:
            skipped.append(
                f"{rec['formula']} (reference solid {rec['data']['RefSolid']} "
                "not among the known solids)"
            )
    if skipped:
        log.warning("ions left out of %s: %s", "-".join(els), "; ".join(skipped))
    ion_ref_elts = {
        str(e)
        for rec in kept
        for e in Ion.from_formula(rec["data"]["RefSolid"]).composition.elements
    }
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
    entries: list[PourbaixEntry] = [
        PourbaixEntry(e, f"ion-{n}") for n, e in enumerate(ion_entries(ion_ref_pd, kept))
    ]
    extra = (
        {Element(x) for x in ion_ref_elts}
        - {Element(s) for s in els}
        - {Element("H"), Element("O")}
    )
    for entry in processed:
        entry_elts = set(entry.composition.elements)
        if entry_elts <= {Element("H"), Element("O")} or extra & entry_elts:
            continue
        form_e = ion_ref_pd.get_form_energy(entry)
        entries.append(
            PourbaixEntry(ComputedEntry(entry.composition, form_e, entry_id=entry.entry_id))
        )
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
        raise ValueError(
            f"{entry_id}: elements {sorted(unknown)} are outside the system {system.elements}"
        )
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
    entries = [
        e for e in system.entries if {str(x) for x in e.composition.elements} - _HO <= set(comp)
    ]
    if not set(comp) <= present:
        raise ValueError(f"no Pourbaix entries for {sorted(set(comp) - present)}")
    return PourbaixDiagram(
        entries, comp_dict=comp, conc_dict={k: conc[k] for k in comp}, filter_solids=True
    )
