"""The ``propose`` stage: enumerate, score, rank and list the candidates (proposals.csv/png)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.core.composition import FormulaError, element_amounts, integer_composition
from matdisco.propose.acquisition import acquisition_scores, rank_candidates
from matdisco.propose.candidates import charge_balanced_candidates, nearest_known
from matdisco.propose.plots import plot_proposals
from matdisco.propose.summary import ranking_summary
from matdisco.recommender.model import classifier_scores, load_recommender
from matdisco.recommender.space import known_formulas
from matdisco.settings import ProposeSettings
from matdisco.store import atomic_write, read_entries

__all__ = ["propose"]

log = logging.getLogger("matdisco.propose")


def _key(formula: str) -> frozenset[tuple[str, int]] | None:
    comp = integer_composition(formula)
    return frozenset(comp.items()) if comp is not None else None


def _elements_of(formula: str) -> set[str]:
    try:
        return set(element_amounts(formula))
    except FormulaError:  # an unparsable formula belongs to no space
        return {"?"}


def propose(
    *,
    store: str | Path,
    recommender_model: str | Path | None,
    classifier_model: str | Path | None,
    out_csv: str | Path,
    out_png: str | Path | None,
    elements: Sequence[str],
    oxidation_states: Mapping[str, Sequence[int]] | None = None,
    max_atoms: int = 20,
    settings: ProposeSettings | Mapping[str, Any] | None = None,
    known: Mapping[str, Any] | None = None,
    out_summary: str | Path | None = None,
) -> pd.DataFrame:
    """Enumerate, score and rank candidate compositions of the target space; write table and plot.

    Args:
        store: entry store (known compounds for flags, nearest neighbours and the plot).
        recommender_model: pickled :class:`matdisco.recommender.Recommender` (or None).
        classifier_model: E_hull classifier model file (or None).
        out_csv: output table.
        out_png: output ternary plot (None: no plot).
        elements: target elements.
        oxidation_states: ``{element: [min, max]}`` windows.
        max_atoms: largest number of atoms per formula unit.
        settings: the ``propose`` settings (a mapping is read as the config section; None: the
            defaults).
        known: the ``known`` config section (:mod:`matdisco.known`; a composition any source
            knows is ``known`` and never ranked as a proposal).
        out_summary: optional JSON: the ranking beside random order over the charge-balanced
            pool (:func:`matdisco.propose.summary.ranking_summary`).

    Returns:
        The proposals table (also written to ``out_csv``).
    """
    s = ProposeSettings.coerce(settings)
    t0 = time.perf_counter()
    elements = list(elements)
    table, n_enum = charge_balanced_candidates(elements, max_atoms, oxidation_states)
    log.info(
        "%s: %d compositions with <= %d atoms, %d charge-balanced within %s",
        "-".join(elements),
        n_enum,
        max_atoms,
        len(table),
        dict(oxidation_states or {}),
    )
    formulas = table["formula"].tolist()
    # known compounds: the recommender's definition (experimental by default)
    entries = read_entries(store, ["formula", "is_experimental"])
    rec = None
    if recommender_model is not None and Path(recommender_model).exists():
        rec = load_recommender(recommender_model)
        known_set = list(rec.known)
    else:
        known_set = known_formulas(entries, "experimental")
    known_keys = {_key(f) for f in known_set}
    store_keys = {_key(f) for f in entries["formula"].astype(str)}
    keys = [_key(f) for f in formulas]
    # known = the recommender's known set or any source of matdisco.known (labels, user file, ...)
    from matdisco.known import KnownCompositions

    kc = KnownCompositions.from_config(store, known)
    table["known_composition_source"] = [kc.source_of(f) for f in formulas]
    table["known"] = [
        k in known_keys or bool(src)
        for k, src in zip(keys, table["known_composition_source"], strict=True)
    ]
    table["in_store"] = [k in store_keys for k in keys]
    # classifier
    p = p_std = None
    table["p_stable"] = np.nan
    table["p_stable_std"] = np.nan
    table["out_of_domain"] = pd.array([pd.NA] * len(table), dtype="boolean")
    if s.use_classifier and classifier_model is not None and len(table):
        clf = classifier_scores(classifier_model, formulas)
        if clf is not None:
            table["p_stable"] = clf["p_stable"].to_numpy()
            table["p_stable_std"] = clf["p_stable_std"].to_numpy()
            table["out_of_domain"] = clf["out_of_domain"].astype(bool).to_numpy()
            p, p_std = table["p_stable"].to_numpy(), table["p_stable_std"].to_numpy()
    if p is None:
        log.warning("no classifier scores: ranking by the recommender alone")
    # recommender
    q = q_std = None
    rec_cols = ("recommender_score", "recommender_std", "recommender_percentile", "recommender_raw")
    for c in rec_cols:
        table[c] = np.nan
    if rec is not None and len(table):
        sc = rec.score_formulas(formulas)
        for c in rec_cols:
            table[c] = sc[c].to_numpy()
        if sc["in_space"].any():
            q, q_std = table["recommender_score"].to_numpy(), table["recommender_std"].to_numpy()
        else:
            log.warning(
                "no candidate is in the recommender's ternary space (target has %d elements)",
                len(elements),
            )
    if p is None and q is None:
        if len(table):
            raise ValueError(
                "neither classifier nor recommender scores are available: nothing to rank by"
            )
        mu = sigma = acq = np.zeros(0)
    else:
        mu, sigma, acq = acquisition_scores(
            p,
            p_std,
            q,
            q_std,
            kind=s.acquisition,
            classifier_weight=s.classifier_weight,
            kappa=s.kappa,
        )
    table["mean"], table["std"], table["acquisition"] = mu, sigma, acq
    summary = ranking_summary(acq, table["known"].to_numpy(bool), n_enum, s.n_top)
    # unknown compositions ranked first, known ones after them (no rank)
    order = rank_candidates(acq, mu, formulas)
    unknown_order = [i for i in order if not table["known"].iat[i]]
    known_order = [i for i in order if table["known"].iat[i]]
    table = table.iloc[unknown_order + known_order].reset_index(drop=True)
    n_unknown = len(unknown_order)
    table.insert(
        0,
        "rank",
        pd.array(list(range(1, n_unknown + 1)) + [pd.NA] * len(known_order), dtype="Int64"),
    )
    table["selected"] = False
    table.loc[: min(s.n_top, n_unknown) - 1, "selected"] = True
    table["nearest_known"] = nearest_known(table["formula"].tolist(), known_set, s.n_nearest)
    cols = [
        "rank",
        "formula",
        "composition",
        "n_atoms",
        "oxidation_states",
        "p_stable",
        "p_stable_std",
        "out_of_domain",
        "recommender_score",
        "recommender_std",
        "recommender_percentile",
        "recommender_raw",
        "mean",
        "std",
        "acquisition",
        "known",
        "in_store",
        "known_composition_source",
        "selected",
        "nearest_known",
    ]
    table = table[cols]
    with atomic_write(out_csv, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if out_summary is not None:
        summary["acquisition"] = s.acquisition
        with atomic_write(out_summary, suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    if out_png is not None:
        target = set(elements)
        in_space = sorted({f for f in entries["formula"].astype(str) if _elements_of(f) <= target})
        known_sub = [f for f in in_space if _key(f) in known_keys]
        hyp_sub = [f for f in in_space if _key(f) not in known_keys]
        plot_proposals(
            table,
            elements,
            out_png,
            known_compounds=known_sub,
            hypothetical=hyp_sub,
            n_label=s.n_label,
            title=(
                f"{'-'.join(elements)}: {s.acquisition} "
                f"(w_clf={s.classifier_weight}, kappa={s.kappa})"
            ),
        )
    log.info(
        "%d candidates (%d unknown) ranked by %s in %.1f s; top: %s",
        len(table),
        n_unknown,
        s.acquisition,
        time.perf_counter() - t0,
        ", ".join(table.loc[table["selected"], "formula"].head(5)),
    )
    return table
