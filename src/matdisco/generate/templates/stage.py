"""The ``generate_templates`` stage: predict every target and write the candidate store.

Writes the candidates in the store format (source ``template``, ids
``tpl-<target formula>-<rank>``) and a JSON summary per target.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.core.composition import normalize_formula, parse_formula
from matdisco.generate.templates.library import TemplateCandidate, TemplateLibrary
from matdisco.pool import fill_entry_columns, match_settings
from matdisco.settings import PoolSettings, TemplateSettings
from matdisco.store import StructureArrays, atomic_write, write_store

log = logging.getLogger("matdisco.generate.templates")


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
    settings: TemplateSettings | Mapping[str, Any] | None = None,
    match: PoolSettings | Mapping[str, Any] | None = None,
    oxidation_states: dict[str, Sequence[int]] | None = None,
    exclude_formulas: Sequence[str] = (),
) -> dict[str, Any]:
    """Predict template structures for every target and write them as a candidate store.

    Args:
        store_path: the entry store (templates).
        targets: target formulas (:func:`matdisco.generate.targets.target_compositions`).
        out_store: candidates in the store format (an empty store when nothing was found).
        out_summary: JSON summary per target.
        settings: the ``templates`` section (a mapping is read with
            :meth:`TemplateSettings.coerce`; None: defaults).
        match: the ``pool`` section, whose StructureMatcher / fingerprint tolerances tell
            candidates apart (a mapping is read with :meth:`PoolSettings.coerce`).
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
    st = TemplateSettings.coerce(settings)
    ms = match_settings(PoolSettings.coerce(match))
    lib = TemplateLibrary.from_store(store_path, st, oxidation_states)
    t_load = time.perf_counter() - t0
    all_candidates: list[TemplateCandidate] = []
    per_target = []
    for formula in targets:
        t1 = time.perf_counter()
        # stored structures of the target's own formula would reproduce known structures
        own = () if st.include_target_formula else (formula,)
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
        "settings": st.to_dict(),
        "match": ms.as_dict(),
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
            "settings": st.to_dict(),
            "targets": list(targets),
        },
    )
    with atomic_write(out_summary, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
