"""The template library: known structures prepared for fast template search, and ``predict``.

:class:`TemplateLibrary` indexes a store (element counts, modified-Pettifor CDFs for the ElMD
bound, anonymous formulas, fitted element volumes) and predicts the ``top_k`` distinct
candidate structures of a target composition (see the package docstring for the method; the
substitution rules themselves are in :mod:`matdisco.generate.templates.substitute`).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.core.composition import (
    amounts_by_z,
    normalize_formula,
    parse_formula,
    petti_cdf,
)
from matdisco.core.matching import MatchSettings, StructureComparer, neighbour_stats
from matdisco.generate.templates.substitute import (
    _MAX_Z,
    SubstitutionRules,
    _anon_key,
    _fallback_mode,
    _Option,
)
from matdisco.settings import TemplateSettings
from matdisco.store import StructureArrays, read_entries, read_structure_arrays

if TYPE_CHECKING:
    from pymatgen.core import Structure

log = logging.getLogger("matdisco.generate.templates")


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


class TemplateLibrary(SubstitutionRules):
    """Known structures prepared for fast template search.

    Args:
        entries: the store's entry table (needs ``id``, ``formula``, ``nsites``; uses
            ``e_above_hull`` and ``is_experimental`` when present).
        arrays: the store's structures (row-aligned).
        settings: generator settings (the ``templates`` section; a mapping is read with
            :meth:`TemplateSettings.coerce`, None gives the defaults).
        oxidation_states: allowed oxidation-state ranges ``{element: [min, max]}`` for the
            targets (config ``target.oxidation_states``).
    """

    def __init__(
        self,
        entries: pd.DataFrame,
        arrays: StructureArrays,
        settings: TemplateSettings | Mapping[str, Any] | None = None,
        oxidation_states: dict[str, Sequence[int]] | None = None,
    ) -> None:
        self.settings = TemplateSettings.coerce(settings)
        if self.settings.volume_rule not in {"element_volumes", "ionic_radii", "template"}:
            raise ValueError(
                f"templates.volume_rule {self.settings.volume_rule!r}: use element_volumes, "
                "ionic_radii or template"
            )
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
        settings: TemplateSettings | Mapping[str, Any] | None = None,
        oxidation_states: dict[str, Sequence[int]] | None = None,
    ) -> TemplateLibrary:
        """Library of every entry of an entry store."""
        cols = ["id", "formula", "nsites", "e_above_hull", "is_experimental"]
        return cls(
            read_entries(path, cols), read_structure_arrays(path), settings, oxidation_states
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
