#!/usr/bin/env python
"""Benchmark: relaxation oracles (CHGNet, SevenNet 7net-0 / 7net-l3i5 / 7net-mf-0) on known phases.

Known phases nobody tuned on: every bundled Mg-Mn-O phase (the default run's chemical system)
plus a fixed random sample (``--seed``) of bundled ternary oxides with at most ``--max-sites``
sites. Each backend relaxes them (FIRE + FrechetCellFilter, the pipeline's batched optimiser,
``--fmax``/``--steps``, rattle 0.02 A, no early stop), and the result is compared with the stored
MP values:

* formation energy per atom: the backend's MP2020-scale energy minus elemental references
  relaxed with the *same* backend (per element, the bundled elemental phase of lowest stored
  formation energy; if that cell has more than 30 sites, the smallest one within 25 meV/atom of
  it; its stored formation energy is subtracted, so mu is the backend's ground-state estimate);
* E_hull: Mg-Mn-O phases against the hull of all Mg-Mn-O phases recomputed with the same backend
  (what the pipeline does); each sampled ternary against the hull of the bundled phases of its
  chemical system at their stored formation energies with the phase itself at the backend's
  formation energy (the Matbench Discovery protocol: model energy vs the MP hull);
* stable/unstable agreement: label stable when E_hull <= 0.025 eV/atom, for store and backend;
* speed: structures per minute and force evaluations per minute (one thread), peak RSS.

The store's E_hull is recomputed here from its formation energies over all bundled phases of the
chemical system (the bundled file carries no E_hull per structure). Its formation energies carry
MP's 2018 corrections while the backends are on the MP2020 scale: for oxides that shifts E_f by
~-0.015 eV/O atom (0.7023 vs 0.687 eV/O), small against the MAEs found.

Each backend runs in its own process (``--worker``) with a resumable progress file under
``--work``; the JSON (``benchmarks/results/oracle.json``) is rewritten after every chunk, so a
partial run is still reported (with its ``n``).

``--throughput N`` adds, per backend, the same N small Mg-Mn-O phases relaxed batched (lockstep,
one model call per step) and one at a time, with the same step cap and no early stop.

Usage: nice python benchmarks/oracle.py [--backends chgnet,7net-0,7net-l3i5] [--n-ternary 100]
       [--max-sites 20] [--seed 0] [--throughput 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "resources/bundled/mp2018_structures.h5"
STABLE_TOL = 0.025  # eV/atom: stable label when E_hull <= this
SYSTEM = ("Mg", "Mn", "O")


def backend_spec(label: str) -> tuple[str, dict[str, Any]]:
    """``chgnet`` or a SevenNet model name (``7net-0``, ``7net-l3i5``, ``7net-mf-0``)."""
    if label == "chgnet":
        return "chgnet", {"model": "0.3.0"}
    if label.startswith("7net"):
        return "sevennet", {"model": label}
    raise SystemExit(f"unknown backend {label!r}: chgnet | 7net-0 | 7net-l3i5 | 7net-mf-0")


def select(
    store: Path, n_ternary: int, max_sites: int, seed: int, mgmno_max_sites: int = 1000
) -> dict[str, Any]:
    """The phases: Mg-Mn-O, the ternary-oxide sample and the elemental references."""
    from matdisco.store import read_entries

    df = read_entries(store)
    df = df.reset_index(drop=True)
    ef = df["formation_energy_per_atom"].to_numpy(dtype=float)
    elsets = [frozenset(c.split("-")) for c in df["chemsys"]]
    mgmno = sorted(
        (
            i
            for i, s in enumerate(elsets)
            if s <= set(SYSTEM)
            and math.isfinite(ef[i])
            and int(df.at[i, "nsites"]) <= mgmno_max_sites
        ),
        key=lambda i: (int(df.at[i, "nsites"]), i),
    )
    pool = [
        i
        for i, s in enumerate(elsets)
        if len(s) == 3
        and "O" in s
        and not s <= set(SYSTEM)
        and int(df.at[i, "nsites"]) <= max_sites
        and math.isfinite(ef[i])
    ]
    has_ref = {next(iter(s)) for i, s in enumerate(elsets) if len(s) == 1 and math.isfinite(ef[i])}
    pool = [i for i in pool if elsets[i] <= has_ref]  # E_f needs every elemental reference
    rng = np.random.default_rng(seed)
    sample = sorted(rng.choice(pool, size=min(n_ternary, len(pool)), replace=False).tolist())
    elements = sorted(set().union(*(elsets[i] for i in mgmno + sample)))
    refs = {}
    for el in elements:
        rows = [i for i, s in enumerate(elsets) if s == {el} and math.isfinite(ef[i])]
        best = min(rows, key=lambda i: ef[i])
        if int(df.at[best, "nsites"]) > 30:
            near = [i for i in rows if ef[i] <= ef[best] + 0.025]
            best = min(near, key=lambda i: (int(df.at[i, "nsites"]), ef[i]))
        refs[el] = best
    return {"df": df, "elsets": elsets, "mgmno": mgmno, "sample": sample, "refs": refs}


def worker(args: argparse.Namespace) -> None:
    """Relax every selected phase with one backend; rewrite its partial JSON per chunk."""
    from matdisco.relax.backends import get_backend
    from matdisco.relax.optimize import RelaxResult, RelaxSettings
    from matdisco.relax.shards import ProgressFile, process_structures
    from matdisco.store import read_structure_arrays

    sel = select(Path(args.store), args.n_ternary, args.max_sites, args.seed, args.mgmno_max_sites)
    df = sel["df"]
    # small Mg-Mn-O cells, then the sample, then the big Mg-Mn-O cells (a cut-short run still
    # reports the most phases)
    small = [i for i in sel["mgmno"] if int(df.at[i, "nsites"]) <= 30]
    big = [i for i in sel["mgmno"] if int(df.at[i, "nsites"]) > 30]
    order = list(dict.fromkeys(list(sel["refs"].values()) + small + sel["sample"] + big))
    arrays = read_structure_arrays(args.store, np.asarray(order))
    structures = arrays.structures()
    ids = [str(df.at[i, "id"]) for i in order]
    name, opts = backend_spec(args.worker)
    t0 = time.perf_counter()
    be = get_backend(name, opts, threads=args.threads)
    load_s = time.perf_counter() - t0
    settings = RelaxSettings(fmax=args.fmax, steps=args.steps, rattle=0.02, seed=0)
    work = Path(args.work)
    tag = f"{args.worker}-s{args.steps}-f{args.fmax}"
    progress = ProgressFile(work / f"{tag}.jsonl", fingerprint=tag)
    relax_wall = sum(float(r.get("wall_s") or 0.0) for r in progress.done.values())
    chunk = 16
    try:
        for k in range(0, len(ids), chunk):
            if all(i in progress.done for i in ids[k : k + chunk]):
                continue
            t1 = time.perf_counter()
            process_structures(
                ids[k : k + chunk],
                structures[k : k + chunk],
                be,
                settings,
                progress,
                batched=True,
                max_batch=chunk,
            )
            relax_wall += time.perf_counter() - t1
            results = {i: RelaxResult.from_json_dict(progress.done[i]) for i in progress.done}
            part = {
                "backend": args.worker,
                "energy_scale": be.energy_scale,
                "load_s": round(load_s, 2),
                "relax_wall_s_this_run": round(relax_wall, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "results": {
                    i: {
                        "status": r.status,
                        "reason": r.reason,
                        "energy_per_atom": r.energy_per_atom,
                        "correction_per_atom": r.correction_per_atom,
                        "steps": r.steps,
                        "converged": r.converged,
                        "wall_s": r.wall_s,
                        "nsites": len(r.species),
                    }
                    for i, r in results.items()
                },
            }
            (work / f"{tag}.json").write_text(json.dumps(part, default=_nan))
            print(f"[{args.worker}] {len(results)}/{len(ids)} done", flush=True)
        if args.throughput:
            part["throughput"] = throughput(be, sel, args, settings, work, tag)
            part["peak_rss_mb"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            )
            (work / f"{tag}.json").write_text(json.dumps(part, default=_nan))
    finally:
        progress.close()


def throughput(be, sel, args, settings, work: Path, tag: str) -> dict[str, Any]:
    """The same small phases batched (lockstep) and one at a time: structures/min, forces/min."""
    from matdisco.relax.optimize import RelaxSettings
    from matdisco.relax.shards import ProgressFile, process_structures
    from matdisco.store import read_structure_arrays

    df = sel["df"]
    small = sorted(sel["mgmno"], key=lambda i: (int(df.at[i, "nsites"]), i))[: args.throughput]
    structures = read_structure_arrays(args.store, np.asarray(small)).structures()
    ids = [str(df.at[i, "id"]) for i in small]
    # fmax unreachable: every structure runs exactly the step cap on both sides (same work)
    settings = RelaxSettings(fmax=1e-4, steps=args.throughput_steps, rattle=0.05, seed=0)
    out: dict[str, Any] = {
        "ids": ids,
        "steps_cap": settings.steps,
        "fmax": settings.fmax,
        "early_stop": False,
    }
    for mode in (True, False):
        p = work / f"{tag}-tp-{'batched' if mode else 'serial'}.jsonl"
        p.unlink(missing_ok=True)
        prog = ProgressFile(p, fingerprint=f"{tag}-{mode}")
        cpu0, t0 = time.process_time(), time.perf_counter()
        res = process_structures(ids, structures, be, settings, prog, batched=mode, max_batch=64)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        prog.close()
        evals = sum(r.steps + 1 for r in res)
        out["batched" if mode else "serial"] = {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "structures_per_min": round(60 * len(res) / wall, 2),
            "force_evals": evals,
            "force_evals_per_min": round(60 * evals / wall, 1),
        }
    out["speedup_wall"] = round(out["serial"]["wall_s"] / out["batched"]["wall_s"], 2)
    return out


def _nan(o: Any) -> Any:
    return None


def _hull_entries(df, elsets, chem: frozenset, override: dict[int, float], skip: set[int]):
    """PDEntries of all bundled phases of ``chem`` (stored E_f unless overridden) + elements."""
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition

    ef = df["formation_energy_per_atom"].to_numpy(dtype=float)
    entries = {}
    for i, s in enumerate(elsets):
        if s <= chem and i not in skip:
            e = override.get(i, ef[i])
            if math.isfinite(e):
                c = Composition(df.at[i, "composition"])
                entries[i] = PDEntry(c, e * c.num_atoms, name=str(i))
    els = [PDEntry(Composition(el), 0.0, name=f"el-{el}") for el in chem]
    return entries, els


def ehull(df, elsets, idx: int, chem: frozenset, override: dict[int, float], skip: set[int]):
    """E_hull of phase ``idx`` (eV/atom, negative below the hull) on the given energies."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    entries, els = _hull_entries(df, elsets, chem, override, skip)
    if idx not in entries:
        return float("nan")
    pdg = PhaseDiagram(list(entries.values()) + els)
    return float(pdg.get_e_above_hull(entries[idx], allow_negative=True))


def score(sel: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Formation energies, E_hull and labels of one backend's results against the store."""
    from pymatgen.core import Composition

    df, elsets = sel["df"], sel["elsets"]
    ef_store = df["formation_energy_per_atom"].to_numpy(dtype=float)
    res = part["results"]
    mu = {}
    for el, i in sel["refs"].items():
        r = res.get(str(df.at[i, "id"]))
        if r and r["status"] == "ok" and r["energy_per_atom"] is not None:
            mu[el] = r["energy_per_atom"] - ef_store[i]

    def ef_model(i: int) -> float:
        r = res.get(str(df.at[i, "id"]))
        if not r or r["status"] != "ok" or r["energy_per_atom"] is None:
            return float("nan")
        comp = Composition(df.at[i, "composition"])
        if any(str(e) not in mu for e in comp.elements):
            return float("nan")
        return r["energy_per_atom"] - sum(
            comp.get_atomic_fraction(e) * mu[str(e)] for e in comp.elements
        )

    rows = []
    mg_chem = frozenset(SYSTEM)
    mg_model = {i: ef_model(i) for i in sel["mgmno"]}
    mg_fail = {i for i, v in mg_model.items() if not math.isfinite(v)}
    for group, idxs in (("Mg-Mn-O", sel["mgmno"]), ("ternary_oxides", sel["sample"])):
        for i in idxs:
            if str(df.at[i, "id"]) not in res:
                continue
            efm = mg_model[i] if group == "Mg-Mn-O" else ef_model(i)
            chem = mg_chem if group == "Mg-Mn-O" else elsets[i]
            eh_store = ehull(df, elsets, i, chem, {}, set())
            if not math.isfinite(efm):
                eh_model = float("nan")
            elif group == "Mg-Mn-O":  # hull of all Mg-Mn-O phases recomputed by the backend
                ov = {j: v for j, v in mg_model.items() if math.isfinite(v)}
                eh_model = ehull(df, elsets, i, chem, ov, mg_fail)
            else:  # the phase at the backend's E_f against the stored hull of its system
                eh_model = ehull(df, elsets, i, chem, {i: efm}, set())
            r = res[str(df.at[i, "id"])]
            rows.append(
                {
                    "id": str(df.at[i, "id"]),
                    "formula": str(df.at[i, "formula"]),
                    "group": group,
                    "nsites": int(df.at[i, "nsites"]),
                    "status": r["status"],
                    "ef_store": float(ef_store[i]),
                    "ef_model": efm,
                    "ehull_store": eh_store,
                    "ehull_model": eh_model,
                    "correction_per_atom": r["correction_per_atom"],
                    "steps": r["steps"],
                    "wall_s": r["wall_s"],
                }
            )
    return {"mu": mu, "rows": rows}


def metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """MAE of E_f and E_hull, stable-label agreement, over rows with finite values."""
    ok = [r for r in rows if math.isfinite(r["ef_model"]) and math.isfinite(r["ehull_model"])]
    if not ok:
        return {"n": len(rows), "n_ok": 0}
    ef = np.array([r["ef_model"] - r["ef_store"] for r in ok])
    eh = np.array([r["ehull_model"] - r["ehull_store"] for r in ok])
    agree = [(r["ehull_model"] <= STABLE_TOL) == (r["ehull_store"] <= STABLE_TOL) for r in ok]
    return {
        "n": len(rows),
        "n_ok": len(ok),
        "mae_formation_energy_ev_per_atom": round(float(np.abs(ef).mean()), 4),
        "mean_error_formation_energy_ev_per_atom": round(float(ef.mean()), 4),
        "mae_e_above_hull_ev_per_atom": round(float(np.abs(eh).mean()), 4),
        "stable_label_agreement": round(float(np.mean(agree)), 3),
        "n_stable_store": int(sum(r["ehull_store"] <= STABLE_TOL for r in ok)),
    }


def summarize(args: argparse.Namespace, labels: list[str]) -> dict[str, Any]:
    """Merge the backends' partial JSONs into the benchmark result."""
    sel = select(Path(args.store), args.n_ternary, args.max_sites, args.seed, args.mgmno_max_sites)
    out: dict[str, Any] = {}
    for label in labels:
        p = Path(args.work) / f"{label}-s{args.steps}-f{args.fmax}.json"
        if not p.exists():
            out[label] = {"status": "not run"}
            continue
        part = json.loads(p.read_text())
        part["results"] = {
            k: {
                kk: (float("nan") if vv is None and kk == "energy_per_atom" else vv)
                for kk, vv in v.items()
            }
            for k, v in part["results"].items()
        }
        sc = score(sel, part)
        rows = sc["rows"]
        done = list(part["results"].values())
        wall = sum(float(r["wall_s"] or 0.0) for r in done)
        evals = sum(int(r["steps"]) + 1 for r in done)
        out[label] = {
            "energy_scale": part["energy_scale"],
            "n_relaxed": len(done),
            "n_failed": sum(r["status"] != "ok" for r in done),
            "all": metrics(rows),
            "Mg-Mn-O": metrics([r for r in rows if r["group"] == "Mg-Mn-O"]),
            "ternary_oxides": metrics([r for r in rows if r["group"] == "ternary_oxides"]),
            "speed": {
                "structures_per_min": round(60 * len(done) / wall, 2) if wall else None,
                "force_evals_per_min": round(60 * evals / wall, 1) if wall else None,
                "mean_steps": round(evals / max(len(done), 1) - 1, 1),
                "mean_sites": round(float(np.mean([r["nsites"] for r in done])), 1),
                "note": "batched optimiser (lockstep, up to 16 at once), 1 torch thread, "
                "sum of per-structure wall shares, shared 2-core machine",
            },
            "peak_rss_mb": part["peak_rss_mb"],
            "load_s": part["load_s"],
            "throughput": part.get("throughput"),
            "elemental_mu_ev_per_atom": {k: round(v, 4) for k, v in sc["mu"].items()},
            "rows": rows,
        }
    df = sel["df"]
    return {
        "protocol": {
            "store": str(args.store),
            "mgmno_phases": len(sel["mgmno"]),
            "n_ternary_requested": args.n_ternary,
            "n_ternary_selected": len(sel["sample"]),
            "ternary_max_sites": args.max_sites,
            "seed": args.seed,
            "elemental_references": {el: str(df.at[i, "id"]) for el, i in sel["refs"].items()},
            "fmax": args.fmax,
            "steps": args.steps,
            "rattle": 0.02,
            "early_stop": False,
            "threads": args.threads,
            "stable_tolerance_ev_per_atom": STABLE_TOL,
            "ehull_method": (
                "Mg-Mn-O: hull of all bundled Mg-Mn-O phases recomputed with the same backend; "
                "ternary sample: the phase at the backend's E_f against the bundled phases of its "
                "system at their stored E_f (Matbench Discovery style); store E_hull from stored "
                "E_f (MP 2018 corrections) over all bundled phases of the system"
            ),
        },
        "backends": out,
    }


def markdown(result: dict[str, Any]) -> str:
    """The oracle table (one row per backend) as Markdown."""
    lines = [
        (
            "| backend | n (MgMnO + tern.) | MAE E_f | MAE E_hull | stable agree | MgMnO MAE E_f "
            "| tern. MAE E_f | struct/min | force evals/min | peak RSS MB | batched speed-up |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, b in result["backends"].items():
        if "all" not in b:
            lines.append(f"| {label} | not run |" + " |" * 9)
            continue
        a, m, t, sp = b["all"], b["Mg-Mn-O"], b["ternary_oxides"], b["speed"]
        tp = b.get("throughput") or {}
        lines.append(
            f"| {label} | {m.get('n_ok', 0)} + {t.get('n_ok', 0)} "
            f"| {a.get('mae_formation_energy_ev_per_atom')} "
            f"| {a.get('mae_e_above_hull_ev_per_atom')} | {a.get('stable_label_agreement')} "
            f"| {m.get('mae_formation_energy_ev_per_atom')} "
            f"| {t.get('mae_formation_energy_ev_per_atom')} "
            f"| {sp['structures_per_min']} | {sp['force_evals_per_min']} | {b['peak_rss_mb']} "
            f"| {tp.get('speedup_wall', 'n/a')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="chgnet,7net-0,7net-l3i5")
    ap.add_argument("--n-ternary", type=int, default=100)
    ap.add_argument("--max-sites", type=int, default=20)
    ap.add_argument("--mgmno-max-sites", type=int, default=1000, help="smoke tests only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fmax", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--throughput", type=int, default=8, help="phases for batched vs serial")
    ap.add_argument("--throughput-steps", type=int, default=40)
    ap.add_argument("--store", default=str(STORE))
    ap.add_argument("--work", default=str(RESULTS / "oracle_work"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--summarize-only", action="store_true")
    ap.add_argument("--name", default="oracle")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.worker:
        worker(args)
        return 0
    labels = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.summarize_only:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        for label in labels:
            cmd = [sys.executable, __file__, "--worker", label]
            for k in (
                "n_ternary",
                "max_sites",
                "seed",
                "fmax",
                "steps",
                "threads",
                "throughput",
                "throughput_steps",
                "store",
                "work",
                "mgmno_max_sites",
            ):
                cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
            subprocess.run(cmd, check=False)
            write(args.name, summarize(args, labels))
    result = summarize(args, labels)
    write(args.name, result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
