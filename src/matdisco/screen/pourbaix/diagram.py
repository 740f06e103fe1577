"""ΔG_pbx along a line of fixed potential vs RHE: the Pourbaix hull as NumPy planes.

See :mod:`matdisco.screen.pourbaix` for the potential scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from matdisco.screen.pourbaix.references import HO as _HO

if TYPE_CHECKING:
    from pymatgen.analysis.pourbaix_diagram import PourbaixDiagram, PourbaixEntry

__all__ = ["PREFAC", "DgPbx", "PourbaixHull", "dg_pbx", "she_potential"]

#: pymatgen's Nernst prefactor ln(10)·RT/F at 298 K, V per pH unit (pourbaix_diagram.PREFAC)
PREFAC = 0.0591


def she_potential(u_rhe: float, ph: np.ndarray | float) -> np.ndarray | float:
    """Potential vs SHE (pymatgen's scale) of ``u_rhe`` V vs RHE at ``ph``:
    ``U_RHE − 0.0591·pH``."""
    return (
        u_rhe - PREFAC * np.asarray(ph, dtype=float) if np.ndim(ph) else u_rhe - PREFAC * float(ph)
    )


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
        a = (
            np.array([e.normalized_energy_at_conditions(1.0, 0.0) for e in entries], dtype=float)
            - c
        )
        b = (
            np.array([e.normalized_energy_at_conditions(0.0, 1.0) for e in entries], dtype=float)
            - c
        )
        return c, a, b

    def energy(self, ph: np.ndarray, v_she: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hull energy (eV per non-H/O atom) and index of the lowest plane at each point."""
        g = (
            self.c[:, None]
            + self.a[:, None] * np.ravel(ph)[None, :]
            + self.b[:, None] * np.ravel(v_she)[None, :]
        )
        idx = np.argmin(g, axis=0)
        return g[idx, np.arange(g.shape[1])], idx

    def decomposition_energy(
        self, entry: PourbaixEntry, ph: np.ndarray, v_she: np.ndarray
    ) -> np.ndarray:
        """Energy of ``entry`` above the hull, eV/atom (pymatgen ``get_decomposition_energy``)."""
        from pymatgen.core import Composition

        ent = Composition({el: amt for el, amt in entry.composition.items() if str(el) not in _HO})
        if ent.fractional_composition != Composition(self.comp).fractional_composition:
            raise ValueError("composition of the entry does not match the Pourbaix diagram")
        (c,), (a,), (b,) = self._planes([entry])
        ph = np.ravel(np.asarray(ph, dtype=float))
        v = np.ravel(np.asarray(v_she, dtype=float))
        hull, _ = self.energy(ph, v)
        return (
            (c + a * ph + b * v - hull) / entry.normalization_factor / entry.composition.num_atoms
        )


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
        float(prof[i]),
        float(ph[i]),
        float(v[i]),
        float(prof[0]),
        float(prof[-1]),
        " + ".join(names),
        ph,
        prof,
    )
