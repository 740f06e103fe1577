"""Template-based structure prediction: substitute target elements into similar known structures.

The approach follows CSPML (Kusaba et al., Comput. Mater. Sci. 2022) and data-mined ionic
substitution: a known structure whose composition is close to the target's often *is* the
target's structure after swapping elements.

For a target composition T (reduced formula):

1. **Template search.** Every known entry of the store is a template. Its distance to T is
   first bounded from below by the element-movers distance (ElMD, Hargreaves et al. 2020) on
   the modified Pettifor scale, computed for all entries at once (on a 1-D scale the EMD is
   the L1 distance between cumulative distributions; equal to ``ElMD(metric="mod_petti")``).
   Templates are visited nearest first.
2. **Element mapping.** *Substitution*: a template with the same anonymous formula (same
   stoichiometry up to element names and an integer multiple, e.g. ZnAl2O4 -> MgMn2O4) is
   mapped element to element; every bijection that preserves the amounts is scored and the
   cheapest ones are kept. *Site splitting / merging* (the fallback, used when fewer than
   ``top_k`` distinct substitution candidates exist, e.g. in a small store): the template's
   symmetry-distinct site orbits (spglib at ``symprec``) are assigned to target elements so
   that the counts come out exactly (e.g. spinel Mn3O4: tetrahedral Mn -> Mg, octahedral
   Mn -> Mn gives MgMn2O4).
3. **Cost** of a mapping, per atom of the template cell, on the modified Pettifor scale::

       cost = sum_sites [ |p(a) - p(t)| + w_ox * |ox(a) - ox(t)| ] / n_sites

   with ``p`` the modified Pettifor number, ``ox`` the oxidation state of the element in its
   compound (first pymatgen ``oxi_state_guesses`` solution; the target's may be restricted by
   ``target.oxidation_states``), ``w_ox = oxidation_weight`` (0 when either is unknown). The
   Pettifor part is the cost of one transport plan between the two compositions, so it is >=
   the ElMD: the ElMD ordering prunes the search exactly. Cations therefore replace cations of
   similar chemistry and charge; an anion never replaces a cation unless nothing else fits.
4. **Volume rule.** The substituted cell keeps the template's fractional coordinates and cell
   shape and is scaled isotropically to ``V = V_template * sum_sites v(t) / sum_sites v(a)``
   (``volume_rule``):

   * ``element_volumes`` (default): ``v`` = additive volume per atom of each element, fitted by
     non-negative least squares to all cells of the store (V_cell = sum_e n_e v_e); the ratio
     keeps the template's packing and transfers the learned element sizes;
   * ``ionic_radii``: ``v = r^3`` with the Shannon ionic radius of the element's oxidation
     state (pymatgen; atomic radius when unknown);
   * ``template``: no rescaling.
5. **Distinct structures.** Candidates are taken in cost order; one that matches an already
   accepted candidate (StructureMatcher, with the fingerprint pre-filter of
   :mod:`matdisco.pool`) is skipped, so the ``top_k`` results are ``top_k`` different
   structures.

No template at all (nothing of a compatible stoichiometry in the store) gives no candidates
for that target and a logged warning, never an error.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.core.composition import (
    MAX_Z,
    amounts_by_z,
    first_oxidation_guess,
    normalize_formula,
    parse_formula,
    petti_cdf,
    pettifor_numbers,
)
from matdisco.pool import MatchSettings, StructureComparer, fill_entry_columns, neighbour_stats
from matdisco.store import (
    StructureArrays,
    atomic_write,
    read_entries,
    read_structure_arrays,
    write_store,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "TemplateSettings",
    "TemplateCandidate",
    "TemplateLibrary",
    "candidates_table",
    "generate_templates",
]

log = logging.getLogger("matdisco.generate.templates")

_MAX_Z = MAX_Z
_MAX_PERMUTATIONS = 120
_MAX_ORBITS = 16
#: weight of the ion-size / site-room mismatch in the site-splitting cost (a tie-breaker:
#: modified-Pettifor numbers differ by integers)
_SIZE_WEIGHT = 0.1


@dataclass(frozen=True)
class TemplateSettings:
    """Settings of the template generator (config section ``templates``).

    Attributes:
        top_k: distinct candidate structures kept per target composition.
        max_templates: (template, mapping) options examined per target, cheapest first.
        max_sites: templates with more sites in their stored cell are skipped.
        max_e_above_hull: templates with a larger known E_hull (eV/atom) are skipped; None
            keeps all (unknown E_hull is always kept).
        max_distance: mappings costlier than this (modified-Pettifor units per atom) are not
            used; None sets no limit.
        oxidation_weight: ``w_ox``, cost per unit oxidation-state difference per atom, in
            modified-Pettifor units.
        volume_rule: ``element_volumes`` | ``ionic_radii`` | ``template``.
        fallback: site-splitting / merging templates of other stoichiometries: ``True`` or
            ``"when_needed"`` when fewer than ``top_k`` distinct substitution candidates are
            found, ``"always"`` whenever they are cheaper, ``False`` / ``"never"``.
        max_fallback_templates: templates tried for the fallback per target (each needs a
            symmetry analysis).
        symprec: spglib tolerance (Angstrom) for the site orbits of the fallback.
    """

    top_k: int = 5
    max_templates: int = 100
    max_sites: int = 80
    max_e_above_hull: float | None = None
    max_distance: float | None = 10.0
    oxidation_weight: float = 4.0
    volume_rule: str = "element_volumes"
    fallback: bool | str = "when_needed"
    max_fallback_templates: int = 200
    symprec: float = 0.1

    def __post_init__(self) -> None:
        if self.volume_rule not in {"element_volumes", "ionic_radii", "template"}:
            raise ValueError(
                f"volume_rule {self.volume_rule!r}: use element_volumes, ionic_radii or template"
            )

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> TemplateSettings:
        """Settings from a config mapping (missing keys keep their defaults)."""
        cfg = cfg or {}
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


@dataclass
class TemplateCandidate:
    """One predicted structure for a target composition."""

    target_formula: str
    structure: Structure
    parent: str  # template entry id
    template_formula: str
    template_distance: float  # mapping cost (modified Pettifor units per atom)
    elmd: float  # ElMD between target and template compositions (lower bound of the cost)
    method: str  # "substitution" | "site_split"
    mapping: str  # e.g. "Zn->Mg Al->Mn O->O"
    volume_scale: float  # V_new / V_template
    extra: dict[str, Any] = field(default_factory=dict)


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


# --------------------------------------------------------------------------------------
# the template library
# --------------------------------------------------------------------------------------


@dataclass
class _Option:
    """A (template, mapping) pair before its structure is built."""

    cost: float
    elmd: float
    row: int
    method: str
    species: list[int]  # new atomic number per site of the template cell
    mapping: str


class TemplateLibrary:
    """Known structures prepared for fast template search.

    Args:
        entries: the store's entry table (needs ``id``, ``formula``, ``nsites``; uses
            ``e_above_hull`` and ``is_experimental`` when present).
        arrays: the store's structures (row-aligned).
        settings: generator settings.
        oxidation_states: allowed oxidation-state ranges ``{element: [min, max]}`` for the
            targets (config ``target.oxidation_states``).
    """

    def __init__(
        self,
        entries: pd.DataFrame,
        arrays: StructureArrays,
        settings: TemplateSettings | None = None,
        oxidation_states: dict[str, Sequence[int]] | None = None,
    ) -> None:
        self.settings = settings or TemplateSettings()
        self.entries = entries.reset_index(drop=True)
        self.arrays = arrays
        self.oxidation_states = {k: list(v) for k, v in (oxidation_states or {}).items()}
        n = len(entries)
        rows = np.repeat(np.arange(n), np.diff(arrays.site_offset))
        counts = np.zeros((n, _MAX_Z), dtype=np.int64)
        np.add.at(counts, (rows, arrays.species_z.astype(np.int64)), 1)
        self.counts = counts
        self.cdf = petti_cdf(counts).astype(np.float32)
        self.formula = self.entries["formula"].astype(str).to_numpy()
        self.anon = np.array([_anon_key(c) for c in counts], dtype=object)
        self.nsites = np.diff(arrays.site_offset)
        cols = self.entries.columns
        ehull = (
            self.entries["e_above_hull"].to_numpy(float)
            if "e_above_hull" in cols
            else np.full(n, np.nan)
        )
        exp = (
            self.entries["is_experimental"].to_numpy(int)
            if "is_experimental" in cols
            else np.full(n, -1)
        )
        self.ehull, self.experimental = ehull, exp
        usable = self.nsites <= self.settings.max_sites
        if self.settings.max_e_above_hull is not None:
            usable &= ~(ehull > self.settings.max_e_above_hull)
        self.usable = usable
        self.element_volume = self._fit_element_volumes()
        self._orbits: dict[int, list[tuple[int, list[int], float]] | None] = {}

    @classmethod
    def from_store(
        cls,
        path: str | Path,
        settings: TemplateSettings | None = None,
        oxidation_states: dict[str, Sequence[int]] | None = None,
    ) -> TemplateLibrary:
        """Library of every entry of an entry store."""
        cols = ["id", "formula", "nsites", "e_above_hull", "is_experimental"]
        return cls(
            read_entries(path, cols), read_structure_arrays(path), settings, oxidation_states
        )

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

    def predict(
        self,
        target_formula: str,
        *,
        exclude_formulas: Sequence[str] = (),
        match: MatchSettings | None = None,
    ) -> tuple[list[TemplateCandidate], dict[str, Any]]:
        """Distinct candidate structures for one composition, cheapest first.

        Args:
            target_formula: the composition to predict (any formula; reduced internally).
            exclude_formulas: compositions whose entries may not serve as templates, in any
                notation (``"BaFe2As2"`` also excludes the store's ``"Ba(FeAs)2"``): entries
                are compared by composition, not by string (the leave-one-out benchmark hides
                the target this way).
            match: tolerances for telling candidates apart.

        Returns:
            (up to ``top_k`` candidates, a summary dict). The summary's ``skipped`` lists the
            compatible templates that the library's filters (``max_sites``,
            ``max_e_above_hull``) or ``exclude_formulas`` removed from the same-stoichiometry
            templates, one message each, e.g. ``"3 templates of the same stoichiometry
            skipped: more than max_sites=80 sites"``; when nothing is found, ``reason`` says
            why (including these messages).

        Raises:
            FormulaError: an unparsable target or excluded formula (names it).
        """
        st = self.settings
        match = match or MatchSettings()
        comp = parse_formula(target_formula)
        formula = comp.reduced_formula
        tcounts = amounts_by_z(formula)
        g = np.gcd.reduce(tcounts[tcounts > 0].astype(np.int64))
        target = {int(z): int(round(c)) // int(g) for z, c in enumerate(tcounts) if c > 0}
        anon = _anon_key(tcounts)
        ox_t = (
            self._ox_target(formula)
            if st.oxidation_weight or st.volume_rule == "ionic_radii"
            else {}
        )
        elmd = np.abs(self.cdf - petti_cdf(tcounts).astype(np.float32)).sum(axis=1)
        excluded = self.rows_of_compositions(exclude_formulas)
        allowed = self.usable & ~excluded
        summary: dict[str, Any] = {
            "target_formula": formula,
            "anonymous_formula": comp.anonymized_formula,
        }
        mode = _fallback_mode(st.fallback)
        skipped = self._skip_messages(self.anon == anon, excluded)
        summary["skipped"] = skipped
        for msg in skipped:
            log.info("templates: %s: %s", formula, msg)

        # 1) substitution into same-stoichiometry templates, exact best-first with ElMD bound
        same = np.flatnonzero(allowed & (self.anon == anon))
        same = same[np.lexsort((self._tiebreak(same), elmd[same]))]
        options = self._best_options(
            same, elmd, lambda r: self._substitution_options(r, target, ox_t)
        )
        summary["same_stoichiometry_templates"] = int(len(same))
        chosen, n_examined = self._distinct(options, ox_t, formula, match, st.top_k)
        # 2) site splitting / merging in templates of other stoichiometries: when too few
        # distinct candidates were found ("when_needed") or whenever cheaper ("always")
        n_fallback = 0
        if mode == "always" or (mode == "when_needed" and len(chosen) < st.top_k):
            bound = chosen[-1].template_distance if len(chosen) >= st.top_k else math.inf
            others = np.flatnonzero(
                allowed
                & (self.anon != anon)
                & (self.nsites % sum(target.values()) == 0)
                & (elmd < bound)
            )
            others = others[np.lexsort((self._tiebreak(others), elmd[others]))][
                : st.max_fallback_templates
            ]
            n_fallback = len(others)
            split = self._best_options(
                others, elmd, lambda r: [o] if (o := self._split_option(r, target, ox_t)) else []
            )
            if split:
                merged = sorted(options + split, key=lambda o: o.cost)
                chosen, n_examined = self._distinct(merged, ox_t, formula, match, st.top_k)
        summary.update(
            {
                "fallback_templates_tried": int(n_fallback),
                "options_examined": int(n_examined),
                "candidates": len(chosen),
                "best_distance": round(chosen[0].template_distance, 4) if chosen else None,
                "methods": sorted({c.method for c in chosen}),
            }
        )
        if not chosen:
            why = f" ({'; '.join(skipped)})" if skipped else ""
            summary["reason"] = (
                f"no usable template of a compatible stoichiometry for {formula}{why}"
            )
            log.warning("templates: %s", summary["reason"])
        return chosen, summary

    def rows_of_compositions(self, formulas: Sequence[str]) -> np.ndarray:
        """``(n,)`` mask of the entries whose composition is one of ``formulas`` (any notation).

        Compositions are compared as reduced element amounts, so ``"BaFe2As2"``,
        ``"Ba(FeAs)2"`` and ``"As4Ba2Fe4"`` select the same entries.

        Raises:
            FormulaError: an unparsable formula (names it).
        """
        mask = np.zeros(len(self.entries), dtype=bool)
        for f in formulas:
            counts = amounts_by_z(normalize_formula(f))
            rows = np.flatnonzero(self.anon == _anon_key(counts))
            if not len(rows):
                continue
            z = np.flatnonzero(counts)
            # same composition: the row's amounts are one common multiple of the formula's
            c = self.counts[rows].astype(np.float64)
            other = np.ones(c.shape[1], dtype=bool)
            other[z] = False
            ratio = c[:, z] / counts[z]
            same = (c[:, other] == 0).all(axis=1) & np.isclose(ratio, ratio[:, :1]).all(axis=1)
            mask[rows[same]] = True
        return mask

    def _skip_messages(self, same: np.ndarray, excluded: np.ndarray) -> list[str]:
        """Why same-stoichiometry templates were not used: one message per filter that removed any.

        Args:
            same: mask of the entries with the target's anonymous formula.
            excluded: mask of the entries removed by ``exclude_formulas``.
        """
        st = self.settings

        def msg(n: int, why: str) -> str:
            return f"{n} template{'s' if n != 1 else ''} of the same stoichiometry skipped: {why}"

        out = []
        n = int((same & excluded).sum())
        if n:
            out.append(msg(n, "excluded formula"))
        rest = same & ~excluded
        n = int((rest & (self.nsites > st.max_sites)).sum())
        if n:
            out.append(
                msg(n, f"more than max_sites={st.max_sites} sites (raise max_sites to use them)")
            )
        if st.max_e_above_hull is not None:
            n = int(
                (rest & (self.nsites <= st.max_sites) & (self.ehull > st.max_e_above_hull)).sum()
            )
            if n:
                out.append(msg(n, f"E_hull above max_e_above_hull={st.max_e_above_hull} eV/atom"))
        return out

    def _row_of(self, entry_id: str) -> int:
        if not hasattr(self, "_id_pos"):
            self._id_pos = {v: i for i, v in enumerate(self.entries["id"].astype(str))}
        return self._id_pos[entry_id]

    def _tiebreak(self, rows: np.ndarray) -> np.ndarray:
        """Secondary order among equally distant templates: experimental, then low E_hull."""
        eh = np.nan_to_num(self.ehull[rows], nan=1.0)
        return np.where(self.experimental[rows] == 1, -10.0, 0.0) + eh

    def _best_options(self, rows: np.ndarray, elmd: np.ndarray, make) -> list[_Option]:
        """The ``max_templates`` cheapest options of the templates ``rows`` (ElMD-sorted)."""
        limit = self.settings.max_templates
        if self.settings.max_distance is not None:
            rows = rows[elmd[rows] <= self.settings.max_distance]
        heap: list[tuple[float, int, _Option]] = []
        counter = 0
        for r in rows:
            if len(heap) >= limit and elmd[r] > -heap[0][0]:
                break  # ElMD is a lower bound of every later option's cost
            for opt in make(int(r)):
                if self.settings.max_distance is not None and opt.cost > self.settings.max_distance:
                    continue
                opt.elmd = float(elmd[r])
                counter += 1
                item = (-opt.cost, -counter, opt)
                if len(heap) < limit:
                    heapq.heappush(heap, item)
                elif opt.cost < -heap[0][0]:
                    heapq.heapreplace(heap, item)
        return [item[2] for item in sorted(heap, key=lambda t: (-t[0], -t[1]))]

    def _distinct(
        self,
        options: list[_Option],
        ox_t: dict[str, float],
        formula: str,
        match: MatchSettings,
        k: int,
        accepted: list[TemplateCandidate] | None = None,
    ) -> tuple[list[TemplateCandidate], int]:
        """Build options in order and keep the first ``k`` structurally distinct ones."""
        accepted = list(accepted or [])
        structures = [c.structure for c in accepted]
        fps = [neighbour_stats(StructureArrays.from_structures([s]))[1][0] for s in structures]
        comparer = StructureComparer(structures, match)
        new: list[TemplateCandidate] = []
        examined = 0
        for opt in options:
            if len(new) >= k:
                break
            examined += 1
            s, scale = self._build(opt, ox_t)
            if s.composition.reduced_formula != formula:
                continue
            fp = neighbour_stats(StructureArrays.from_structures([s]))[1][0]
            structures.append(s)
            idx = len(structures) - 1
            dup = any(
                np.abs(fps[j] - fp).max() <= match.fingerprint_tol and comparer.match(j, idx)
                for j in range(len(fps))
            )
            if dup:
                structures.pop()
                comparer.forget(idx)
                continue
            fps.append(fp)
            row = opt.row
            new.append(
                TemplateCandidate(
                    target_formula=formula,
                    structure=s,
                    parent=str(self.entries.at[row, "id"]),
                    template_formula=str(self.formula[row]),
                    template_distance=round(float(opt.cost), 4),
                    elmd=round(float(opt.elmd), 4),
                    method=opt.method,
                    mapping=opt.mapping,
                    volume_scale=round(scale, 4),
                )
            )
        return new, examined


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


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------


def candidates_table(
    candidates: Sequence[TemplateCandidate],
) -> tuple[pd.DataFrame, StructureArrays]:
    """Store-format table (source ``template``) and structures of template candidates.

    Ids are ``tpl-<target formula>-<rank>`` (rank from 1 within each target).
    """
    rows = []
    rank: dict[str, int] = {}
    for c in candidates:
        rank[c.target_formula] = rank.get(c.target_formula, 0) + 1
        rows.append(
            {
                "id": f"tpl-{c.target_formula}-{rank[c.target_formula]:03d}",
                "source": "template",
                "formula": c.structure.composition.reduced_formula,
                "generator": "template",
                "target_formula": c.target_formula,
                "parent": c.parent,
                "template_distance": float(c.template_distance),
                "template_formula": c.template_formula,
                "template_elmd": float(c.elmd),
                "template_method": c.method,
                "template_mapping": c.mapping,
                "volume_scale": float(c.volume_scale),
                "rank": int(rank[c.target_formula]),
            }
        )
    columns = [
        "id",
        "source",
        "formula",
        "generator",
        "target_formula",
        "parent",
        "template_distance",
        "template_formula",
        "template_elmd",
        "template_method",
        "template_mapping",
        "volume_scale",
        "rank",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["template_distance"] = table["template_distance"].astype(float)
    table["template_elmd"] = table["template_elmd"].astype(float)
    table["volume_scale"] = table["volume_scale"].astype(float)
    table["rank"] = table["rank"].astype(np.int64)
    arrays = StructureArrays.from_structures([c.structure for c in candidates])
    fill_entry_columns(table, arrays)
    return table, arrays


def generate_templates(
    store_path: str | Path,
    targets: Sequence[str],
    *,
    out_store: str | Path,
    out_summary: str | Path,
    settings: dict[str, Any] | None = None,
    match: dict[str, Any] | None = None,
    oxidation_states: dict[str, Sequence[int]] | None = None,
    exclude_formulas: Sequence[str] = (),
) -> dict[str, Any]:
    """Predict template structures for every target and write them as a candidate store.

    Args:
        store_path: the entry store (templates).
        targets: target formulas (:func:`matdisco.generate.targets.target_compositions`).
        out_store: candidates in the store format (an empty store when nothing was found).
        out_summary: JSON summary per target.
        settings: the ``templates`` config section.
        match: StructureMatcher / fingerprint tolerances (the ``pool`` config section).
        oxidation_states: the ``target.oxidation_states`` config section.
        exclude_formulas: compositions (any notation) whose store entries may not serve as
            templates for any target.

    Returns:
        The summary dictionary.

    Raises:
        FormulaError: an unparsable target or excluded formula, before anything is written.
    """
    t0 = time.perf_counter()
    for f in [*targets, *exclude_formulas]:
        parse_formula(f)  # a bad formula stops the stage before any output
    st = TemplateSettings.from_config(settings)
    ms = MatchSettings.from_config(match)
    lib = TemplateLibrary.from_store(store_path, st, oxidation_states)
    t_load = time.perf_counter() - t0
    all_candidates: list[TemplateCandidate] = []
    per_target = []
    for formula in targets:
        t1 = time.perf_counter()
        # stored structures of the target's own formula would reproduce known structures
        own = () if (settings or {}).get("include_target_formula", False) else (formula,)
        cands, summ = lib.predict(formula, exclude_formulas=[*exclude_formulas, *own], match=ms)
        summ["target_formula_templates"] = "included" if not own else "excluded"
        summ["seconds"] = round(time.perf_counter() - t1, 3)
        per_target.append(summ)
        all_candidates.extend(cands)
        log.info(
            "templates: %s -> %d candidates (best distance %s, %s)",
            summ["target_formula"],
            len(cands),
            summ["best_distance"],
            ",".join(summ["methods"]) or "none",
        )
    table, arrays = candidates_table(all_candidates)
    if not len(table):
        log.warning("templates: no candidates for any of %s; writing an empty store", list(targets))
    summary = {
        "targets": list(targets),
        "exclude_formulas": [normalize_formula(f) for f in exclude_formulas],
        "n_candidates": int(len(table)),
        "settings": asdict(st),
        "match": asdict(ms),
        "store": str(store_path),
        "store_entries": int(len(lib.entries)),
        "per_target": per_target,
        "seconds_load": round(t_load, 3),
        "seconds_total": round(time.perf_counter() - t0, 3),
    }
    write_store(
        out_store,
        table,
        arrays,
        data_source="template",
        provenance={
            "generator": "template",
            "store": str(store_path),
            "settings": asdict(st),
            "targets": list(targets),
        },
    )
    with atomic_write(out_summary, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
