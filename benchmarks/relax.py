#!/usr/bin/env python
"""Benchmark: CHGNet relaxation throughput (naive loop vs the project's path) and E_hull accuracy.

Writes benchmarks/results/relax.json with:

* ``throughput``: structures per minute with CHGNet on 2 cores for
  - ``naive``: the documented recipe, one structure after another in one process
    (``torch.set_num_threads(2)``, ``FIRE(FrechetCellFilter(atoms))`` with ``CHGNetCalculator``);
  - ``naive_blas1``: the same loop with BLAS limited to one thread (isolates that fix);
  - ``project``: the pipeline's path, ``run_shard`` on 2 shards in 2 parallel worker processes
    with 1 thread each: energy-only single points of the unrelaxed candidates (recorded, not
    used to reject: see the config schema), lockstep FIRE with per-shard CHGNet calls, early
    stop against the reference hull (the config defaults);
  - ``project_serial``: the same path on one shard in one process (one core).
  Every mode relaxes the same candidates with the same seeded rattle, fmax 0.1 and <= 200 steps.
  By default the project modes also pre-screen and stop early (less work than the naive loop);
  ``--equal-work`` switches that off so both sides do the same work (quote only that speedup).
  Wall and CPU seconds are recorded: the machine is shared, so the load average is recorded too.
* ``agreement``: relaxed energies of the project path vs the naive loop, and candidates the
  pre-screen / early stop dropped although the naive loop relaxed them to <= 200 meV/atom.
* ``reference``: MAE of E_hull of the known MP phases of Mg-Mn-O recomputed with CHGNet
  (relaxed, on the CHGNet hull) versus the store's E_hull values.

Candidates: a stand-in pool (``matdisco.relax.testing.fixture_pool``): ``template``-like
(known Mg-Mn-O structures with one cation swapped, strained, perturbed) and ``gan``-like (random
cells at 11 A^3/atom), unless ``--pool`` names a real ``candidates/pool.h5``.

Usage: python benchmarks/relax.py [--n-template 8] [--n-random 8] [--store ENTRIES_H5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RELAX = {"fmax": 0.1, "steps": 200, "rattle": 0.02, "seed": 0}
#: the project path's pre-screen / early stop (config defaults); ``--equal-work`` switches it off
PRESCREEN = {
    "enabled": True,
    "max_e_above_hull": None,
    "early_stop_e_above_hull": 0.5,
    "early_stop_after_steps": 100,
}

NAIVE = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(2)
    if sys.argv[3] == "blas1":
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor
    from matdisco.relax.optimize import rattle
    from matdisco.store import read_entries, read_structure_arrays
    cfg = json.loads(sys.argv[2])
    ids = read_entries(sys.argv[1])["id"].tolist()
    arrays = read_structure_arrays(sys.argv[1])
    t0 = time.perf_counter()
    calc = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
    out = {}
    for i, rid in enumerate(ids):
        atoms = AseAtomsAdaptor.get_atoms(arrays.structure(i))
        atoms = rattle(atoms, cfg["rattle"], cfg["seed"], rid)
        atoms.calc = calc
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        conv = bool(opt.run(fmax=cfg["fmax"], steps=cfg["steps"]))
        e = float(atoms.get_potential_energy()) / len(atoms)
        out[rid] = {"energy_per_atom": e, "steps": int(opt.nsteps), "converged": conv}
    print(json.dumps({"wall_s": time.perf_counter() - t0, "results": out}))
    """
)

SHARD = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.filterwarnings("ignore")
    from matdisco.relax.shards import run_shard
    shard, out, progress, reference, cfg, pre = sys.argv[1:7]
    t0 = time.perf_counter()
    meta = run_shard(shard, out, progress, backend="chgnet", relax=json.loads(cfg),
                     prescreen=json.loads(pre), reference_path=reference, threads=1)
    print(json.dumps({"wall_s": time.perf_counter() - t0, "counts": meta["counts"]}))
    """
)


BATCH_PROBE = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.filterwarnings("ignore")
    def hwm():  # peak RSS of this address space, MB (ru_maxrss would include the parent's)
        line = [x for x in open("/proc/self/status") if x.startswith("VmHWM")][0]
        return int(line.split()[1]) / 1024
    from pymatgen.io.ase import AseAtomsAdaptor
    from matdisco.relax import get_backend
    from matdisco.store import read_structure_arrays
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in read_structure_arrays(sys.argv[1]).structures()]
    be = get_backend("chgnet", {"batch_size": int(sys.argv[2])}, threads=1)
    rss0 = hwm()
    c0 = time.process_time()
    for _ in range(3):
        be.predict(atoms)  # energies, forces, stresses of every structure (one FIRE step's worth)
    cpu = (time.process_time() - c0) / 3
    c0 = time.process_time()
    be.predict_energy(atoms)
    cpu_e = time.process_time() - c0
    rss = hwm()
    print(json.dumps({"cpu_s_per_efs_pass": round(cpu, 3),
                      "cpu_s_energy_only_pass": round(cpu_e, 3),
                      "peak_rss_mb": round(rss), "rss_after_load_mb": round(rss0)}))
    """
)


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[dict, float, float]:
    """Run a python child; return (its JSON stdout, wall s, CPU s of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, check=False
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, cpu


def _parallel(cmds: list[list[str]], env: dict[str, str]) -> tuple[list[dict], float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for c in cmds
    ]
    outs = []
    for p in procs:
        so, se = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(se[-3000:])
        outs.append(json.loads(so.strip().splitlines()[-1]))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return outs, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _store(tmp: Path, store: str | None) -> Path:
    if store:
        return Path(store)
    from matdisco.data.build import build_store

    settings = {
        "structures": str(ROOT / "resources/bundled/mp2018_structures.h5"),
        "labels": str(ROOT / "resources/bundled/formula_ehull_labels.csv.gz"),
        "chemsys_filter": ["Mg-Mn-O"],
    }
    out = tmp / "entries.h5"
    build_store(
        source="bundled",
        settings=settings,
        dedupe={"enabled": True, "ltol": 0.2, "stol": 0.3, "angle_tol": 5.0, "symprec": 0.1},
        labels_path=settings["labels"],
        out_store=out,
        out_rejected=tmp / "rej.csv",
        out_summary=tmp / "summary.json",
        workers=2,
    )
    return out


def _pool(tmp: Path, store: Path, n_template: int, n_random: int, pool: str | None) -> Path:
    from matdisco.relax.shards import select_candidates
    from matdisco.relax.testing import fixture_pool
    from matdisco.store import read_entries, read_structure_arrays, read_structures, write_store

    out = tmp / "pool.h5"
    if pool:
        df = read_entries(pool)
        idx = select_candidates(df, n_template + n_random)
        write_store(
            out,
            df.iloc[idx].reset_index(drop=True),
            read_structure_arrays(pool, idx),
            data_source="pool",
            provenance={"pool": pool},
        )
        return out
    df = read_entries(store)
    known = df[df["chemsys"].isin(["Mg-Mn-O", "Mg-O", "Mn-O"]) & (df["nsites"] <= 26)].head(
        n_template
    )
    fixture_pool(
        out,
        list(zip(known["id"], read_structures(store, known["id"].tolist()), strict=True)),
        n_random=n_random,
        seed=1,
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-template", type=int, default=8)
    ap.add_argument("--n-random", type=int, default=8)
    ap.add_argument(
        "--store",
        default=None,
        help="entry store with Mg-Mn-O (default: build one from the bundled set)",
    )
    ap.add_argument(
        "--pool", default=None, help="a real candidates/pool.h5 instead of the stand-in pool"
    )
    ap.add_argument(
        "--skip-naive-recipe", action="store_true", help="skip the (slow) naive recipe mode"
    )
    ap.add_argument(
        "--equal-work",
        action="store_true",
        help="project modes without pre-screen / early stop, so every candidate gets the same "
        "relaxation as in the naive loop (the only fair throughput comparison)",
    )
    ap.add_argument(
        "--workdir",
        default=None,
        help="keep intermediate files here (a rerun resumes the reference)",
    )
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from matdisco.relax.ehull import candidate_ehull
    from matdisco.relax.reference import compute_reference, load_reference, phase_diagram
    from matdisco.relax.shards import read_records, split_pool
    from matdisco.store import read_entries

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    naive_env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    prescreen = {"enabled": False} if args.equal_work else PRESCREEN
    result: dict = {
        "relax_settings": RELAX,
        "project_prescreen": prescreen,
        "equal_work": bool(args.equal_work),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(args.workdir or tmp_)
        tmp.mkdir(parents=True, exist_ok=True)
        for stale in ("project", "project_serial"):  # throughput runs always start from scratch
            if (tmp / stale).exists():
                shutil.rmtree(tmp / stale)
        store = _store(tmp, args.store)
        pool = _pool(tmp, store, args.n_template, args.n_random, args.pool)
        pool_df = read_entries(pool)
        n = len(pool_df)
        result["candidates"] = {
            "n": n,
            "source": args.pool or "fixture_pool (template-like + gan-like)",
            "by_generator": pool_df["generator"].value_counts().to_dict(),
            "nsites": pool_df["nsites"].tolist(),
        }

        # 1) reference phases (all Mg-Mn-O phases of the store), relaxed with CHGNet, for the MAE
        t0, c0 = time.perf_counter(), time.process_time()
        ref = compute_reference(
            store,
            tmp / "ref.jsonl",
            tmp / "ref.csv",
            tmp / "ref.progress",
            elements=["Mg", "Mn", "O"],
            backend="chgnet",
            relax={**RELAX, "batched": True},
            reference={"mode": "relax", "max_e_above_hull": None, "max_sites": 80},
            threads=2,
        )
        ref_wall, ref_cpu = time.perf_counter() - t0, time.process_time() - c0
        ok = ref[
            (ref["status"] == "ok") & np.isfinite(ref["store_e_above_hull"].to_numpy(dtype=float))
        ]
        err = (ok["e_above_hull_model"] - ok["store_e_above_hull"]).to_numpy(dtype=float)
        near = ok["store_hull_e_above_hull"].to_numpy(dtype=float) <= 0.1
        result["reference"] = {
            "n_phases": int(len(ref)),
            "n_compared": int(len(ok)),
            "mae_e_above_hull_vs_store_eV": round(float(np.mean(np.abs(err))), 4),
            "median_abs_error_eV": round(float(np.median(np.abs(err))), 4),
            "max_abs_error_eV": round(float(np.max(np.abs(err))), 4),
            "worst": ok.assign(err=err)
            .reindex(ok.assign(err=np.abs(err)).sort_values("err", ascending=False).index)[
                ["id", "formula", "store_e_above_hull", "e_above_hull_model"]
            ]
            .head(5)
            .round(4)
            .to_dict("records"),
            "mae_within_0.1_of_store_hull_eV": round(float(np.mean(np.abs(err[near]))), 4)
            if near.any()
            else None,
            "n_within_0.1_of_store_hull": int(near.sum()),
            "wall_s": round(ref_wall, 1),
            "cpu_s_main_process": round(ref_cpu, 1),
            "note": "store E_hull of bundled entries: MP formula-level label + polymorph offset "
            "(docs/store.md)",
        }
        print(json.dumps(result["reference"], indent=2), flush=True)
        pdg = phase_diagram(load_reference(tmp / "ref.csv"))

        # 2a) does batching CHGNet calls pay off on CPU? one efs pass over all candidates
        probe_py = tmp / "probe.py"
        probe_py.write_text(BATCH_PROBE)
        result["batching_probe"] = {"structures": n, "atoms": int(pool_df["nsites"].sum())}
        for bs in (1, 4, 16):
            out, _, _ = _run([str(probe_py), str(pool), str(bs)], env=env)
            result["batching_probe"][f"batch_size_{bs}"] = out
            print("batch", bs, json.dumps(out), flush=True)

        # 2b) throughput modes
        naive_py, shard_py = tmp / "naive.py", tmp / "shard.py"
        naive_py.write_text(NAIVE)
        shard_py.write_text(SHARD)
        modes: dict = {}
        naive_res = None
        for name, flag in (("naive_blas1", "blas1"), ("naive", "recipe")):
            if name == "naive" and args.skip_naive_recipe:
                continue
            out, wall, cpu = _run(
                [str(naive_py), str(pool), json.dumps(RELAX), flag], env=naive_env
            )
            modes[name] = {
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "structures_per_min": round(n / wall * 60, 2),
                "load_at_end": round(os.getloadavg()[0], 2),
            }
            naive_res = naive_res or out["results"]
            print(name, json.dumps(modes[name]), flush=True)
        for name, shard_size in (("project", (n + 1) // 2), ("project_serial", n)):
            d = tmp / name
            shards = split_pool(pool, d / "shards", shard_size=shard_size, max_candidates=None)
            cmds = [
                [
                    str(shard_py),
                    str(s),
                    str(d / f"{s.stem}.jsonl"),
                    str(d / f"{s.stem}.progress"),
                    str(tmp / "ref.csv"),
                    json.dumps({**RELAX, "batched": True}),
                    json.dumps(prescreen),
                ]
                for s in shards
            ]
            outs, wall, cpu = _parallel(cmds, env)
            counts: dict = {}
            for o in outs:
                for k, v in o["counts"].items():
                    counts[k] = counts.get(k, 0) + v
            modes[name] = {
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "structures_per_min": round(n / wall * 60, 2),
                "workers": len(shards),
                "counts": counts,
                "load_at_end": round(os.getloadavg()[0], 2),
            }
            print(name, json.dumps(modes[name]), flush=True)
        base = modes.get("naive", modes["naive_blas1"])
        result["throughput"] = {
            "modes": modes,
            "baseline": "naive" if "naive" in modes else "naive_blas1",
            "speedup_project_vs_naive": round(
                modes["project"]["structures_per_min"] / base["structures_per_min"], 2
            ),
            "speedup_project_vs_naive_blas1": round(
                modes["project"]["structures_per_min"] / modes["naive_blas1"]["structures_per_min"],
                2,
            ),
            "speedup_project_serial_vs_naive_blas1": round(
                modes["project_serial"]["structures_per_min"]
                / modes["naive_blas1"]["structures_per_min"],
                2,
            ),
            "cpu_ratio_naive_blas1_over_project": round(
                modes["naive_blas1"]["cpu_s"] / modes["project"]["cpu_s"], 2
            ),
            "goal": ">= 2x structures per minute vs the naive loop",
        }

        # 3) agreement of the project path with the naive loop
        _, recs = read_records(next((tmp / "project").glob("shard_000.jsonl")))
        for extra in sorted((tmp / "project").glob("shard_0*.jsonl"))[1:]:
            recs += read_records(extra)[1]
        rows = []
        for r in recs:
            nv = naive_res[r.id]
            comp = pool_df.set_index("id").loc[r.id, "composition"]
            eh_naive = candidate_ehull(pdg, comp, nv["energy_per_atom"])[0]
            eh_proj = (
                candidate_ehull(pdg, comp, r.energy_per_atom)[0] if r.status == "ok" else np.nan
            )
            rows.append(
                {
                    "id": r.id,
                    "status": r.status,
                    "reason": r.reason,
                    "steps_naive": nv["steps"],
                    "steps": r.steps,
                    "eh_naive": eh_naive,
                    "eh_project": eh_proj,
                }
            )
        ag = pd.DataFrame(rows)
        both = ag[ag["status"] == "ok"]
        dropped = ag[ag["status"] != "ok"]
        result["agreement"] = {
            "n_relaxed_by_both": int(len(both)),
            "max_abs_diff_e_above_hull_eV": round(
                float(np.nanmax(np.abs(both["eh_project"] - both["eh_naive"]))), 4
            )
            if len(both)
            else None,
            "n_dropped_by_prescreen_or_early_stop": int(len(dropped)),
            "dropped_but_naive_le_200meV": dropped.loc[dropped["eh_naive"] <= 0.2, "id"].tolist(),
            "dropped": dropped[["id", "reason", "eh_naive"]].round(3).to_dict("records"),
            "per_candidate": ag.round(4).to_dict("records"),
        }
    result["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["peak_rss_mb"] = peak_rss_mb()
    write("relax", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
