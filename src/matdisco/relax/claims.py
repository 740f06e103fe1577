"""What a discovery claim needs besides an E_hull: a self-consistent hull, a below-hull flag,
and the full S.U.N. funnel per generator and target composition.

* **Self-consistent hull**: each candidate's E_hull against the reference phases *plus every
  relaxed candidate* (:func:`self_consistent_ehull`); two candidates cannot both be "on the
  hull" of the same composition region, and a candidate below the reference hull lifts the
  others' E_hull.
* **Below-hull flag** (:func:`below_hull_flags`): an E_hull below ``-tolerance`` means a known
  phase may be missing from the reference, or the candidate is new; it is never counted as a
  discovery silently.
* **Funnel** (:func:`funnel`): sampled -> valid -> unique -> novel -> selected for relaxation ->
  relaxed -> <= 200 meV -> <= 80 meV -> passing the screen, per generator and target
  composition, with rates of sampled and of novel. "novel" uses :mod:`matdisco.known`
  (after relaxation where relaxed); known structures never count beyond "unique".
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BELOW_HULL_TEXT",
    "self_consistent_ehull",
    "below_hull_flags",
    "funnel",
    "FUNNEL_STAGES",
    "plot_funnel",
]

log = logging.getLogger(__name__)

BELOW_HULL_TEXT = "below the reference hull: a known phase may be missing or the candidate is new"

FUNNEL_STAGES = (
    "sampled",
    "valid",
    "unique",
    "novel",
    "selected",
    "relaxed",
    "le_200meV",
    "le_80meV",
    "passing_screen",
)


def self_consistent_ehull(ref: pd.DataFrame, cand: pd.DataFrame) -> np.ndarray:
    """E_hull (eV/atom) of each candidate against the reference plus all relaxed candidates.

    Args:
        ref: reference table (``composition``, ``energy_per_atom``, ``status``).
        cand: candidates (``composition``, ``energy_per_atom``, ``status``); rows not ``ok`` or
            without a finite energy get NaN.
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    entries = []
    for c, e in zip(ref["composition"], ref["energy_per_atom"], strict=True):
        if math.isfinite(float(e)):
            comp = Composition(str(c))
            entries.append(PDEntry(comp, float(e) * comp.num_atoms))
    hull_els = {str(el) for en in entries for el in en.composition.elements}
    cand_entries: list[Any] = []
    for c, e, st in zip(cand["composition"], cand["energy_per_atom"], cand["status"], strict=True):
        comp = Composition(str(c))
        ok = st == "ok" and math.isfinite(float(e)) and {str(x) for x in comp.elements} <= hull_els
        cand_entries.append(PDEntry(comp, float(e) * comp.num_atoms) if ok else None)
    if not entries:
        return np.full(len(cand), np.nan)
    pdg = PhaseDiagram(entries + [x for x in cand_entries if x is not None])
    return np.array(
        [
            np.nan if x is None else pdg.get_e_above_hull(x, allow_negative=True)
            for x in cand_entries
        ],
        dtype=float,
    )


def below_hull_flags(e_above_hull: Sequence[float], tolerance: float = 0.005) -> list[str]:
    """:data:`BELOW_HULL_TEXT` for every E_hull below ``-tolerance`` (eV/atom), else ''."""
    eh = np.asarray(e_above_hull, dtype=float)
    return [BELOW_HULL_TEXT if np.isfinite(x) and x < -tolerance else "" for x in eh]


def _generator_counts(
    summaries: Mapping[str, Mapping[str, Any]],
) -> dict[tuple[str, str], dict[str, int]]:
    """(generator, target) -> sampled / valid from the generators' summary JSONs."""
    from matdisco.known import reduced_formula

    out: dict[tuple[str, str], dict[str, int]] = {}
    for gen, summ in summaries.items():
        if "per_formula" in summ:  # WGAN-GP
            for f, st in summ["per_formula"].items():
                out[(gen, reduced_formula(f))] = {
                    "sampled": int(st.get("samples", 0)),
                    "valid": int(st.get("valid", 0)),
                }
        for st in summ.get("per_target", []):  # templates: each emitted structure is a sample
            n = int(st.get("candidates", 0))
            out[(gen, reduced_formula(st["target_formula"]))] = {"sampled": n, "valid": n}
    return out


def funnel(
    pool: pd.DataFrame,
    ehull: pd.DataFrame,
    summaries: Mapping[str, Mapping[str, Any]],
    *,
    selected_ids: Sequence[str] | None = None,
    final: pd.DataFrame | None = None,
    thresholds: Sequence[float] = (0.2, 0.08),
) -> pd.DataFrame:
    """The S.U.N. funnel per generator and target composition (plus an ``all`` row per generator).

    Stages (counts): ``sampled`` (generator outputs before its validity checks; templates: the
    structures emitted), ``valid`` (the generator's validity checks), ``unique`` (distinct pool
    rows kept under the generator's id, valid and charge neutral), ``novel`` (of those, no match
    with a known structure, :mod:`matdisco.known`, after relaxation when relaxed), ``selected``
    (novel ones sent to relaxation), ``relaxed`` (novel, relaxed without failure), ``le_<t>meV``
    (novel with E_hull <= t) and ``passing_screen`` (novel finalists; needs ``final``).

    Args:
        pool: ``candidates/pool.csv`` (``id``, ``generator``, ``target_formula``, ``valid``,
            ``charge_neutral``, ``novel_structure``).
        ehull: ``relax/ehull.csv`` with ``novel_structure`` from :mod:`matdisco.known`.
        summaries: generator name (pool ``generator`` value) -> its summary JSON.
        selected_ids: ids sent to relaxation (default: the ids in ``ehull``).
        final: ``final/all_candidates.csv`` (``id``, ``finalist``), or None.
        thresholds: E_hull thresholds, eV/atom.
    """
    from matdisco.known import reduced_formula

    gen_counts = _generator_counts(summaries)
    pool = pool.copy()
    pool["target"] = pool["target_formula"].astype(str).map(reduced_formula)
    novel_after = dict(
        zip(ehull["id"].astype(str), ehull["novel_structure"].astype(bool), strict=True)
    )
    status = dict(zip(ehull["id"].astype(str), ehull["status"].astype(str), strict=True))
    eh = dict(zip(ehull["id"].astype(str), ehull["e_above_hull"].astype(float), strict=True))
    sel = set(map(str, selected_ids)) if selected_ids is not None else set(status)
    fin = (
        set(final.loc[final["finalist"].astype(bool), "id"].astype(str))
        if final is not None and len(final)
        else set()
    )
    keys = sorted(
        set(gen_counts) | set(zip(pool["generator"].astype(str), pool["target"], strict=True))
    )
    rows = []
    for gen, target in keys:
        g = pool[(pool["generator"].astype(str) == gen) & (pool["target"] == target)]
        ok = g["valid"].astype(bool) & g["charge_neutral"].astype(bool)
        ids = g.loc[ok, "id"].astype(str)
        novel = [
            i
            for i, nv in zip(ids, g.loc[ok, "novel_structure"].astype(bool), strict=True)
            if novel_after.get(i, nv)
        ]
        row: dict[str, Any] = {
            "generator": gen,
            "target_formula": target,
            **gen_counts.get((gen, target), {"sampled": int(len(g)), "valid": int(len(g))}),
            "unique": int(len(ids)),
            "novel": len(novel),
            "selected": sum(i in sel for i in novel),
            "relaxed": sum(status.get(i) == "ok" for i in novel),
        }
        for t in thresholds:
            row[f"le_{round(t * 1000):d}meV"] = sum(eh.get(i, np.nan) <= t + 1e-9 for i in novel)
        row["passing_screen"] = sum(i in fin for i in novel) if final is not None else None
        rows.append(row)
    df = pd.DataFrame(rows)
    if not len(df):
        return df
    totals = df.drop(columns="target_formula").groupby("generator", as_index=False).sum(min_count=1)
    totals.insert(1, "target_formula", "all")
    if final is None:
        totals["passing_screen"] = None
    df = pd.concat([df, totals], ignore_index=True)
    stages = [c for c in df.columns if c not in ("generator", "target_formula")]
    for c in stages[1:]:
        v = pd.to_numeric(df[c], errors="coerce")
        df[f"rate_{c}_of_sampled"] = (v / df["sampled"].replace(0, np.nan)).round(4)
    for c in stages[stages.index("novel") + 1 :]:
        v = pd.to_numeric(df[c], errors="coerce")
        df[f"rate_{c}_of_novel"] = (v / df["novel"].replace(0, np.nan)).round(4)
    return df


def funnel_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows of a funnel table (NaN -> None)."""
    return json.loads(df.to_json(orient="records"))


def plot_funnel(path: str | Path, df: pd.DataFrame) -> None:
    """Bar chart of the funnel: one panel per generator (all targets), counts on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tot = df[df["target_formula"] == "all"] if len(df) else df
    gens = tot["generator"].tolist() if len(tot) else []
    fig, axes = plt.subplots(
        1, max(len(gens), 1), figsize=(5.5 * max(len(gens), 1), 4), squeeze=False
    )
    stages = [s for s in FUNNEL_STAGES if s in df.columns or s.startswith("le_")]
    stages = [s for s in stages if s in df.columns]
    for ax, (_, r) in zip(axes[0], tot.iterrows(), strict=False):
        vals = [float(r[s]) if r[s] is not None and not pd.isna(r[s]) else 0.0 for s in stages]
        ax.bar(range(len(stages)), [max(v, 0.5) for v in vals], color="tab:blue")
        for k, v in enumerate(vals):
            ax.text(k, max(v, 0.5) * 1.1, f"{int(v)}", ha="center", fontsize=8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(stages)), stages, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{r['generator']}: all targets", fontsize=10)
        ax.set_ylabel("structures")
    if not gens:
        axes[0][0].text(0.5, 0.5, "no candidates", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def annotate_claims(
    out: pd.DataFrame,
    ref: pd.DataFrame,
    structures: Sequence[Any],
    *,
    store_path: str | Path,
    reference_records: str | Path | None = None,
    pool_csv: str | Path | None = None,
    known: Mapping[str, Any] | None = None,
    match: Mapping[str, Any] | None = None,
    below_hull_tolerance: float = 0.005,
) -> pd.DataFrame:
    """Known-ness (:mod:`matdisco.known`), self-consistent E_hull and the below-hull flag.

    Adds ``known_composition_source``, ``novel_composition``, ``known_structure_id``,
    ``known_structure_source``, ``novel_structure``, ``e_above_hull_self_consistent`` and
    ``hull_flag`` to ``out`` (rows aligned with ``structures``; in place, returned).
    """
    from pymatgen.core import Lattice, Structure

    from matdisco.known import KnownCompositions, annotate_structures
    from matdisco.relax.shards import read_records

    reference: list[tuple[str, str, Any]] = []
    if reference_records is not None and Path(reference_records).exists():
        origin = dict(
            zip(
                ref["id"].astype(str),
                ref.get("origin", pd.Series(["store"] * len(ref))).astype(str),
                strict=True,
            )
        )
        for r in read_records(reference_records)[1]:
            if r.status == "ok" and r.lattice is not None and r.species:
                s = Structure(Lattice(r.lattice), r.species, r.frac_coords)
                reference.append((r.id, origin.get(r.id, "store"), s))
    pool_known: dict[str, str] = {}
    if pool_csv is not None and Path(pool_csv).exists():
        p = pd.read_csv(
            pool_csv, dtype={"id": str, "known_id": str}, usecols=lambda c: c in ("id", "known_id")
        )
        if "known_id" in p.columns:
            pool_known = dict(zip(p["id"], p["known_id"].fillna(""), strict=True))
    ok = (out["status"] == "ok").to_numpy()
    structs = [s if k else None for s, k in zip(structures, ok, strict=True)]
    annotate_structures(
        out,
        structs,
        store_path=store_path,
        known=KnownCompositions.from_config(store_path, known),
        pool_known_id=pool_known,
        reference=reference,
        match=match,
    )
    out["e_above_hull_self_consistent"] = self_consistent_ehull(ref[ref["status"] == "ok"], out)
    out["hull_flag"] = below_hull_flags(out["e_above_hull"], below_hull_tolerance)
    return out
