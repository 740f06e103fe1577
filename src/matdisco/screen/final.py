"""The final candidate table: thresholds, pass/fail per criterion, CIFs and powder XRD.

Every candidate with its E_hull (relax stage), ΔG_pbx (:mod:`matdisco.screen.pourbaix`) and
band gap (:mod:`matdisco.screen.bandgap`) is judged against the thresholds (defaults: the seed
photoanode screen, E_hull <= 80 meV/atom, ΔG_pbx <= 0.59 eV/atom, HSE-level gap 1.6-3.0 eV).
A criterion whose value is unknown (e.g. no ΔG_pbx because the E_hull filter failed) counts as
failed. Candidates are ranked by (criteria failed, normalised violation, ΔG_pbx, E_hull); the
normalised violation sums, over criteria, how far the value is outside its limit divided by
the limit (gap: by the window width; unknown: 1).

Outputs name their origin in every column: energies carry the relax backend's scale slug
(``e_above_hull_chgnet_mp2020``), surrogate numbers say ``ml``/``est``, and
``candidates_columns.json`` describes each column with its unit and source. If no candidate
passes every criterion the table still lists the best-ranked ones (``finalist`` false), and
their CIFs and XRD patterns are written as the "closest" candidates, which the summary says.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.relax.claims import BELOW_HULL_TEXT
from matdisco.screen.plots import plot_final_scatter, plot_xrd_patterns
from matdisco.settings import ScreenSettings, ScreenThresholdsSettings
from matdisco.store import atomic_write

__all__ = ["scale_slug", "judge", "powder_xrd", "screen_candidates"]


log = logging.getLogger(__name__)


def scale_slug(energy_scale: str) -> str:
    """Column-name form of an energy scale: version numbers dropped, ``[a-z0-9_]`` only.

    ``chgnet-0.3.0/mp2020`` -> ``chgnet_mp2020``, ``vasp-pbe/mp2020`` -> ``vasp_pbe_mp2020``,
    ``gpaw-pbe`` -> ``gpaw_pbe``; empty -> ``unknown_scale``.
    """
    s = re.sub(r"-\d+(?:\.\d+)+", "", str(energy_scale).strip().lower())
    s = re.sub(r"[^a-z0-9]+", "_", s).strip("_")
    return s or "unknown_scale"


def _gap_for_screen(df: pd.DataFrame, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    est = df["gap_hse_est"].to_numpy(dtype=float)
    est_std = df["gap_hse_est_std"].to_numpy(dtype=float)
    src = np.where(np.isfinite(est), "gap_hse_est (ML PBE surrogate + linear mapping)", "")
    col = {"vasp_hse": "gap_hse_vasp", "gpaw_pbe": "gap_hse_est_gpaw"}.get(method)
    if col and col in df.columns:
        dft = df[col].to_numpy(dtype=float)
        use = np.isfinite(dft)
        label = (
            "gap_hse_vasp (VASP HSE06)"
            if method == "vasp_hse"
            else "gap_hse_est_gpaw (GPAW PBE + linear mapping)"
        )
        est = np.where(use, dft, est)
        est_std = np.where(use, np.nan, est_std)
        src = np.where(use, label, src)
    return est, est_std, src


def judge(
    df: pd.DataFrame,
    thresholds: ScreenThresholdsSettings | Mapping[str, float] | None,
    *,
    eh_col: str,
    dg_col: str,
    gap_col: str,
) -> pd.DataFrame:
    """Pass/fail per criterion, count, violation score and rank (1 = best).

    Args:
        df: one row per candidate with the three value columns.
        thresholds: ``screen.thresholds``: ``e_above_hull_max``, ``dG_pbx_max`` (eV/atom),
            ``gap_min``, ``gap_max`` (eV); a mapping is read by
            :meth:`ScreenThresholdsSettings.coerce` (missing keys: the schema defaults).
        eh_col, dg_col, gap_col: the value columns.

    Returns:
        ``df`` with ``pass_e_above_hull``, ``pass_dG_pbx``, ``pass_gap``, ``n_criteria_passed``,
        ``passes_all``, ``failed_criteria``, ``violation`` and ``rank`` added, sorted by rank.
    """
    t = ScreenThresholdsSettings.coerce(thresholds)
    out = df.copy()
    eh = out[eh_col].to_numpy(dtype=float)
    dg = out[dg_col].to_numpy(dtype=float)
    gap = out[gap_col].to_numpy(dtype=float)
    lo, hi = t.gap_min, t.gap_max
    width = max(hi - lo, 1e-9)
    checks = {
        "e_above_hull": (
            eh <= t.e_above_hull_max + 1e-12,
            np.maximum(eh - t.e_above_hull_max, 0) / max(t.e_above_hull_max, 1e-3),
            eh,
        ),
        "dG_pbx": (
            dg <= t.dG_pbx_max + 1e-12,
            np.maximum(dg - t.dG_pbx_max, 0) / max(t.dG_pbx_max, 1e-3),
            dg,
        ),
        "gap": (
            (gap >= lo - 1e-12) & (gap <= hi + 1e-12),
            (np.maximum(lo - gap, 0) + np.maximum(gap - hi, 0)) / width,
            gap,
        ),
    }
    violation = np.zeros(len(out))
    failed: list[list[str]] = [[] for _ in range(len(out))]
    labels = {
        "e_above_hull": f"E_hull > {t.e_above_hull_max:g} eV/atom",
        "dG_pbx": f"dG_pbx > {t.dG_pbx_max:g} eV/atom",
        "gap": f"gap outside {lo:g}-{hi:g} eV",
    }
    for name, (ok, excess, val) in checks.items():
        known = np.isfinite(val)
        out[f"pass_{name}"] = ok & known
        violation += np.where(known, excess, 1.0)
        for i in np.flatnonzero(~(ok & known)):
            failed[i].append(labels[name] if known[i] else f"{name} unknown")
    out["n_criteria_passed"] = sum(out[f"pass_{n}"].astype(int) for n in checks)
    out["passes_all"] = out["n_criteria_passed"] == len(checks)
    out["failed_criteria"] = ["; ".join(f) for f in failed]
    out["violation"] = np.round(violation, 6)
    key = pd.DataFrame(
        {
            "nf": len(checks) - out["n_criteria_passed"].to_numpy(),
            "v": violation,
            "dg": np.where(np.isfinite(dg), dg, np.inf),
            "eh": np.where(np.isfinite(eh), eh, np.inf),
        }
    )
    order = key.sort_values(["nf", "v", "dg", "eh"], kind="stable").index.to_numpy()
    out = out.iloc[order].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def powder_xrd(
    structure: Any, *, radiation: str = "CuKa", two_theta: tuple[float, float] = (10.0, 80.0)
) -> pd.DataFrame:
    """Simulated powder XRD peaks (pymatgen ``XRDCalculator``): 2θ (deg), intensity (max 100),
    hkl, d."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    pat = XRDCalculator(wavelength=radiation).get_pattern(
        structure, scaled=True, two_theta_range=two_theta
    )
    hkl = [
        " ".join(f"({' '.join(str(int(i)) for i in h['hkl'])})x{h['multiplicity']}" for h in fam)
        for fam in pat.hkls
    ]
    return pd.DataFrame(
        {"two_theta_deg": pat.x, "intensity": pat.y, "hkl_families": hkl, "d_spacing_A": pat.d_hkls}
    )


KNOWN_COLUMNS = (
    "known_composition_source",
    "known_structure_id",
    "known_structure_source",
    "e_above_hull_self_consistent",
    "hull_flag",
)


def _claims(df: pd.DataFrame) -> list[str]:
    """One text per row: what it may claim (novelty with its source, the below-hull flag)."""
    out = []
    for _, r in df.iterrows():
        novel_s = (
            bool(r.get("novel_structure", True))
            if not pd.isna(r.get("novel_structure", True))
            else True
        )
        ksrc = str(r.get("known_composition_source", "") or "")
        ksrc = "" if ksrc == "nan" else ksrc
        if not novel_s:
            text = (
                f"known structure {r.get('known_structure_id', '')} "
                f"({r.get('known_structure_source', '')}): not a discovery"
            )
        elif ksrc:
            text = f"new structure of a known composition (known: {ksrc})"
        else:
            text = (
                "new structure of a composition none of the project's known sources lists "
                "(unreported here; check the literature before claiming it)"
            )
        flag = str(r.get("hull_flag", "") or "")
        if flag and flag != "nan":
            text += f"; {flag}"
        out.append(text)
    return out


def _column_docs(
    slug: str, scale: str, method: str, gap_mapping: dict[str, Any] | None, th: dict[str, float]
) -> dict[str, str]:
    m = gap_mapping or {}
    mapping = f"{m.get('slope', '?')}*PBE + {m.get('intercept', '?')} eV ({m.get('source', '')})"
    return {
        "rank": (
            "1 = best: fewest failed criteria, then smallest normalised violation, then dG_pbx, "
            "then E_hull"
        ),
        "id": "candidate id (relax stage)",
        "formula": "reduced formula",
        "composition": "formula of the relaxed cell",
        "generator": (
            "structure generator that proposed it (gan | template), from the candidate pool"
        ),
        "parent": "template / parent entry id, from the candidate pool",
        "target_formula": "target composition it was generated for (proposals)",
        "novel_composition": (
            "no source knows the formula (matdisco.known: ICSD, store, labels, user file)"
        ),
        "novel_structure": (
            "no StructureMatcher match with a known structure of that formula "
            "(matdisco.known; after relaxation)"
        ),
        "known_composition_source": (
            "sources that know the formula (icsd;store;labels;user); '' = unreported"
        ),
        "known_structure_id": (
            "id of the matching known structure (store entry or reference phase); '' = none"
        ),
        "known_structure_source": (
            "where the match was found: store (as generated) | store (relaxed) | "
            "reference (relaxed) | reference template stand-in"
        ),
        "e_above_hull_self_consistent": (
            "E_hull, eV/atom, against the reference plus every relaxed candidate"
        ),
        "hull_flag": f"'{BELOW_HULL_TEXT}' when E_hull < -tolerance (ehull.below_hull_tolerance)",
        "claim": (
            "what the row may claim: new structure of a new / known composition, "
            "known structure (not a discovery), and the below-hull flag"
        ),
        "relax_status": "relaxation outcome (ok | failed | prescreen_rejected)",
        f"e_above_hull_{slug}": (
            f"energy above the convex hull, eV/atom, relax backend on scale '{scale}' "
            "vs known phases recomputed on the same scale"
        ),
        "ehull_reference": "the reference hull the E_hull was measured against (relax stage)",
        f"hull_decomposition_{slug}": "decomposition products on that hull (relax stage)",
        f"dG_pbx_{slug}": (
            "Pourbaix decomposition free energy, eV/atom: max over the pH range at the "
            "screening potential vs RHE "
            "(pymatgen PourbaixDiagram, SHE scale, V_SHE = U_RHE - 0.0591 pH) of the energy "
            "above the Pourbaix hull; "
            "MP aqueous ion references + known solids (store formation energies + MP "
            "elemental references, "
            f"MaterialsProjectAqueousCompatibility); candidate placed at its E_hull ({scale}) "
            "above the known-solid hull"
        ),
        "dG_pbx_ph_at_max": "pH where dG_pbx is reached",
        "dG_pbx_decomposes_to": (
            "Pourbaix-hull species at that pH (what the candidate would turn into)"
        ),
        "gap_pbe_ml": (
            "PBE band gap, eV: ML SURROGATE (LightGBM ensemble trained on the store's MP "
            "PBE gaps), an estimate"
        ),
        "gap_pbe_ml_std": "standard deviation of gap_pbe_ml over the ensemble members, eV",
        "p_metal_ml": "surrogate probability that the PBE gap is zero (metal)",
        "gap_model": (
            "which surrogate gave gap_pbe_ml: structure (relaxed-structure site-environment "
            "statistics + composition) or composition (composition-only fallback), +chgnet "
            "when the CHGNet structure embedding is among its features, plus +<table> for "
            "each element-embedding table (e.g. structure+chgnet+megnet16+oliynyk)"
        ),
        "gap_hse_est": (
            f"HSE-level band gap ESTIMATE, eV: {mapping} applied to the surrogate members"
        ),
        "gap_hse_est_std": "spread of gap_hse_est over the ensemble members, eV",
        "gap_hse_vasp": (
            "HSE06 band gap from a finished VASP MPHSEBSSet run, eV (vasp_hse method; "
            "empty until run)"
        ),
        "gap_pbe_gpaw": "PBE band gap from a GPAW single point, eV (gpaw_pbe method)",
        "gap_hse_est_gpaw": f"HSE-level ESTIMATE from gap_pbe_gpaw via {mapping}",
        "dft_status": (
            "state of the DFT gap path for this candidate (inputs written / done / failed; "
            "empty for surrogate)"
        ),
        "gap_for_screen": f"the gap the gap criterion used (bandgap method '{method}'), eV",
        "gap_for_screen_std": "its uncertainty (ensemble spread; empty for DFT values), eV",
        "gap_for_screen_source": "which column gap_for_screen came from",
        "pass_e_above_hull": f"E_hull <= {th['e_above_hull_max']:g} eV/atom",
        "pass_dG_pbx": f"dG_pbx <= {th['dG_pbx_max']:g} eV/atom",
        "pass_gap": f"{th['gap_min']:g} <= gap_for_screen <= {th['gap_max']:g} eV",
        "n_criteria_passed": "criteria passed (of 3); an unknown value counts as failed",
        "passes_all": "passes every criterion",
        "finalist": "passes every criterion (CIF and XRD written)",
        "failed_criteria": "the criteria it fails, with the reason",
        "violation": "sum over criteria of (distance outside the limit / limit); unknown = 1",
        "spacegroup": (
            "space group of the relaxed structure (spglib, symprec 0.1), finalists / closest only"
        ),
        "cif": "CIF file (relative to final/), finalists / closest only",
        "xrd_csv": "simulated powder XRD peaks (relative to final/), finalists / closest only",
    }


def _plot_best_pourbaix(
    path: str | Path,
    judged: pd.DataFrame,
    candidates: str | Path,
    eh_col: str,
    dg_col: str,
    settings: dict[str, Any] | None,
) -> None:
    from matdisco.screen.pourbaix import plot_candidate

    have = judged[np.isfinite(judged[dg_col].to_numpy(dtype=float))]
    if not len(have):
        plot_candidate(
            path,
            composition=None,
            e_above_hull=np.nan,
            entry_id="",
            title="",
            settings=settings or {},
            empty_reason="no candidate has a ΔG_pbx (none passed the E_hull filter)",
        )
        return
    r = have.iloc[0]
    status = "finalist" if bool(r["finalist"]) else "best-ranked, not a finalist"
    title = (
        f"#{r['rank']} {r['formula']} ({r['id']}, {status})\n"
        f"ΔG_pbx = {float(r[dg_col]):.3f} eV/atom "
        f"at pH {float(r['dG_pbx_ph_at_max']):g}"
    )
    plot_candidate(
        path,
        composition=str(r["composition"] or r["formula"]),
        e_above_hull=float(r[eh_col]),
        entry_id=str(r["id"]),
        title=title,
        settings=settings or {},
    )


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def screen_candidates(
    *,
    candidates: str | Path,
    pourbaix_csv: str | Path,
    bandgap_csv: str | Path,
    bandgap_metrics: str | Path | None,
    settings: ScreenSettings | Mapping[str, Any] | None,
    method: str,
    out_csv: str | Path,
    out_all: str | Path,
    out_columns: str | Path,
    out_summary: str | Path,
    out_cifs: str | Path,
    out_xrd: str | Path,
    out_xrd_plot: str | Path,
    out_scatter: str | Path,
    out_pourbaix_plot: str | Path,
    pourbaix_settings: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The screen stage: join, judge, rank, write the final table, CIFs and XRD.

    Args:
        candidates: relaxed candidates with E_hull (entry-store format).
        pourbaix_csv: output of the pourbaix stage.
        bandgap_csv: output of the bandgap stage.
        bandgap_metrics: its metrics JSON (for the mapping text); optional.
        settings: the ``screen`` settings (thresholds, n_best, xrd, include_known_structures,
            ...); a mapping (the config section or a part of it) is read by
            :meth:`ScreenSettings.coerce`.
        method: ``screen.bandgap_method``.
        out_csv: the final table: finalists and best-ranked others (at most ``n_best`` rows
            unless more pass).
        out_all: every candidate, judged and ranked.
        out_columns: JSON: column -> description (unit, source).
        out_summary: JSON: counts, thresholds, finalists, whether fallbacks were written.
        out_cifs: folder of CIFs (finalists, or the best-ranked ones if none pass).
        out_xrd: folder of XRD peak tables (CSV), same structures.
        out_xrd_plot: their stick patterns.
        out_scatter: E_hull vs gap scatter coloured by ΔG_pbx.
        out_pourbaix_plot: Pourbaix diagram of the best-ranked candidate that has a ΔG_pbx.
        pourbaix_settings: ``screen.pourbaix`` (to rebuild that candidate's diagram).
    """
    from pymatgen.io.cif import CifWriter
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from matdisco.store import read_entries, read_structure_arrays

    s = ScreenSettings.coerce(settings)
    th = s.thresholds.to_dict()  # plain floats for the column docs, plot and summary JSON
    xrd = s.xrd
    cand = read_entries(candidates)
    scales = sorted(set(cand.get("energy_scale", pd.Series(dtype=str)).astype(str)) - {"", "nan"})
    scale = scales[0] if len(scales) == 1 else ("+".join(scales) if scales else "")
    if len(scales) > 1:
        log.warning("candidates on several energy scales %s: E_hull columns mix them", scales)
    slug = scale_slug(scale)
    eh_col, dg_col = f"e_above_hull_{slug}", f"dG_pbx_{slug}"
    keep = [
        "id",
        "formula",
        "composition",
        "generator",
        "parent",
        "target_formula",
        "novel_composition",
        "novel_structure",
        *KNOWN_COLUMNS,
    ]
    base = cand[[c for c in keep if c in cand.columns]].copy()
    base["row"] = np.arange(len(cand))
    base["relax_status"] = cand["status"].astype(str) if "status" in cand.columns else ""
    base[eh_col] = (
        cand["e_above_hull"].to_numpy(dtype=float) if "e_above_hull" in cand.columns else np.nan
    )
    base["ehull_reference"] = cand["reference"].astype(str) if "reference" in cand.columns else ""
    base[f"hull_decomposition_{slug}"] = (
        cand["decomposition"].astype(str) if "decomposition" in cand.columns else ""
    )
    pbx = pd.read_csv(pourbaix_csv, dtype={"id": str})
    pbx = pbx.rename(columns={"dG_pbx": dg_col})[
        ["id", dg_col, "dG_pbx_ph_at_max", "dG_pbx_decomposes_to"]
    ]
    gaps = pd.read_csv(bandgap_csv, dtype={"id": str}).drop(columns=["formula"], errors="ignore")
    df = base.merge(pbx, on="id", how="left").merge(gaps, on="id", how="left")
    g, gstd, gsrc = _gap_for_screen(df, method)
    df["gap_for_screen"], df["gap_for_screen_std"], df["gap_for_screen_source"] = g, gstd, gsrc
    judged = judge(df, th, eh_col=eh_col, dg_col=dg_col, gap_col="gap_for_screen")
    judged["finalist"] = judged["passes_all"]
    # generated means generated: a known structure is flagged, not a finalist (unless configured)
    if "novel_structure" in judged.columns and not s.include_known_structures:
        judged["finalist"] &= judged["novel_structure"].fillna(True).astype(bool)
    judged["claim"] = _claims(judged)
    n_final = int(judged["finalist"].sum())
    # structures: finalists (up to max_structures), else the best-ranked few as the closest ones
    if not len(judged):
        picked = judged.index[:0]
        note = "no candidates reached the screen (the candidates file is empty)"
        log.warning("screen: %s", note)
    elif n_final:
        picked = judged.index[judged["finalist"]][: xrd.max_structures]
        note = f"{n_final} finalists pass every criterion"
    else:
        picked = judged.index[: min(s.n_fallback_structures, len(judged))]
        note = (
            f"no candidate passes every criterion: structures of the {len(picked)} best-ranked "
            "(closest) candidates, NOT finalists"
        )
    cif_dir, xrd_dir = Path(out_cifs), Path(out_xrd)
    cif_dir.mkdir(parents=True, exist_ok=True)
    xrd_dir.mkdir(parents=True, exist_ok=True)
    for c in ("spacegroup", "cif", "xrd_csv"):
        judged[c] = ""
    patterns: list[tuple[str, pd.DataFrame]] = []
    if len(picked):
        rows = judged.loc[picked, "row"].to_numpy(dtype=int)
        structures = read_structure_arrays(candidates, rows).structures()
        for idx, st in zip(picked, structures, strict=True):
            rid, formula = str(judged.at[idx, "id"]), str(judged.at[idx, "formula"])
            name = _safe_name(f"{judged.at[idx, 'rank']:03d}_{formula}_{rid}")
            try:
                sga = SpacegroupAnalyzer(st, symprec=0.1)
                sg = f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})"
                refined = sga.get_refined_structure()
                CifWriter(refined, symprec=0.1).write_file(cif_dir / f"{name}.cif")
            except Exception as err:  # noqa: BLE001 - fall back to the relaxed P1 cell
                log.warning("%s: symmetrised CIF failed (%s); writing the P1 cell", rid, err)
                sg = ""
                CifWriter(st).write_file(cif_dir / f"{name}.cif")
            pat = powder_xrd(
                st,
                radiation=xrd.radiation,
                two_theta=(xrd.two_theta_min, xrd.two_theta_max),
            )
            with atomic_write(xrd_dir / f"{name}.csv") as tmp:
                pat.to_csv(tmp, index=False)
            judged.at[idx, "spacegroup"] = sg
            judged.at[idx, "cif"] = f"cifs/{name}.cif"
            judged.at[idx, "xrd_csv"] = f"xrd/{name}.csv"
            patterns.append((f"#{judged.at[idx, 'rank']} {formula} {sg}", pat))
    judged = judged.drop(columns=["row"])
    front = [
        "rank",
        "id",
        "formula",
        "finalist",
        "claim",
        "failed_criteria",
        eh_col,
        dg_col,
        "gap_for_screen",
        "gap_for_screen_std",
    ]
    cols = front + [c for c in judged.columns if c not in front]
    judged = judged[cols]
    n_rows = max(n_final, min(s.n_best, len(judged)))
    with atomic_write(out_all) as tmp:
        judged.to_csv(tmp, index=False)
    with atomic_write(out_csv) as tmp:
        judged.head(n_rows).to_csv(tmp, index=False)
    mapping = None
    if bandgap_metrics and Path(bandgap_metrics).exists():
        mapping = json.loads(Path(bandgap_metrics).read_text(encoding="utf-8")).get("hse_mapping")
    docs = _column_docs(slug, scale, method, mapping, th)
    with atomic_write(out_columns) as tmp:
        Path(tmp).write_text(
            json.dumps({c: docs.get(c, "") for c in judged.columns}, indent=2) + "\n",
            encoding="utf-8",
        )
    plot_final_scatter(out_scatter, judged, eh_col, dg_col, th, scale or "unknown scale")
    plot_xrd_patterns(
        out_xrd_plot,
        patterns,
        xrd.radiation,
        note,
        (xrd.two_theta_min, xrd.two_theta_max),
    )
    _plot_best_pourbaix(out_pourbaix_plot, judged, candidates, eh_col, dg_col, pourbaix_settings)
    summary = {
        "energy_scale": scale,
        "bandgap_method": method,
        "thresholds": th,
        "n_candidates": len(judged),
        "n_with_e_above_hull": int(np.isfinite(judged[eh_col].to_numpy(dtype=float)).sum()),
        "n_pass": {k: int(judged[f"pass_{k}"].sum()) for k in ("e_above_hull", "dG_pbx", "gap")},
        "n_finalists": n_final,
        "finalists": judged.loc[
            judged["finalist"],
            [
                c
                for c in (
                    "id",
                    "formula",
                    "claim",
                    "known_composition_source",
                    "known_structure_source",
                )
                if c in judged.columns
            ],
        ]
        .head(50)
        .to_dict("records"),
        "n_below_reference_hull": int(
            (judged.get("hull_flag", pd.Series(dtype=str)).fillna("").astype(str) != "").sum()
        ),
        "n_known_structures": int((~judged["novel_structure"].fillna(True).astype(bool)).sum())
        if "novel_structure" in judged.columns
        else 0,
        "structures_written": note,
        "table_rows": int(n_rows),
    }
    with atomic_write(out_summary) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    log.info("screen: %d candidates, %d finalists (%s)", len(judged), n_final, note)
    return judged
