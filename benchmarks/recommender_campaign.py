#!/usr/bin/env python
"""Simulated discovery campaign with the tensor recommender (and optionally the E_hull classifier).

The known compounds of several ternary chemical systems are hidden from the recommender; a
campaign then proposes compositions of each system in rounds (``--batch`` per system per round),
ranked by an acquisition function, and "synthesises" them: a proposal that is one of the hidden
compounds is found and joins the known set, and the recommender is refitted (warm start) before
the next round. We count the proposals needed to find the hidden compounds and compare with
random order over the same candidate pool, whose expectations are exact: with ``m`` hidden
compounds among ``N`` candidates, the ``j``-th is found after ``j (N + 1) / (m + 1)`` draws on
average.

Candidate pool of a system: every reduced composition with <= ``--max-atoms`` atoms that can be
charge-balanced with the elements' ICSD-common oxidation states (the same filter as the
``propose`` stage); hidden compounds outside the pool are not counted (reported as unreachable).
"Known stable compounds" are the experimentally reported (ICSD-linked) compositions of the store.

Baselines beside the tensor recommender (``exploit``): the element x ratio ``popularity`` model
(refitted after every round like the tensor) and random order over the charge-balanced pool
(exact expectation; ``random`` is one simulated draw of it). Every seed picks its own systems;
the intervals are 95 % bootstrap intervals over all (seed, system) campaigns, and the ratio per
seed is listed beside.

Usage::

    python benchmarks/recommender_campaign.py [--store resources/bundled/mp2018_structures.h5]
        [--systems 20] [--seeds 0,1,2,3,4] [--batch 5]
        [--classifier results/default/classifier/model.pkl]

Writes ``benchmarks/results/recommender_campaign.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from matdisco import propose as P
from matdisco import recommender as R
from matdisco.recommender.space import _space_for
from matdisco.settings import RecommenderSettings
from matdisco.store import read_entries

log = logging.getLogger("matdisco.campaign")

#: bootstrap resamples (over system campaigns) behind the 95 % intervals
N_BOOTSTRAP = 2000

ROOT = Path(__file__).resolve().parents[1]


def pick_systems(
    space: R.TernarySpace, flat: np.ndarray, n: int, min_known: int, anion: str | None, seed: int
) -> list[int]:
    """Random ternary systems (flat system ids) with at least ``min_known`` known cells."""
    sys_ids, counts = np.unique(flat // len(space.ratios), return_counts=True)
    ok = []
    for sid, c in zip(sys_ids, counts, strict=True):
        if c < min_known:
            continue
        els = [space.elements[x] for x in space.unflat(np.array([sid * len(space.ratios)]))[0][:3]]
        if anion and anion not in els:
            continue
        ok.append(int(sid))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ok, size=min(n, len(ok)), replace=False).tolist())


def pool_for(space: R.TernarySpace, sid: int, charge_filter: bool) -> np.ndarray:
    """Flat cells of a system's candidate pool."""
    L = len(space.ratios)
    flat = np.arange(sid * L, (sid + 1) * L)
    if not charge_filter:
        return flat
    i, j, k = space.unflat(flat[:1])[0][:3]
    els = [space.elements[i], space.elements[j], space.elements[k]]
    keep = [
        P.charge_balance_possible(dict(zip(els, (int(x) for x in space.ratios[q]), strict=True)))
        for q in range(L)
    ]
    return flat[np.asarray(keep)]


def random_expectation(n_pool: int, m: int) -> dict[str, float]:
    """Expected draws (random order, no replacement) to find the first, half and all of m
    targets."""
    if m == 0:
        return {"first": float("nan"), "half": float("nan"), "all": float("nan")}
    half = int(np.ceil(m / 2))
    return {
        "first": (n_pool + 1) / (m + 1),
        "half": half * (n_pool + 1) / (m + 1),
        "all": m * (n_pool + 1) / (m + 1),
    }


def _popularity(space: R.TernarySpace, known: list[str]) -> Any:
    """The popularity baseline (product of element and ratio frequencies) of the known cells."""
    ternary = [f for f in known if (c := R.integer_composition(f)) is not None and len(c) == 3]
    cells, _ = space.cells(ternary)
    return R.fit_popularity(space, space.unflat(np.unique(space.flat(cells))))


def run_campaign(
    acquisition: str,
    space: R.TernarySpace,
    train_known: list[str],
    pools: dict[int, np.ndarray],
    targets: dict[int, set[int]],
    settings: RecommenderSettings,
    *,
    batch: int,
    max_rounds: int,
    kappa: float,
    classifier_weight: float,
    p_stable: dict[int, tuple[np.ndarray, np.ndarray]] | None,
    refit: bool,
    base: R.Recommender,
    seed: int = 0,
) -> dict[str, Any]:
    """One campaign; returns the proposal index (1-based) at which each target was found."""
    known = list(train_known)
    rec = base
    pop = _popularity(space, known) if acquisition == "popularity" else None
    queried: dict[int, list[int]] = {sid: [] for sid in pools}
    found_at: dict[int, list[int]] = {sid: [] for sid in pools}
    fits = 0
    t0 = time.perf_counter()
    for _round in range(max_rounds):
        active = [
            sid
            for sid in pools
            if len(found_at[sid]) < len(targets[sid]) and len(queried[sid]) < len(pools[sid])
        ]
        if not active:
            break
        new_found = []
        for sid in active:
            pool = pools[sid]
            mask = ~np.isin(pool, queried[sid])
            cand = pool[mask]
            formulas = space.formula_strings(space.unflat(cand))
            if acquisition == "random":
                rng = np.random.default_rng(1000 + sid + 7919 * _round + 104729 * seed)
                order = rng.permutation(len(cand))
            elif acquisition == "popularity":  # baseline: element x ratio popularity, refitted
                score = pop.score_cells(space.unflat(cand))
                order = np.lexsort((np.asarray(formulas), -score))
            else:
                sc = rec.score_formulas(formulas)
                p = sp = None
                if p_stable is not None:
                    pp, ps = p_stable[sid]
                    p, sp = pp[mask], ps[mask]
                mu, sigma, acq = P.acquisition_scores(
                    p,
                    sp,
                    sc["recommender_score"].to_numpy(),
                    sc["recommender_std"].to_numpy(),
                    kind=acquisition,
                    classifier_weight=classifier_weight,
                    kappa=kappa,
                )
                order = P.rank_candidates(acq, mu, formulas)
            for c in cand[order[:batch]]:
                queried[sid].append(int(c))
                if int(c) in targets[sid]:
                    found_at[sid].append(len(queried[sid]))
                    new_found.append(space.formula(space.unflat(np.array([c]))[0]))
        if refit and new_found and acquisition == "popularity":
            known += new_found
            pop = _popularity(space, known)
            fits += 1
        elif refit and new_found and acquisition != "random":
            known += new_found
            rec = R.fit_recommender(known, settings, space=space, warm_start=rec)
            fits += 1
    out = {}
    for sid in pools:
        m = len(targets[sid])
        f = sorted(found_at[sid])
        half = int(np.ceil(m / 2))
        out[str(sid)] = {
            "found_at": f,
            "first": f[0] if f else None,
            "half": f[half - 1] if len(f) >= half and m else None,
            "all": f[-1] if len(f) == m and m else None,
            "n_queried": len(queried[sid]),
        }
    return {"systems": out, "refits": fits, "seconds": round(time.perf_counter() - t0, 1)}


def _system_values(res: dict[str, Any], info: dict[str, Any]) -> list[dict[str, float]]:
    """Per reachable system: proposals to the first / half / all (the pool size if not found)
    and the exact expectation of random order over the same (charge-balanced) pool."""
    rows = []
    for sid, r in res["systems"].items():
        if info[sid]["n_reachable"] == 0:
            continue
        row: dict[str, float] = {}
        for key in ("first", "half", "all"):
            row[key] = float(info[sid]["n_pool"]) if r[key] is None else float(r[key])
            row[f"random_{key}"] = info[sid]["random_expected"][key]
        row["complete"] = float(r["all"] is not None)
        rows.append(row)
    return rows


def _summarise(
    rows: list[dict[str, float]], per_seed: list[list[dict[str, float]]], rng: np.random.Generator
) -> dict[str, Any]:
    """Total-proposal ratio to random (lower is better) with a 95 % bootstrap interval over the
    system campaigns, the mean per-system ratio, and the spread of the ratio over seeds."""
    out: dict[str, Any] = {"n_system_campaigns": len(rows)}
    if not rows:
        return out
    idx = rng.integers(0, len(rows), size=(N_BOOTSTRAP, len(rows)))
    for key in ("first", "half", "all"):
        v = np.array([r[key] for r in rows])
        e = np.array([r[f"random_{key}"] for r in rows])
        ratio = v.sum() / e.sum()
        boot = v[idx].sum(1) / e[idx].sum(1)
        per_sys = v / e
        seeds = [
            sum(r[key] for r in rs) / sum(r[f"random_{key}"] for r in rs) for rs in per_seed if rs
        ]
        out[key] = {
            "proposals_total": float(v.sum()),
            "random_expected_total": float(e.sum()),
            "ratio_to_random": float(ratio),
            "ratio_to_random_ci95": [float(x) for x in np.percentile(boot, [2.5, 97.5])],
            "mean_per_system_ratio": float(per_sys.mean()),
            "mean_per_system_ratio_ci95": [
                float(x) for x in np.percentile(per_sys[idx].mean(1), [2.5, 97.5])
            ],
            "ratio_per_seed": [float(x) for x in seeds],
        }
    out["fraction_complete"] = float(np.mean([r["complete"] for r in rows]))
    return out


def run_seed(
    args: argparse.Namespace,
    seed: int,
    entries: Any,
    settings: RecommenderSettings,
    p_model: str | None,
) -> dict[str, Any]:
    """One seed: pick systems, hide them, run every acquisition's campaign."""
    t0 = time.perf_counter()
    known_all = R.known_formulas(entries, "experimental")
    ternary = [f for f in known_all if (c := R.integer_composition(f)) is not None and len(c) == 3]
    space = _space_for(ternary, settings)
    cells, pos = space.cells(ternary)
    flat = space.flat(cells)
    systems = pick_systems(
        space, np.unique(flat), args.systems, args.min_known, args.anion or None, seed
    )
    L = len(space.ratios)
    hidden_formulas = {ternary[p] for p, f in zip(pos, flat, strict=True) if f // L in systems}
    train_known = [f for f in known_all if f not in hidden_formulas]
    pools = {sid: pool_for(space, sid, not args.no_charge_filter) for sid in systems}
    targets = {
        sid: set(int(f) for f in flat if f // L == sid) & set(pools[sid].tolist())
        for sid in systems
    }
    info = {}
    for sid in systems:
        i, j, k = space.unflat(np.array([sid * L]))[0][:3]
        name = "-".join(sorted([space.elements[i], space.elements[j], space.elements[k]]))
        n_hidden = int((flat // L == sid).sum())
        info[str(sid)] = {
            "chemsys": name,
            "n_hidden": n_hidden,
            "n_reachable": len(targets[sid]),
            "n_pool": int(len(pools[sid])),
            "hidden": sorted(
                space.formula(space.unflat(np.array([f]))[0]) for f in flat if f // L == sid
            ),
            "random_expected": random_expectation(len(pools[sid]), len(targets[sid])),
        }
    log.info("seed %d: %d systems, %d hidden", seed, len(systems), len(hidden_formulas))
    base = R.fit_recommender(train_known, settings, space=space)
    p_stable = None
    if p_model:
        p_stable = {}
        for sid in systems:
            clf = R.classifier_scores(p_model, space.formula_strings(space.unflat(pools[sid])))
            p_stable[sid] = (clf["p_stable"].to_numpy(), clf["p_stable_std"].to_numpy())
    results: dict[str, Any] = {}
    for acq in args.acquisitions.split(","):
        results[acq] = run_campaign(
            acq,
            space,
            train_known,
            pools,
            targets,
            settings,
            batch=args.batch,
            max_rounds=args.max_rounds,
            kappa=args.kappa,
            classifier_weight=args.classifier_weight,
            p_stable=p_stable,
            refit=not args.no_refit,
            base=base,
            seed=seed,
        )
        log.info(
            "seed %d %s: %.1f s, %d refits",
            seed,
            acq,
            results[acq]["seconds"],
            results[acq]["refits"],
        )
    return {
        "seed": seed,
        "n_train_known": len(train_known),
        "systems": info,
        "results": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the campaigns over every seed and write the JSON; returns what was written."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--store",
        default=str(ROOT / "resources/bundled/mp2018_structures.h5"),
        help="entry store (entries.h5)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/recommender_campaign.json"))
    ap.add_argument(
        "--systems",
        type=int,
        default=20,
        help="number of chemical systems whose known compounds are hidden (per seed)",
    )
    ap.add_argument(
        "--min-known",
        type=int,
        default=3,
        help="only systems with at least this many known compositions",
    )
    ap.add_argument("--anion", default="O", help="only systems containing this element ('' = any)")
    ap.add_argument("--batch", type=int, default=5, help="proposals per system per round")
    ap.add_argument("--max-rounds", type=int, default=60)
    ap.add_argument("--max-atoms", type=int, default=20)
    ap.add_argument("--no-charge-filter", action="store_true", help="pool = every grid ratio")
    ap.add_argument(
        "--no-refit", action="store_true", help="do not refit the models after each round"
    )
    ap.add_argument(
        "--acquisitions",
        default="exploit,popularity,random",
        help="comma list of exploit, ucb, explore (tensor recommender), popularity, random",
    )
    ap.add_argument("--kappa", type=float, default=1.0)
    ap.add_argument("--classifier", default=None, help="E_hull classifier model.pkl (optional)")
    ap.add_argument("--classifier-weight", type=float, default=0.5)
    ap.add_argument(
        "--n-bootstrap",
        type=int,
        default=None,
        help="recommender bootstrap refits (default: 3 with ucb/explore, else 0: exploit "
        "ranks by the main model only)",
    )
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma list of seeds (>= 5 for intervals)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    acqs = args.acquisitions.split(",")
    n_boot = args.n_bootstrap
    if n_boot is None:
        n_boot = 3 if {"ucb", "explore"} & set(acqs) else 0
    seeds = [int(x) for x in args.seeds.split(",")]
    settings = RecommenderSettings.from_config(
        {
            "n_bootstrap": n_boot,
            "n_quantile_samples": 20000,
            "max_atoms": args.max_atoms,
        }
    )
    entries = read_entries(args.store, ["formula", "is_experimental"])
    runs = [run_seed(args, seed, entries, settings, args.classifier) for seed in seeds]

    rng = np.random.default_rng(12345)
    summary: dict[str, Any] = {}
    for acq in acqs:
        per_seed = [_system_values(r["results"][acq], r["systems"]) for r in runs]
        rows = [row for rs in per_seed for row in rs]
        summary[acq] = _summarise(rows, per_seed, rng)
    # paired: the same (seed, system) campaigns under two acquisitions
    paired: dict[str, Any] = {}
    for model in [a for a in acqs if a not in ("popularity", "random")]:
        if "popularity" not in acqs:
            break
        rows_m = [r for run in runs for r in _system_values(run["results"][model], run["systems"])]
        rows_p = [
            r for run in runs for r in _system_values(run["results"]["popularity"], run["systems"])
        ]
        idx = rng.integers(0, len(rows_m), size=(N_BOOTSTRAP, len(rows_m)))
        comp = {}
        for key in ("first", "half", "all"):
            vm = np.array([r[key] for r in rows_m])
            vp = np.array([r[key] for r in rows_p])
            comp[key] = {
                "proposals_ratio": float(vm.sum() / vp.sum()),
                "proposals_ratio_ci95": [
                    float(x) for x in np.percentile(vm[idx].sum(1) / vp[idx].sum(1), [2.5, 97.5])
                ],
            }
        paired[f"{model}_vs_popularity"] = comp
    out = {
        "description": (
            "proposals needed (counting each proposed composition) to find the first, half and "
            "all hidden known compounds of each system, vs the exact expectation of random order "
            "over the same charge-balanced pool (= the charge-balanced random baseline); "
            "ratio_to_random = total proposals / total random expectation (lower is better, "
            "1 = random), 95 % bootstrap interval over the system campaigns of all seeds; "
            "popularity = the element x ratio popularity baseline, refitted like the tensor; a "
            "target not found within max_rounds counts as the whole pool"
        ),
        "settings": {**vars(args), "recommender": settings.to_dict()},
        "n_seeds": len(seeds),
        "n_systems_per_seed": args.systems,
        "n_bootstrap_intervals": N_BOOTSTRAP,
        "summary": summary,
        "paired_vs_popularity": paired,
        "paired_note": (
            "total proposals of the model / total of the popularity baseline over the same "
            "(seed, system) campaigns; < 1 = the model needs fewer; paired bootstrap interval"
        ),
        "runs": runs,
        "classifier_note": (
            "the classifier (if used) was trained on MP E_hull labels that include the hidden "
            "compounds"
            if args.classifier
            else "classifier not used"
        ),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine_note": "shared 2-core machine, OMP_NUM_THREADS as set by the caller",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
    for acq, s in summary.items():
        if "all" in s:
            log.info(
                "%-10s ratio to random (first/half/all): %.3f %s / %.3f / %.3f",
                acq,
                s["first"]["ratio_to_random"],
                s["first"]["ratio_to_random_ci95"],
                s["half"]["ratio_to_random"],
                s["all"]["ratio_to_random"],
            )
    return out


if __name__ == "__main__":
    main()
