#!/usr/bin/env python
"""Benchmark: leave-one-out structure recovery of the template generator.

For N ternary compounds drawn uniformly from all labelled ternaries of the store, every entry
of the compound's formula is hidden and its structure is predicted from the remaining templates.
Recovery is reported unconditionally (all drawn compounds), for the ICSD-linked (experimental,
``is_experimental == 1``) subset, and conditionally on the prototype occurring at least twice
(another compound of a *different* formula has the same prototype label: the only compounds a
template method can recover; this was the old, conditional headline), each with a 95 % Wilson
score interval. ``--eligible-only`` restores the old sampling (only compounds whose prototype is
shared).
A compound is recovered at rank r when the r-th candidate matches the hidden structure
(pymatgen StructureMatcher defaults: ltol 0.2, stol 0.3, angle_tol 5, primitive cells,
volumes scaled). Reported: the fraction recovered in the top 1 and top 5 (goal >= 50 %), the
volume error of the recovered candidates for each volume rule, and timings.

Prototype label (AFLOW-like, spglib at symprec 0.1): anonymous stoichiometry + space-group
number + for each element (identified by its reduced amount only) the multiset of Wyckoff
letters of its site orbits.

Usage: python benchmarks/templates_loo.py [--n 250] [--seed 0] [--store PATH] [--workers 2]
Writes benchmarks/results/templates_loo.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write  # noqa: E402

from matdisco.core.composition import first_oxidation_guess  # noqa: E402
from matdisco.generate.templates import (  # noqa: E402
    TemplateLibrary,
    TemplateSettings,
    _anon_key,
    _ionic_volume,
)
from matdisco.store import read_entries, read_structure_arrays  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _labels(args: tuple) -> list[str]:
    """Prototype labels of a chunk of structures."""
    import spglib

    lattices, offsets, species, frac, counts_list = args
    out = []
    for k in range(len(lattices)):
        a, b = offsets[k], offsets[k + 1]
        z, fc = species[a:b], frac[a:b]
        try:
            d = spglib.get_symmetry_dataset((lattices[k], fc, z), symprec=0.1)
        except Exception:  # noqa: BLE001
            d = None
        if d is None:
            out.append("")
            continue
        counts = counts_list[k]
        g = np.gcd.reduce(np.array(list(counts.values())))
        per_el: dict[int, list[str]] = {}
        for orbit in np.unique(d.equivalent_atoms):
            per_el.setdefault(int(z[orbit]), []).append(d.wyckoffs[orbit])
        parts = sorted(f"{counts[el] // g}:{''.join(sorted(w))}" for el, w in per_el.items())
        out.append(f"{_anon_key(np.array(list(counts.values())))}|{d.number}|{'/'.join(parts)}")
    return out


def prototype_labels(arrays, rows: np.ndarray, workers: int) -> dict[int, str]:
    """Prototype label of each store row in ``rows`` (computed in parallel chunks)."""
    chunks = np.array_split(rows, max(1, len(rows) // 500))
    jobs = []
    for ch in chunks:
        sub = arrays.take(ch)
        counts = []
        for k in range(len(ch)):
            zs = sub.species_z[sub.site_offset[k] : sub.site_offset[k + 1]]
            u, c = np.unique(zs, return_counts=True)
            counts.append(dict(zip(u.tolist(), c.tolist(), strict=True)))
        jobs.append(
            (sub.lattice, sub.site_offset, sub.species_z.astype(np.int32), sub.frac_coords, counts)
        )
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(ex.map(_labels, jobs))
    else:
        results = [_labels(j) for j in jobs]
    out: dict[int, str] = {}
    for ch, labs in zip(chunks, results, strict=True):
        out.update(zip(ch.tolist(), labs, strict=True))
    return out


def _wilson(hits: int, n: int, z: float = 1.959964) -> list[float] | None:
    """95 % Wilson score interval of a proportion (None for n = 0)."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(centre - half), 4), round(float(centre + half), 4)]


def volume_by_rule(
    lib: TemplateLibrary, parent_row: int, new_species: list[int], target_formula: str
) -> dict:
    """Predicted cell volume of a candidate under each volume rule (same template, same sites)."""
    a, b = lib.arrays.site_offset[parent_row], lib.arrays.site_offset[parent_row + 1]
    old = lib.arrays.species_z[a:b]
    v_tpl = abs(float(np.linalg.det(lib.arrays.lattice[parent_row])))
    ev = lib.element_volume
    ox_a = first_oxidation_guess(str(lib.formula[parent_row]))
    ox_t = lib._ox_target(target_formula)
    from pymatgen.core import Element

    def sym(z):
        return Element.from_Z(int(z)).symbol

    ion_old = sum(_ionic_volume(sym(z), ox_a.get(sym(z))) for z in old)
    ion_new = sum(_ionic_volume(sym(z), ox_t.get(sym(z))) for z in new_species)
    return {
        "element_volumes": v_tpl * sum(ev[z] for z in new_species) / sum(ev[z] for z in old),
        "ionic_radii": v_tpl * ion_new / ion_old,
        "template": v_tpl,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=250, help="compounds to hide and predict")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=str(ROOT / "resources/bundled/mp2018_structures.h5"))
    ap.add_argument("--workers", type=int, default=2, help="processes for the prototype labels")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument(
        "--oxidation-weight", type=float, default=None, help="override the default w_ox"
    )
    ap.add_argument("--fallback", default="when_needed", choices=["never", "when_needed", "always"])
    ap.add_argument(
        "--label-cache", default=None, help="JSON file caching the prototype labels (optional)"
    )
    ap.add_argument("--name", default="templates_loo")
    ap.add_argument(
        "--eligible-only",
        action="store_true",
        help="draw only compounds whose prototype is shared (the old, conditional protocol)",
    )
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from pymatgen.analysis.structure_matcher import StructureMatcher

    t0 = time.perf_counter()
    kw = {"top_k": args.top_k, "fallback": args.fallback}
    if args.oxidation_weight is not None:
        kw["oxidation_weight"] = args.oxidation_weight
    settings = TemplateSettings(**kw)
    entries = read_entries(
        args.store, ["id", "formula", "nelements", "nsites", "e_above_hull", "is_experimental"]
    )
    experimental = entries["is_experimental"].fillna(0).astype(int).to_numpy() == 1
    arrays = read_structure_arrays(args.store)
    lib = TemplateLibrary(entries, arrays, settings)
    t_lib = time.perf_counter() - t0
    tern = np.flatnonzero((entries["nelements"].to_numpy() == 3) & lib.usable)
    cache = Path(args.label_cache) if args.label_cache else None
    ids = entries["id"].astype(str).to_numpy()
    if cache is not None and cache.exists():
        by_id = json.loads(cache.read_text())
        labels = {int(r): by_id.get(ids[r], "") for r in tern}
    else:
        labels = prototype_labels(arrays, tern, args.workers)
        if cache is not None:
            cache.write_text(json.dumps({ids[r]: lab for r, lab in labels.items()}))
    t_labels = time.perf_counter() - t0 - t_lib
    # prototypes shared by at least two different formulas
    formulas_of: dict[str, set[str]] = {}
    for r, lab in labels.items():
        if lab:
            formulas_of.setdefault(lab, set()).add(str(lib.formula[r]))
    eligible = np.array([r for r in tern if labels[r] and len(formulas_of[labels[r]]) >= 2])
    eligible_set = set(eligible.tolist())
    population = eligible if args.eligible_only else tern
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(population, size=min(args.n, len(population)), replace=False)
    matcher = StructureMatcher()  # defaults: ltol 0.2, stol 0.3, angle_tol 5, primitive, scale
    records = []
    t_pred = t_match = 0.0
    for k, r in enumerate(picked):
        formula = str(lib.formula[r])
        hidden = arrays.structure(int(r))
        t1 = time.perf_counter()
        cands, summ = lib.predict(formula, exclude_formulas=[formula])
        t2 = time.perf_counter()
        rank = None
        for i, c in enumerate(cands):
            if matcher.fit(hidden, c.structure):
                rank = i + 1
                break
        t3 = time.perf_counter()
        t_pred += t2 - t1
        t_match += t3 - t2
        rec = {
            "id": str(entries.at[int(r), "id"]),
            "formula": formula,
            "prototype": labels[int(r)],
            "prototype_shared": int(r) in eligible_set,
            "experimental": bool(experimental[int(r)]),
            "n_candidates": len(cands),
            "rank": rank,
            "best_distance": summ["best_distance"],
            "methods": summ["methods"],
            "seconds": round(t2 - t1, 3),
        }
        if rank is not None:
            c = cands[rank - 1]
            v_true = hidden.volume / len(hidden)
            prow = lib._row_of(c.parent)
            vols = volume_by_rule(lib, prow, [s.Z for s in c.structure.species], formula)
            n_c = len(c.structure)
            rec["matched_template"] = c.parent
            rec["matched_distance"] = c.template_distance
            rec["matched_method"] = c.method
            rec["volume_rel_error"] = {
                k2: round(v / n_c / v_true - 1.0, 4) for k2, v in vols.items()
            }
        records.append(rec)
        if (k + 1) % 25 == 0:
            done = [x for x in records if x["rank"] is not None]
            top5 = sum(x["rank"] <= 5 for x in done) / len(records)
            print(f"{k + 1}/{len(picked)}: top-5 so far {top5:.3f}", flush=True)
    n = len(records)
    ranks = [x["rank"] for x in records]

    def frac(kmax: int) -> float:
        return round(sum(1 for x in ranks if x is not None and x <= kmax) / n, 4) if n else 0.0

    def recovery(subset: list[dict]) -> dict:
        """Top-1/3/5 recovery of a subset with 95 % Wilson score intervals."""
        m = len(subset)
        out: dict = {"n": m}
        for kmax in (1, 3, 5):
            hits = sum(1 for x in subset if x["rank"] is not None and x["rank"] <= kmax)
            out[f"top{kmax}"] = round(hits / m, 4) if m else None
            out[f"top{kmax}_ci95"] = _wilson(hits, m)
        return out

    subsets = {
        "unconditional": records,
        "experimental": [x for x in records if x["experimental"]],
        "conditional_shared_prototype": [x for x in records if x["prototype_shared"]],
        "experimental_shared_prototype": [
            x for x in records if x["experimental"] and x["prototype_shared"]
        ],
    }
    recovery_by_subset = {name: recovery(sub) for name, sub in subsets.items()}
    vol_err = {}
    for rule in ("element_volumes", "ionic_radii", "template"):
        errs = np.array(
            [abs(x["volume_rel_error"][rule]) for x in records if "volume_rel_error" in x]
        )
        if len(errs):
            vol_err[rule] = {
                "median_abs_rel_error": round(float(np.median(errs)), 4),
                "mean_abs_rel_error": round(float(np.mean(errs)), 4),
                "p90_abs_rel_error": round(float(np.percentile(errs, 90)), 4),
            }
    matched_d = [x["matched_distance"] for x in records if "matched_distance" in x]
    write(
        args.name,
        {
            "description": __doc__.split("\n\n")[1].replace("\n", " "),
            "store": str(Path(args.store).relative_to(ROOT))
            if str(args.store).startswith(str(ROOT))
            else args.store,
            "n_compounds": n,
            "eligible_ternaries": int(len(eligible)),
            "ternaries_labelled": int(len(tern)),
            "seed": args.seed,
            "settings": {**settings.__dict__},
            "population": "shared-prototype ternaries" if args.eligible_only else "all ternaries",
            "fraction_of_ternaries_with_shared_prototype": round(
                len(eligible) / max(len(tern), 1), 4
            ),
            "fraction_of_ternaries_experimental": round(float(experimental[tern].mean()), 4),
            "recovery": recovery_by_subset,
            "top1": frac(1),
            "top3": frac(3),
            "top5": frac(5),
            "top_k_note": "top1/top3/top5: over the drawn population (see population)",
            "goal_top5": 0.5,
            "no_candidates": int(sum(1 for x in records if x["n_candidates"] == 0)),
            "recovered_by_method": {
                m: int(sum(1 for x in records if x.get("matched_method") == m))
                for m in ("substitution", "site_split")
            },
            "matched_distance_percentiles": (
                {p: round(float(np.percentile(matched_d, p)), 3) for p in (50, 90, 100)}
                if matched_d
                else {}
            ),
            "volume_error_of_recovered": vol_err,
            "seconds": {
                "library": round(t_lib, 2),
                "prototype_labels": round(t_labels, 2),
                "predict_total": round(t_pred, 2),
                "predict_per_compound": round(t_pred / max(n, 1), 3),
                "matching": round(t_match, 2),
                "total": round(time.perf_counter() - t0, 2),
            },
            "peak_rss_mb": peak_rss_mb(),
            "records": records,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
