"""The ``pourbaix`` stage: ΔG_pbx of every candidate that passes the E_hull filter.

See :mod:`matdisco.screen.pourbaix` for the method.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.screen.pourbaix.diagram import PREFAC, PourbaixHull, dg_pbx
from matdisco.screen.pourbaix.references import HO as _HO
from matdisco.screen.pourbaix.references import _ref_elements, known_solids, load_ion_references
from matdisco.screen.pourbaix.system import (
    AqueousSystem,
    _comp_dict,
    build_aqueous_system,
    candidate_pourbaix_entry,
    pourbaix_diagram,
)
from matdisco.settings import ScreenPourbaixSettings
from matdisco.store import atomic_write

__all__ = ["POURBAIX_COLUMNS", "screen_pourbaix"]

log = logging.getLogger("matdisco.screen.pourbaix")

POURBAIX_COLUMNS = (
    "id",
    "formula",
    "composition",
    "e_above_hull",
    "energy_scale",
    "dG_pbx",
    "dG_pbx_ph_at_max",
    "dG_pbx_v_she_at_max",
    "dG_pbx_at_ph_min",
    "dG_pbx_at_ph_max",
    "dG_pbx_decomposes_to",
    "n_ions",
    "n_solids",
    "status",
    "reason",
)


def _method_text(settings: ScreenPourbaixSettings, solids_source: str) -> str:
    return (
        f"max over pH {settings.ph_min:g}-{settings.ph_max:g} at "
        f"{settings.potential_vs_rhe:g} V vs RHE "
        f"(V_SHE = U_RHE - {PREFAC}*pH) of the energy above the pymatgen Pourbaix hull; "
        "ions from MP aqueous ion "
        f"references at {settings.ion_concentration:g} M; known solids from {solids_source} "
        "formation energies + "
        "MP elemental references with MaterialsProjectAqueousCompatibility; "
        "candidate = known-solid hull + its "
        "e_above_hull (relax backend scale)"
    )


def screen_pourbaix(
    *,
    candidates: str | Path,
    out_csv: str | Path,
    out_summary: str | Path,
    settings: ScreenPourbaixSettings | Mapping[str, Any] | None,
    max_e_above_hull: float,
) -> pd.DataFrame:
    """ΔG_pbx of every candidate that passes the E_hull filter.

    Args:
        candidates: relaxed candidates (entry-store format) with ``e_above_hull`` (eV/atom)
            and ``energy_scale``; candidates above ``max_e_above_hull`` or without an
            E_hull are listed with status ``skipped``.
        out_csv: per-candidate table (:data:`POURBAIX_COLUMNS`).
        out_summary: JSON with settings, data hashes, counts, timings and the candidate with
            the lowest ΔG_pbx.
        settings: ``screen.pourbaix`` (a mapping is read with
            :meth:`ScreenPourbaixSettings.from_config`; None = the defaults).
        max_e_above_hull: E_hull filter, eV/atom.
    """
    from pymatgen.core import Composition

    from matdisco.provenance import sha256_file
    from matdisco.store import read_entries

    t0 = time.perf_counter()
    s = ScreenPourbaixSettings.coerce(settings)
    cand = read_entries(candidates)
    for c in ("e_above_hull", "energy_scale", "composition", "formula"):
        if c not in cand.columns:
            cand[c] = np.nan if c == "e_above_hull" else ""
    eh = cand["e_above_hull"].to_numpy(dtype=float)
    passing = np.isfinite(eh) & (eh <= max_e_above_hull + 1e-9)
    order = np.argsort(np.where(passing, eh, np.inf), kind="stable")
    chosen = [i for i in order if passing[i]][: int(s.max_candidates)]
    rows: list[dict[str, Any]] = []
    for i, r in cand.iterrows():
        base = {c: r[c] for c in ("id", "formula", "composition", "e_above_hull", "energy_scale")}
        if not passing[i]:
            why = (
                "no E_hull"
                if not np.isfinite(eh[i])
                else f"E_hull {eh[i]:.3f} > {max_e_above_hull:g} eV/atom"
            )
            rows.append({**base, "status": "skipped", "reason": why})
        elif i not in set(chosen):
            rows.append(
                {**base, "status": "skipped", "reason": f"beyond max_candidates={s.max_candidates}"}
            )
    ion_data = load_ion_references(s.ion_references)
    systems: dict[tuple[str, ...], AqueousSystem | Exception] = {}
    hulls: dict[tuple[tuple[str, float], ...], PourbaixHull | Exception] = {}
    diagrams: dict[tuple[tuple[str, float], ...], Any] = {}
    best: tuple[float, Any, Any, str] | None = None
    t_build = 0.0
    for i in chosen:
        r = cand.loc[i]
        base = {c: r[c] for c in ("id", "formula", "composition", "e_above_hull", "energy_scale")}
        comp = Composition(str(r["composition"]) or str(r["formula"]))
        els = tuple(sorted({str(e) for e in comp.elements} - _HO))
        if not els:
            rows.append({**base, "status": "failed", "reason": "no element other than H and O"})
            continue
        tb = time.perf_counter()
        if els not in systems:
            try:
                solids = known_solids(
                    s.solids, set(els) | _HO | _ref_elements(ion_data, els), s.elemental_references
                )
                systems[els] = build_aqueous_system(solids, ion_data, els)
            except Exception as err:  # noqa: BLE001 - reported per candidate
                log.warning("no Pourbaix system for %s: %s", "-".join(els), err)
                systems[els] = err
        system = systems[els]
        if isinstance(system, Exception):
            rows.append({**base, "status": "failed", "reason": f"Pourbaix system: {system}"})
            continue
        key = tuple(_comp_dict(comp).items())
        if key not in hulls:
            try:
                diagrams[key] = pourbaix_diagram(
                    system, comp, ion_concentration=s.ion_concentration
                )
                hulls[key] = PourbaixHull(diagrams[key])
            except Exception as err:  # noqa: BLE001
                hulls[key] = err
        t_build += time.perf_counter() - tb
        hull = hulls[key]
        if isinstance(hull, Exception):
            rows.append({**base, "status": "failed", "reason": f"Pourbaix diagram: {hull}"})
            continue
        try:
            entry = candidate_pourbaix_entry(
                system, str(comp.formula), float(r["e_above_hull"]), str(r["id"])
            )
            res = dg_pbx(
                hull,
                entry,
                potential_vs_rhe=s.potential_vs_rhe,
                ph_min=s.ph_min,
                ph_max=s.ph_max,
                n_ph=s.n_ph,
            )
        except Exception as err:  # noqa: BLE001
            rows.append({**base, "status": "failed", "reason": str(err)})
            continue
        rows.append(
            {
                **base,
                "dG_pbx": res.value,
                "dG_pbx_ph_at_max": res.ph_at_max,
                "dG_pbx_v_she_at_max": res.v_she_at_max,
                "dG_pbx_at_ph_min": res.at_ph_min,
                "dG_pbx_at_ph_max": res.at_ph_max,
                "dG_pbx_decomposes_to": res.decomposes_to,
                "n_ions": system.n_ions,
                "n_solids": system.n_solids,
                "status": "ok",
                "reason": "",
            }
        )
        rank = (res.value, float(r["e_above_hull"]))
        if best is None or rank < best[0]:
            best = (rank, diagrams[key], entry, str(r["formula"]))
    table = pd.DataFrame(rows)
    for c in POURBAIX_COLUMNS:
        if c not in table.columns:
            table[c] = np.nan
    table = table[list(POURBAIX_COLUMNS)]
    with atomic_write(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    ok = table["status"] == "ok"
    summary = {
        "method": _method_text(s, str(s.solids)),
        "settings": s.to_dict(),
        "max_e_above_hull": max_e_above_hull,
        "potential_scale": "pymatgen PourbaixDiagram uses V vs SHE; V_SHE = U_RHE - 0.0591*pH",
        "data": {
            k: {"path": str(getattr(s, k)), "sha256": sha256_file(getattr(s, k))}
            for k in ("solids", "ion_references", "elemental_references")
        },
        "n_candidates": len(cand),
        "n_evaluated": int(ok.sum()),
        "n_failed": int((table["status"] == "failed").sum()),
        "n_skipped": int((table["status"] == "skipped").sum()),
        "n_systems": len(systems),
        "n_diagrams": len(hulls),
        "lowest_dG_pbx": None
        if best is None
        else {
            "formula": best[3],
            "id": best[2].entry_id,
            "dG_pbx": best[0][0],
            "e_above_hull": best[0][1],
        },
        "seconds": {"total": round(time.perf_counter() - t0, 2), "diagrams": round(t_build, 2)},
    }
    with atomic_write(out_summary) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    log.info(
        "ΔG_pbx of %d candidates (%d failed, %d skipped) in %.1f s",
        summary["n_evaluated"],
        summary["n_failed"],
        summary["n_skipped"],
        summary["seconds"]["total"],
    )
    return table
