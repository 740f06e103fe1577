"""Substitution rules of the template generator: element mapping, site splitting, volumes.

Everything that turns one template (a store row) and one target composition into a
substituted structure: the cost of an element pair (modified Pettifor distance plus the
oxidation-state penalty), same-stoichiometry element bijections, the assignment of
symmetry-distinct site orbits to target elements (site splitting / merging), the target's
oxidation states, and the volume rules (fitted element volumes, Shannon ionic radii, or the
template's volume). :class:`SubstitutionRules` holds them as methods of
:class:`matdisco.generate.templates.TemplateLibrary` (its base class); see the package
docstring for the method.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from matdisco.core.composition import (
    MAX_Z,
    first_oxidation_guess,
    parse_formula,
    pettifor_numbers,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from matdisco.settings import TemplateSettings
    from matdisco.store import StructureArrays

_MAX_Z = MAX_Z
_MAX_PERMUTATIONS = 120
_MAX_ORBITS = 16
#: weight of the ion-size / site-room mismatch in the site-splitting cost (a tie-breaker:
#: modified-Pettifor numbers differ by integers)
_SIZE_WEIGHT = 0.1


# --------------------------------------------------------------------------------------
# element scales
# --------------------------------------------------------------------------------------


def _ionic_volume(symbol: str, ox: float | None) -> float:
    """Cube of the Shannon ionic radius (atomic radius when unknown), Angstrom^3."""
    from pymatgen.core import Element, Species

    r = None
    if ox is not None and abs(ox - round(ox)) < 1e-6 and round(ox) != 0:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = Species(symbol, int(round(ox))).ionic_radius
        except Exception:  # noqa: BLE001
            r = None
    if r is None:
        el = Element(symbol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = el.atomic_radius or el.atomic_radius_calculated or 1.5
    return float(r) ** 3


@dataclass
class _Option:
    """A (template, mapping) pair before its structure is built."""

    cost: float
    elmd: float
    row: int
    method: str
    species: list[int]  # new atomic number per site of the template cell
    mapping: str


def _fallback_mode(value: bool | str) -> str:
    """``fallback`` setting as one of never / when_needed / always."""
    if value is True:
        return "when_needed"
    if value is False or value is None:
        return "never"
    if value not in {"never", "when_needed", "always"}:
        raise ValueError(f"fallback {value!r}: use true/false, never, when_needed or always")
    return str(value)


def _symbol(z: int) -> str:
    from pymatgen.core import Element

    return Element.from_Z(int(z)).symbol


def _anon_key(counts: np.ndarray) -> str:
    """Anonymous stoichiometry key: sorted reduced amounts, e.g. '1-2-4' for MgMn2O4."""
    c = np.asarray(counts)
    c = c[c > 0]
    if not len(c):
        return ""
    c = np.round(c).astype(np.int64)
    g = np.gcd.reduce(c)
    return "-".join(str(int(x)) for x in sorted(c // g))


class SubstitutionRules:
    """Element mapping, site splitting and volume rules over a store's structures.

    The base class of :class:`~matdisco.generate.templates.TemplateLibrary`, which sets the
    attributes declared here.
    """

    settings: TemplateSettings
    arrays: StructureArrays
    counts: np.ndarray
    nsites: np.ndarray
    formula: np.ndarray
    oxidation_states: dict[str, list[int]]
    element_volume: np.ndarray
    _orbits: dict[int, list[tuple[int, list[int], float]] | None]

    # ---------------------------------------------------------------- volumes

    def _fit_element_volumes(self) -> np.ndarray:
        """Additive volume per atom of each element (Angstrom^3), fitted to the store's cells.

        Non-negative least squares of ``V_cell / n = sum_e x_e v_e`` (``x_e`` atom fractions)
        over all entries, regularised towards a prior ``c * r_e^3`` (atomic radius cubed, ``c``
        fitted to the same cells) with the weight of one entry per element, so that elements
        seen rarely, or a tiny store, still get sensible volumes.
        """
        from scipy.optimize import nnls

        cube = np.array([_ionic_volume(_symbol(z), None) if z else np.nan for z in range(_MAX_Z)])
        vols = np.abs(np.linalg.det(self.arrays.lattice)) if len(self.arrays) else np.zeros(0)
        present = np.flatnonzero(self.counts.any(axis=0))
        ok = np.isfinite(vols) & (vols > 0) & (self.nsites > 0)
        if not len(present) or not ok.any():
            return cube * 4.0
        frac = self.counts[ok][:, present] / self.nsites[ok, None]
        per_atom = vols[ok] / self.nsites[ok]
        prior_r3 = frac @ cube[present]
        c = float(prior_r3 @ per_atom / (prior_r3 @ prior_r3))
        p = len(present)
        a = np.vstack([frac, np.eye(p)])
        b = np.concatenate([per_atom, c * cube[present]])
        # NNLS on the triangular factor of [A | b] (same solution, a p x p problem)
        r_aug = np.linalg.qr(np.column_stack([a, b]), mode="r")
        sol, _ = nnls(r_aug[:p, :p], r_aug[:p, p], maxiter=50 * p)
        out = cube * c
        out[present] = np.where(sol > 0.1 * c * cube[present], sol, c * cube[present])
        return out

    def _site_volume(self, z: int, symbol_ox: dict[str, float]) -> float:
        if self.settings.volume_rule == "element_volumes":
            return float(self.element_volume[z])
        sym = _symbol(z)
        return _ionic_volume(sym, symbol_ox.get(sym))

    # ---------------------------------------------------------------- search

    def _ox_target(self, formula: str) -> dict[str, float]:
        els = {str(e) for e in parse_formula(formula).elements}
        allowed = {
            k: tuple(range(v[0], v[1] + 1)) for k, v in self.oxidation_states.items() if k in els
        }
        key = tuple(sorted(allowed.items()))
        return first_oxidation_guess(formula, key)

    def _pair_cost(self, za: int, zt: int, ox_a: dict[str, float], ox_t: dict[str, float]) -> float:
        petti = pettifor_numbers()
        cost = abs(float(petti[za]) - float(petti[zt]))
        sa, st = _symbol(za), _symbol(zt)
        if self.settings.oxidation_weight and sa in ox_a and st in ox_t:
            cost += self.settings.oxidation_weight * abs(ox_a[sa] - ox_t[st])
        return cost

    def _substitution_options(
        self, row: int, target: dict[int, int], ox_t: dict[str, float]
    ) -> list[_Option]:
        """Element bijections (amounts preserved) of one same-stoichiometry template."""
        tz = np.flatnonzero(self.counts[row])
        tc = self.counts[row, tz]
        g = np.gcd.reduce(tc)
        red = dict(zip(tz.tolist(), (tc // g).tolist(), strict=True))
        tgt_z = list(target)
        ox_a = first_oxidation_guess(self.formula[row]) if self.settings.oxidation_weight else {}
        n = int(tc.sum())
        options = []
        for k, perm in enumerate(itertools.permutations(tgt_z)):
            if k >= _MAX_PERMUTATIONS:
                break
            mapping = dict(zip(red, perm, strict=True))
            if any(red[a] != target[t] for a, t in mapping.items()):
                continue
            cost = sum(
                self.counts[row, a] * self._pair_cost(a, t, ox_a, ox_t) for a, t in mapping.items()
            )
            cost /= n
            options.append((cost, mapping))
        out = []
        zs = self.arrays.species_z[self.arrays.site_offset[row] : self.arrays.site_offset[row + 1]]
        for cost, mapping in options:
            species = [mapping[int(z)] for z in zs]
            text = " ".join(f"{_symbol(a)}->{_symbol(t)}" for a, t in mapping.items())
            out.append(_Option(cost, 0.0, row, "substitution", species, text))
        return out

    def _orbits_of(self, row: int) -> list[tuple[int, list[int], float]] | None:
        """Symmetry-distinct site orbits of a template, cached.

        Returns:
            (element Z, site indices, nearest-neighbour distance of the orbit in Angstrom) per
            orbit; None when the template has more than ``_MAX_ORBITS`` orbits.
        """
        if row not in self._orbits:
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            s = self.arrays.structure(row)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sym = SpacegroupAnalyzer(
                        s, symprec=self.settings.symprec
                    ).get_symmetrized_structure()
                groups = [sorted(idx) for idx in sym.equivalent_indices]
            except Exception:  # noqa: BLE001 - spglib failure: each site its own orbit
                groups = [[i] for i in range(len(s))]
            if len(groups) > _MAX_ORBITS:
                self._orbits[row] = None
            else:
                dm = s.distance_matrix
                np.fill_diagonal(dm, np.inf)
                nn = dm.min(axis=1) if len(s) > 1 else np.ones(len(s))
                self._orbits[row] = [(int(s[g[0]].specie.Z), g, float(nn[g[0]])) for g in groups]
        return self._orbits[row]

    @staticmethod
    def _orbit_room(orbits: list[tuple[int, list[int], float]]) -> list[float]:
        """Log room of each orbit relative to the other orbits of the same template element.

        Room: the orbit's nearest-neighbour distance over the (site-weighted geometric) mean of
        the orbits of the same element. Compared with the relative ion size (cube root of the
        fitted element volumes) as a small tie-breaker when a template element's orbits are
        split among target elements: larger ions go to roomier sites.
        """
        mean_log: dict[int, float] = {}
        for za in {o[0] for o in orbits}:
            sel = [(len(idx), math.log(max(d, 1e-3))) for z, idx, d in orbits if z == za]
            mean_log[za] = sum(n * v for n, v in sel) / sum(n for n, _ in sel)
        return [math.log(max(d, 1e-3)) - mean_log[za] for za, _, d in orbits]

    def _split_option(
        self, row: int, target: dict[int, int], ox_t: dict[str, float]
    ) -> _Option | None:
        """Cheapest assignment of a template's site orbits to target elements (exact counts)."""
        n = int(self.nsites[row])
        per_fu = sum(target.values())
        if n % per_fu:
            return None
        z_fu = n // per_fu
        need = {t: c * z_fu for t, c in target.items()}
        orbits = self._orbits_of(row)
        if orbits is None:
            return None
        ox_a = first_oxidation_guess(self.formula[row]) if self.settings.oxidation_weight else {}
        tz = list(need)
        room = self._orbit_room(orbits)
        ev = self.element_volume

        def size_term(k: int, t: int) -> float:
            ion = math.log(ev[t] / ev[orbits[k][0]]) / 3.0
            return _SIZE_WEIGHT * abs(ion - room[k])

        cost_tab = [
            [len(idx) * (self._pair_cost(za, t, ox_a, ox_t) + size_term(k, t)) for t in tz]
            for k, (za, idx, _) in enumerate(orbits)
        ]
        order = sorted(range(len(orbits)), key=lambda o: -len(orbits[o][1]))
        sizes = [len(orbits[o][1]) for o in order]
        best: list[Any] = [math.inf, None]
        remaining = [need[t] for t in tz]
        choice = [0] * len(order)
        min_rest = np.concatenate([np.cumsum([min(cost_tab[o]) for o in order][::-1])[::-1], [0.0]])

        def dfs(k: int, acc: float) -> None:
            if acc + min_rest[k] >= best[0]:
                return
            if k == len(order):
                if not any(remaining):
                    best[0], best[1] = acc, list(choice)
                return
            o = order[k]
            for j in sorted(range(len(tz)), key=lambda j: cost_tab[o][j]):
                if remaining[j] >= sizes[k]:
                    remaining[j] -= sizes[k]
                    choice[k] = j
                    dfs(k + 1, acc + cost_tab[o][j])
                    remaining[j] += sizes[k]

        dfs(0, 0.0)
        if best[1] is None:
            return None
        species = [0] * n
        parts = []
        for k, j in enumerate(best[1]):
            za, idx, _ = orbits[order[k]]
            for i in idx:
                species[i] = tz[j]
            parts.append(f"{_symbol(za)}[{len(idx)}]->{_symbol(tz[j])}")
        return _Option(best[0] / n, 0.0, row, "site_split", species, " ".join(parts))

    def _build(self, option: _Option, ox_t: dict[str, float]) -> tuple[Structure, float]:
        """The substituted, rescaled structure of an option, and its volume scale factor."""
        from pymatgen.core import Lattice, Structure

        row = option.row
        a, b = self.arrays.site_offset[row], self.arrays.site_offset[row + 1]
        old = self.arrays.species_z[a:b]
        ox_a = (
            first_oxidation_guess(self.formula[row])
            if self.settings.volume_rule == "ionic_radii"
            else {}
        )
        if self.settings.volume_rule == "template":
            scale = 1.0
        else:
            v_old = sum(self._site_volume(int(z), ox_a) for z in old)
            v_new = sum(self._site_volume(int(z), ox_t) for z in option.species)
            scale = v_new / v_old if v_old > 0 and np.isfinite(v_new / v_old) else 1.0
        lattice = self.arrays.lattice[row] * scale ** (1.0 / 3.0)
        return Structure(Lattice(lattice), option.species, self.arrays.frac_coords[a:b]), float(
            scale
        )
