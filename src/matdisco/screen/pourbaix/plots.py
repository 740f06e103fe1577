"""Plots of the Pourbaix screen (matplotlib is imported only here)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matdisco.screen.pourbaix.diagram import she_potential
from matdisco.screen.pourbaix.references import HO as _HO
from matdisco.screen.pourbaix.references import _ref_elements, known_solids, load_ion_references
from matdisco.screen.pourbaix.system import (
    build_aqueous_system,
    candidate_pourbaix_entry,
    pourbaix_diagram,
)
from matdisco.settings import ScreenPourbaixSettings
from matdisco.store import atomic_write

if TYPE_CHECKING:
    from pymatgen.analysis.pourbaix_diagram import PourbaixDiagram, PourbaixEntry

__all__ = ["plot_candidate", "plot_candidate_pourbaix"]


def plot_candidate(
    path: str | Path,
    *,
    composition: str | None,
    e_above_hull: float,
    entry_id: str,
    title: str,
    settings: ScreenPourbaixSettings | Mapping[str, Any] | None,
    empty_reason: str = "",
) -> None:
    """Rebuild one candidate's Pourbaix diagram and plot it (:func:`plot_candidate_pourbaix`).

    ``composition`` None writes the "nothing to plot" figure with ``empty_reason``.
    """
    from pymatgen.core import Composition

    s = ScreenPourbaixSettings.coerce(settings)
    if composition is None:
        plot_candidate_pourbaix(path, None, None, title=None, settings=s, empty_reason=empty_reason)
        return
    comp = Composition(composition)
    els = tuple(sorted({str(e) for e in comp.elements} - _HO))
    ion_data = load_ion_references(s.ion_references)
    solids = known_solids(
        s.solids, set(els) | _HO | _ref_elements(ion_data, els), s.elemental_references
    )
    system = build_aqueous_system(solids, ion_data, els)
    pbx = pourbaix_diagram(system, comp, ion_concentration=s.ion_concentration)
    entry = candidate_pourbaix_entry(system, str(comp.formula), float(e_above_hull), entry_id)
    plot_candidate_pourbaix(path, pbx, entry, title=title, settings=s)


def plot_candidate_pourbaix(
    path: str | Path,
    pbx: PourbaixDiagram | None,
    entry: PourbaixEntry | None,
    *,
    title: str | None,
    settings: ScreenPourbaixSettings,
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
        ax.text(
            0.5, 0.5, empty_reason or "no candidate evaluated", ha="center", va="center", wrap=True
        )
        ax.set_axis_off()
    else:
        from pymatgen.analysis.pourbaix_diagram import PourbaixPlotter

        plotter = PourbaixPlotter(pbx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plotter.plot_entry_stability(
                entry,
                pH_range=(-1, 15),
                pH_resolution=60,
                V_range=(-1.5, 2.5),
                V_resolution=60,
                e_hull_max=1.0,
                ax=ax,
                limits=((-1, 15), (-1.5, 2.5)),
                label_fontsize=7,
            )
        ph = np.array([settings.ph_min, settings.ph_max], dtype=float)
        ax.plot(ph, she_potential(settings.potential_vs_rhe, ph), "w-", lw=2.5)
        ax.plot(
            ph,
            she_potential(settings.potential_vs_rhe, ph),
            "k:",
            lw=1.5,
            label=f"{settings.potential_vs_rhe:g} V vs RHE (screen)",
        )
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
