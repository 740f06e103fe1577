"""Energy above hull of relaxed candidates against a reference hull on the same energy scale.

The reference table (:mod:`matdisco.relax.reference`) and the candidates must carry the same
``energy_scale``; otherwise :func:`compute_ehull` refuses to run. Decomposition products come
from pymatgen's ``PhaseDiagram.get_decomp_and_e_above_hull`` (``allow_negative=True``: a
candidate *below* the reference hull gets a negative E_hull, i.e. it would be a new ground
state under this model).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.relax.reference import load_reference, phase_diagram
from matdisco.store import atomic_write, read_entries, read_structure_arrays, write_store

__all__ = [
    "candidate_ehull",
    "metastable_rates",
    "compute_ehull",
    "EHULL_COLUMNS",
    "CANDIDATE_REQUIRED",
    "validate_candidates",
]

log = logging.getLogger(__name__)

EHULL_COLUMNS = (
    "id",
    "generator",
    "parent",
    "target_formula",
    "formula",
    "nsites",
    "status",
    "reason",
    "converged",
    "steps",
    "energy_per_atom",
    "formation_energy_per_atom",
    "e_above_hull",
    "decomposition",
    "prescreen_e_above_hull",
    "energy_scale",
    "reference",
    "novel_composition",
    "novel_structure",
    "known_composition_source",
    "known_structure_id",
    "known_structure_source",
    "e_above_hull_self_consistent",
    "hull_flag",
)


#: columns the relaxed-candidate store must have for :func:`compute_ehull`
CANDIDATE_REQUIRED = ("id", "composition", "status", "converged", "energy_per_atom", "energy_scale")


def validate_candidates(cand: pd.DataFrame, source: str | Path = "candidates") -> None:
    """Raise ValueError naming ``source`` and the missing columns of :data:`CANDIDATE_REQUIRED`.

    An empty table (nothing was relaxed) needs only ``status``.
    """
    required = CANDIDATE_REQUIRED if len(cand) else ("status",)
    missing = [c for c in required if c not in cand.columns]
    if missing:
        raise ValueError(
            f"{source}: candidate table lacks column(s) {missing} "
            f"(required: {list(CANDIDATE_REQUIRED)})"
        )


def _decomp_text(decomp: dict[Any, float]) -> str:
    parts = sorted(decomp.items(), key=lambda kv: -kv[1])
    return "; ".join(f"{e.composition.reduced_formula} ({e.name}): {amt:.3f}" for e, amt in parts)


def candidate_ehull(pdg: Any, composition: str, energy_per_atom: float) -> tuple[float, float, str]:
    """(E_hull, formation energy, decomposition text) of one composition/energy on ``pdg``.

    NaNs and an empty text when the energy is not finite or the composition has elements
    outside the diagram.
    """
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition

    comp = Composition(composition)
    if not math.isfinite(energy_per_atom) or not {str(e) for e in comp.elements} <= {
        str(e) for e in pdg.elements
    }:
        return float("nan"), float("nan"), ""
    entry = PDEntry(comp, energy_per_atom * comp.num_atoms, name="candidate")
    decomp, e_hull = pdg.get_decomp_and_e_above_hull(entry, allow_negative=True)
    return float(e_hull), float(pdg.get_form_energy_per_atom(entry)), _decomp_text(decomp)


def metastable_rates(
    df: pd.DataFrame, thresholds: Sequence[float] = (0.2, 0.08), by: str = "generator"
) -> dict[str, Any]:
    """Counts and metastable rates (E_hull <= each threshold) per generator and overall.

    ``rate_le_<meV>`` divides by every candidate sent to relaxation (failures and pre-screen
    rejections count as not metastable); ``rate_le_<meV>_of_relaxed`` divides by the
    successfully relaxed ones only.
    """

    def summary(g: pd.DataFrame) -> dict[str, Any]:
        eh = g["e_above_hull"].to_numpy(dtype=float)
        ok = (g["status"] == "ok").to_numpy()
        out: dict[str, Any] = {
            "n": int(len(g)),
            "n_relaxed": int(ok.sum()),
            "n_failed": int((g["status"] == "failed").sum()),
            "n_prescreen_rejected": int((g["status"] == "prescreen_rejected").sum()),
            "n_not_converged": int((ok & ~g["converged"].astype(bool).to_numpy()).sum()),
            "n_with_e_above_hull": int(np.isfinite(eh).sum()),
            "median_e_above_hull": float(np.nanmedian(eh)) if np.isfinite(eh).any() else None,
            "n_below_reference_hull": int((eh < -1e-6).sum()),
        }
        for t in thresholds:
            key = f"le_{round(t * 1000):d}meV"
            n_le = int((eh <= t + 1e-9).sum())
            out[f"n_{key}"] = n_le
            out[f"rate_{key}"] = round(n_le / len(g), 4) if len(g) else None
            out[f"rate_{key}_of_relaxed"] = round(n_le / ok.sum(), 4) if ok.sum() else None
        return out

    groups = df.groupby(df[by].fillna("").astype(str)) if by in df.columns and len(df) else []
    return {
        "thresholds_eV_per_atom": list(thresholds),
        "by_generator": {str(k): summary(g) for k, g in groups},
        "all": summary(df) if len(df) else {"n": 0},
    }


def compute_ehull(
    relaxed_store: str | Path,
    reference_csv: str | Path,
    out_csv: str | Path,
    out_store: str | Path,
    out_rates: str | Path,
    *,
    thresholds: Sequence[float] = (0.2, 0.08),
    reference_mode: str = "",
    store_path: str | Path | None = None,
    reference_records: str | Path | None = None,
    pool_csv: str | Path | None = None,
    generator_summaries: dict[str, str | Path] | None = None,
    selected_csv: str | Path | None = None,
    known: dict[str, Any] | None = None,
    match: dict[str, Any] | None = None,
    below_hull_tolerance: float = 0.005,
) -> pd.DataFrame:
    """E_hull, formation energy and decomposition of each relaxed candidate.

    Args:
        relaxed_store: the gathered relaxation store (``relax/relaxed.h5``).
        reference_csv: the reference table on the same energy scale.
        out_csv: per-candidate table (:data:`EHULL_COLUMNS`).
        out_store: the relaxed structures with ``e_above_hull`` / ``formation_energy_per_atom``
            filled and all columns of ``out_csv`` (entry-store format, for screening).
        out_rates: metastable rates per generator (JSON).
        thresholds: metastability thresholds, eV/atom.
        reference_mode: how the reference energies were made (for the ``reference`` column).
        store_path: the entry store; when given, known-ness (:mod:`matdisco.known`), the
            self-consistent E_hull and the below-hull flag are added
            (:func:`matdisco.relax.claims.annotate_claims`), candidates matching a known
            structure are left out of the rates (reported apart), and the S.U.N. funnel is
            written into the rates (needs ``pool_csv`` and ``generator_summaries``).
        reference_records: the reference phases' relaxed structures (``reference.jsonl``).
        pool_csv: ``candidates/pool.csv`` (pool matches, funnel).
        generator_summaries: generator name -> its summary JSON (funnel).
        selected_csv: ``relax/selected.csv`` (funnel stage "selected").
        known: the ``known`` config section.
        match: StructureMatcher tolerances (the ``pool`` section).
        below_hull_tolerance: flag E_hull below minus this, eV/atom.

    Every input is read and checked before any output is written.

    Raises:
        FileNotFoundError: when an input file is missing.
        ValueError: when an input lacks a required column (named in the message), the
            reference has no usable phase, or candidate and reference energy scales differ.
    """
    if not Path(relaxed_store).is_file():
        raise FileNotFoundError(f"relaxed candidate store {relaxed_store} not found")
    cand = read_entries(relaxed_store)
    validate_candidates(cand, relaxed_store)
    arrays = read_structure_arrays(relaxed_store)
    if len(arrays) != len(cand):
        raise ValueError(f"{relaxed_store}: {len(cand)} entries but {len(arrays)} structures")
    ref = load_reference(reference_csv)  # validated: required columns, usable phases
    ref_scales = set(ref["energy_scale"].astype(str))
    cand_scales = (
        set(cand.loc[cand["status"] != "prescreen_rejected", "energy_scale"].astype(str)) - {""}
        if len(cand)
        else set()
    )
    if len(ref_scales) != 1 or (cand_scales and cand_scales != ref_scales):
        raise ValueError(
            f"energy scales differ: candidates {sorted(cand_scales)}, "
            f"reference {sorted(ref_scales)}"
        )
    scale = ref_scales.pop()
    ok_ref = ref[ref["status"] == "ok"]
    pdg = phase_diagram(ref)
    ref_label = (
        f"{len(ok_ref)} known phases ({scale}{', ' + reference_mode if reference_mode else ''})"
    )
    eh, ef, dec, pre = [], [], [], []
    reasons = (
        cand["reason"].fillna("").astype(str).tolist()
        if "reason" in cand.columns
        else [""] * len(cand)
    )
    hull_els = {str(e) for e in pdg.elements}
    for k, (_, row) in enumerate(cand.iterrows()):
        pre.append(
            candidate_ehull(
                pdg, row["composition"], float(row.get("prescreen_energy_per_atom", np.nan))
            )[0]
        )
        if row["status"] != "ok":
            eh.append(np.nan), ef.append(np.nan), dec.append("")
            continue
        a, b, c = candidate_ehull(pdg, row["composition"], float(row["energy_per_atom"]))
        eh.append(a), ef.append(b), dec.append(c)
        if not np.isfinite(a):
            els = set(str(row.get("chemsys", "")).split("-")) - {""}
            why = "elements outside the reference system" if els - hull_els else "no finite energy"
            reasons[k] = "; ".join(x for x in (reasons[k], f"no E_hull: {why}") if x)
    out = cand.copy()
    out["reason"] = reasons
    out["e_above_hull"] = eh
    out["formation_energy_per_atom"] = ef
    out["decomposition"] = dec
    out["prescreen_e_above_hull"] = pre
    out["energy_scale"] = scale
    out["reference"] = ref_label
    out["e_above_hull_method"] = np.where(
        np.isfinite(eh), f"relaxed ({scale}) vs reference hull of {ref_label}", ""
    )
    relaxed_arrays = arrays
    if store_path is not None:
        from matdisco.relax.claims import annotate_claims

        annotate_claims(
            out,
            ref,
            relaxed_arrays.structures() if len(out) else [],
            store_path=store_path,
            reference_records=reference_records,
            pool_csv=pool_csv,
            known=known,
            match=match,
            below_hull_tolerance=below_hull_tolerance,
        )
    for c in EHULL_COLUMNS:
        if c not in out.columns:
            out[c] = "" if c in ("generator", "parent", "target_formula") else np.nan
    table = out[list(EHULL_COLUMNS)]
    if store_path is not None and len(out):
        # generated means generated: known structures are reported apart, not in the rates
        novel = out["novel_structure"].astype(bool).to_numpy()
        rates = metastable_rates(out[novel], thresholds)
        rates["definition"] = (
            "rates over relaxed candidates that match no known structure (matdisco.known); "
            "denominators: candidates sent to relaxation; funnel: per generator and target"
        )
        rates["known_structures_excluded"] = metastable_rates(out[~novel], thresholds)
        rates["below_reference_hull"] = out.loc[
            out["hull_flag"].astype(str) != "", ["id", "formula", "e_above_hull"]
        ].to_dict("records")
        if pool_csv is not None and generator_summaries:
            from matdisco.relax.claims import funnel, funnel_records

            summ = {g: json.loads(Path(p).read_text()) for g, p in generator_summaries.items()}
            sel = (
                pd.read_csv(selected_csv, dtype={"id": str})["id"].tolist()
                if selected_csv is not None
                else None
            )
            rates["funnel"] = funnel_records(
                funnel(
                    pd.read_csv(pool_csv, dtype={"id": str}),
                    out,
                    summ,
                    selected_ids=sel,
                    thresholds=thresholds,
                )
            )
    else:
        rates = metastable_rates(out, thresholds)
    rates["energy_scale"] = scale
    rates["reference"] = {
        "n_phases": int(len(ok_ref)),
        "n_failed": int(len(ref) - len(ok_ref)),
        "mode": reference_mode,
    }
    has_check = {"store_e_above_hull", "e_above_hull_model"} <= set(ok_ref.columns)
    check = (
        ok_ref[np.isfinite(ok_ref["store_e_above_hull"].to_numpy(dtype=float))]
        if has_check
        else ok_ref[:0]
    )
    if has_check and len(check):
        diff = check["e_above_hull_model"].to_numpy(dtype=float) - check[
            "store_e_above_hull"
        ].to_numpy(dtype=float)
        rates["reference"]["mae_e_above_hull_vs_store"] = round(float(np.nanmean(np.abs(diff))), 4)
        rates["reference"]["n_compared"] = int(np.isfinite(diff).sum())
    # every input checked and every result computed: now write
    with atomic_write(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_store(
        out_store,
        out,
        arrays,
        data_source="relax",
        provenance={
            "relaxed": str(relaxed_store),
            "reference": str(reference_csv),
            "energy_scale": scale,
        },
    )
    with atomic_write(out_rates) as tmp:
        Path(tmp).write_text(json.dumps(rates, indent=2) + "\n")
    log.info("E_hull of %d candidates on %s; rates: %s", len(out), scale, rates["all"])
    return table
