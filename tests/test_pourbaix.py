"""Pourbaix screening: ΔG_pbx against pymatgen on its own test data, and the offline entries
against mp-api's own construction (MPRester.get_pourbaix_entries with the same inputs)."""

from __future__ import annotations

import copy
import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from matdisco.screen import pourbaix as P
from matdisco.screen.pourbaix.references import _ref_elements
from matdisco.screen.pourbaix.system import _comp_dict
from matdisco.settings import ScreenPourbaixSettings

DATA = Path(__file__).parent / "data" / "pourbaix" / "pourbaix_test_data.json.gz"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def test_data():
    from pymatgen.analysis.pourbaix_diagram import PourbaixEntry

    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        raw = json.load(fh)
    return {k: [PourbaixEntry.from_dict(d) for d in v] for k, v in raw.items()}


def _pymatgen_dg_pbx(pbx, entry, u_rhe=1.5, n=281):
    """Brute force with pymatgen's scalar get_decomposition_energy on a fine pH grid (SHE scale)."""
    phs = np.linspace(0.0, 14.0, n)
    vals = [float(pbx.get_decomposition_energy(entry, ph, u_rhe - 0.0591 * ph)) for ph in phs]
    return max(vals)


def test_she_conversion():
    assert P.she_potential(1.5, 0.0) == pytest.approx(1.5)
    assert P.she_potential(1.5, 14.0) == pytest.approx(1.5 - 0.0591 * 14)
    assert np.allclose(P.she_potential(1.23, np.array([0.0, 7.0])), [1.23, 1.23 - 0.4137])


def test_dg_pbx_matches_pymatgen_zn(test_data):
    """Every Zn solid: our ΔG_pbx equals pymatgen's within 1 meV/atom (and matches pointwise)."""
    from pymatgen.analysis.pourbaix_diagram import PourbaixDiagram

    entries = test_data["Zn"]
    pbx = PourbaixDiagram(entries, filter_solids=True)
    solids = [e for e in entries if e.phase_type == "Solid"]
    assert len(solids) >= 5
    values = []
    for e in solids:
        ours = P.dg_pbx(pbx, e, potential_vs_rhe=1.5, ph_min=0, ph_max=14, n_ph=141)
        ref = _pymatgen_dg_pbx(pbx, e)
        assert ours.value == pytest.approx(ref, abs=1e-3), e.name
        # pointwise along the RHE line, not only the maximum
        ph = np.array([0.0, 3.3, 7.0, 12.1, 14.0])
        v = P.she_potential(1.5, ph)
        prof = P.PourbaixHull(pbx).decomposition_energy(e, ph, v)
        assert np.allclose(prof, pbx.get_decomposition_energy(e, ph, v), atol=1e-6)
        # convex along the line: the maximum is at an end of the pH range
        assert ours.value == pytest.approx(max(ours.at_ph_min, ours.at_ph_max), abs=1e-9)
        values.append(ours.value)
    assert min(values) >= -1e-9  # entries of the diagram never lie below its hull
    assert max(values) > 0.1  # and some are clearly unstable: the test can fail


def test_dg_pbx_matches_pymatgen_binary(test_data):
    """Ag-Te multi-element diagrams (MultiEntry hull) at two compositions."""
    from pymatgen.analysis.pourbaix_diagram import PourbaixDiagram

    entries = test_data["Ag-Te"]
    solids = [
        e
        for e in entries
        if e.phase_type == "Solid" and {str(x) for x in e.composition.elements} >= {"Ag", "Te"}
    ]
    by_comp = {}
    for e in solids:
        by_comp.setdefault(e.composition.reduced_formula, e)
    picked = sorted(by_comp.values(), key=lambda e: e.composition.reduced_formula)[:2]
    assert picked
    for e in picked:
        comp = _comp_dict(e.composition)
        pbx = PourbaixDiagram(
            entries, comp_dict=comp, conc_dict={k: 1e-6 for k in comp}, filter_solids=True
        )
        ours = P.dg_pbx(pbx, e, n_ph=141)
        assert ours.value == pytest.approx(_pymatgen_dg_pbx(pbx, e, n=141), abs=1e-3), e.name
        assert ours.decomposes_to


def test_wrong_composition_is_refused(test_data):
    from pymatgen.analysis.pourbaix_diagram import PourbaixDiagram

    entries = test_data["Ag-Te"]
    pbx = PourbaixDiagram(entries, comp_dict={"Ag": 0.5, "Te": 0.5}, filter_solids=True)
    wrong = next(
        e for e in entries if e.phase_type == "Solid" and e.composition.reduced_formula == "Ag"
    )
    with pytest.raises(ValueError, match="composition"):
        P.dg_pbx(pbx, wrong)


@pytest.fixture(scope="module")
def mn_inputs():
    """Bundled Mn-O-H solids (rebuilt MP-scale energies) and the Mn ion references."""
    d = ScreenPourbaixSettings()
    ion = P.load_ion_references(ROOT / d.ion_references)
    els = ("Mn",)
    space = set(els) | {"H", "O"} | _ref_elements(ion, els)
    solids = P.known_solids(ROOT / d.solids, space, ROOT / d.elemental_references)
    return solids, ion


def test_offline_entries_match_mp_api(mn_inputs):
    """Our offline construction = mp-api's MPRester.get_pourbaix_entries on the same inputs."""
    mprester = pytest.importorskip("mp_api.client.mprester")
    solids, ion = mn_inputs

    class OfflineRester:
        """Serves the bundled data where MPRester would query the API."""

        get_ion_entries = mprester.MPRester.get_ion_entries

        def get_ion_reference_data_for_chemsys(self, chemsys):
            return P.ion_references_for(ion, chemsys)

        def get_entries_in_chemsys(self, elements, additional_criteria=None):
            return [
                copy.deepcopy(e)
                for e in solids
                if {str(x) for x in e.composition.elements} <= set(elements)
            ]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = mprester.MPRester.get_pourbaix_entries(OfflineRester(), "Mn", solid_compat=None)
    system = P.build_aqueous_system(solids, ion, ["Mn"])
    ours = system.entries
    assert system.n_ions == len(P.ion_references_for(ion, ["Mn"])) > 5

    def key(e):
        return (e.phase_type, e.name if e.phase_type == "Ion" else e.entry_id)

    t = {key(e): e.energy for e in theirs}
    o = {key(e): e.energy for e in ours}
    assert set(t) == set(o)
    diff = max(abs(t[k] - o[k]) for k in t)
    assert diff < 1e-6
    # hydroxides are in, and the ion energies moved off the raw ΔG_f (the reference-solid shift)
    assert any(
        e.phase_type == "Solid" and "H" in {str(x) for x in e.composition.elements} for e in ours
    )


def test_candidate_entry_and_screen_ordering(mn_inputs):
    """A candidate on the known-solid hull and one 0.3 eV/atom above: ΔG_pbx grows by ~0.3."""
    solids, ion = mn_inputs
    system = P.build_aqueous_system(solids, ion, ["Mn"])
    pbx = P.pourbaix_diagram(system, "MnO2")
    on_hull = P.candidate_pourbaix_entry(system, "MnO2", 0.0, "c0")
    above = P.candidate_pourbaix_entry(system, "MnO2", 0.3, "c1")
    a = P.dg_pbx(pbx, on_hull)
    b = P.dg_pbx(pbx, above)
    assert b.value - a.value == pytest.approx(0.3, abs=1e-6)
    # beta-MnO2 (on the MP hull) is Pourbaix-stable somewhere on the 1.5 V_RHE line
    assert min(a.profile) == pytest.approx(0.0, abs=0.02)
    with pytest.raises(ValueError, match="outside"):
        P.candidate_pourbaix_entry(system, "MgO", 0.0, "bad")
