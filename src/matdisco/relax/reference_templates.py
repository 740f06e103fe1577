"""Template stand-ins for known formulas of the target system that have no stored structure.

The reference hull (:mod:`matdisco.relax.reference`) should hold every *known* phase near the
hull, but a known formula (per :mod:`matdisco.known`: label table, user file) may have no
structure in the store (the bundled 2018 set lacks e.g. MgMn2O4). :func:`missing_known_phases`
lists those formulas; :func:`template_phases` builds one stand-in structure each with the
template generator (:class:`matdisco.generate.templates.TemplateLibrary`), to be relaxed with the
candidates' backend like the stored phases and marked ``origin = template:<parent>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["missing_known_phases", "template_phases"]

log = logging.getLogger(__name__)


def missing_known_phases(
    store_path: str | Path,
    elements: Sequence[str],
    *,
    max_e_above_hull: float | None = 0.1,
    known: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Known compositions of the chemical system that have no stored structure.

    Known per :mod:`matdisco.known` (label table, user file). Only formulas whose label E_hull
    is within ``max_e_above_hull`` (None = all) are returned; user-file formulas without a
    label are kept (known by the user) and sorted last.

    Returns:
        Columns ``formula``, ``label_e_above_hull`` (NaN when unlabelled), ``known_source``,
        ``n_atoms`` (per formula unit); lowest label first, then smallest formula unit.
    """
    from pymatgen.core import Composition

    from matdisco.known import KnownCompositions, reduced_formula
    from matdisco.store import read_labels

    kc = KnownCompositions.from_config(store_path, known)
    els = set(elements)
    label = {}
    lab = read_labels(store_path)
    for f, e in zip(lab.get("formula", []), lab.get("e_above_hull", []), strict=True):
        try:
            r = reduced_formula(str(f))
        except ValueError:
            continue
        label[r] = min(float(e), label.get(r, np.inf))
    rows = []
    for f in sorted(kc.sources.get("labels", set()) | kc.sources.get("user", set())):
        comp = Composition(f)
        fe = {str(e) for e in comp.elements}
        if len(fe) < 2 or not fe <= els or kc.sources.get("store") and f in kc.sources["store"]:
            continue
        e = label.get(f, np.nan)
        if np.isfinite(e) and max_e_above_hull is not None and e > max_e_above_hull + 1e-9:
            continue
        if not np.isfinite(e) and f not in kc.sources.get("user", set()):
            continue
        rows.append(
            {
                "formula": f,
                "label_e_above_hull": e,
                "known_source": kc.source_of(f),
                "n_atoms": int(round(comp.reduced_composition.num_atoms)),
            }
        )
    out = pd.DataFrame(rows, columns=["formula", "label_e_above_hull", "known_source", "n_atoms"])
    if len(out):
        out["_k"] = out["label_e_above_hull"].fillna(np.inf)
        out = out.sort_values(["_k", "n_atoms", "formula"], kind="stable").drop(columns="_k")
    return out.reset_index(drop=True)


def template_phases(
    store_path: str | Path,
    missing: pd.DataFrame,
    *,
    max_formulas: int | None = 8,
    templates: dict[str, Any] | None = None,
    oxidation_states: dict[str, Sequence[int]] | None = None,
    match: dict[str, Any] | None = None,
    max_sites: int | None = None,
) -> tuple[pd.DataFrame, list[Any]]:
    """Stand-in structures for known formulas without a stored structure (best template each).

    Each of the first ``max_formulas`` rows of ``missing`` gets the cheapest template structure
    of :class:`matdisco.generate.templates.TemplateLibrary` (same settings as the template
    generator, ``top_k`` 1), id ``ref-tpl-<formula>``, origin ``template:<parent id>``. They are
    relaxed with the candidates' backend like every other reference phase.

    Returns:
        (rows in the :func:`select_reference` layout, structures); rows beyond the cap are
        logged, not returned.
    """
    from matdisco.generate.templates import TemplateLibrary, TemplateSettings
    from matdisco.pool import MatchSettings

    if not len(missing) or (max_formulas is not None and max_formulas <= 0):
        return pd.DataFrame(), []
    todo = missing if max_formulas is None else missing.head(int(max_formulas))
    skipped = missing["formula"].iloc[len(todo) :].tolist()
    if skipped:
        log.warning(
            "reference: %d known formulas without a stored structure left out "
            "(ehull.reference.max_template_phases): %s",
            len(skipped),
            skipped,
        )
    st = TemplateSettings.from_config({**(templates or {}), "top_k": 1})
    lib = TemplateLibrary.from_store(store_path, st, oxidation_states)
    ms = MatchSettings.from_config(match)
    rows, structures = [], []
    for _, m in todo.iterrows():
        cands, _ = lib.predict(str(m["formula"]), match=ms)
        if not cands:
            log.warning("reference: no template structure for known formula %s", m["formula"])
            continue
        c = cands[0]
        s = c.structure
        if max_sites is not None and len(s) > max_sites:
            log.warning(
                "reference: template phase %s has %d > %d sites", m["formula"], len(s), max_sites
            )
            continue
        rows.append(
            {
                "id": f"ref-tpl-{m['formula']}",
                "formula": m["formula"],
                "composition": s.composition.formula.replace(" ", ""),
                "nsites": len(s),
                "formation_energy_per_atom": np.nan,
                "e_above_hull": m["label_e_above_hull"],
                "store_hull_e_above_hull": np.nan,
                "origin": f"template:{c.parent} ({c.template_formula}, {c.mapping})",
            }
        )
        structures.append(s)
    log.info(
        "reference: %d template phases for known formulas without a stored structure", len(rows)
    )
    return pd.DataFrame(rows), structures
