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

Modules: :mod:`~matdisco.screen.pourbaix.references` (ion / elemental reference data, known
solids on the MP scale, ion entries), :mod:`~matdisco.screen.pourbaix.system` (Pourbaix entries
of a chemical system, the candidate's entry, the diagram), :mod:`~matdisco.screen.pourbaix.diagram`
(ΔG_pbx along the U_RHE line), :mod:`~matdisco.screen.pourbaix.stage` (the stage) and
:mod:`~matdisco.screen.pourbaix.plots`. Settings: :class:`matdisco.settings.ScreenPourbaixSettings`.
"""

from __future__ import annotations

from matdisco.screen.pourbaix.diagram import PREFAC, DgPbx, PourbaixHull, dg_pbx, she_potential
from matdisco.screen.pourbaix.plots import plot_candidate, plot_candidate_pourbaix
from matdisco.screen.pourbaix.references import (
    KJ_PER_MOL_PER_EV,
    ion_entries,
    ion_references_for,
    known_solids,
    load_ion_references,
    mp_elemental_energies,
)
from matdisco.screen.pourbaix.stage import POURBAIX_COLUMNS, screen_pourbaix
from matdisco.screen.pourbaix.system import (
    AqueousSystem,
    build_aqueous_system,
    candidate_pourbaix_entry,
    pourbaix_diagram,
)

__all__ = [
    "KJ_PER_MOL_PER_EV",
    "POURBAIX_COLUMNS",
    "PREFAC",
    "AqueousSystem",
    "DgPbx",
    "PourbaixHull",
    "build_aqueous_system",
    "candidate_pourbaix_entry",
    "dg_pbx",
    "ion_entries",
    "ion_references_for",
    "known_solids",
    "load_ion_references",
    "mp_elemental_energies",
    "plot_candidate",
    "plot_candidate_pourbaix",
    "pourbaix_diagram",
    "screen_pourbaix",
    "she_potential",
]
