#!/usr/bin/env python
"""Benchmark: DAG of the relax fan-out with 10,000 candidates, built in <= 30 s on 2 cores.

What is timed: `snakemake -n` through profiles/slurm (executor slurm, group-components
relax=50, --cores cap) AFTER the fan-out checkpoint `split_pool` has produced its shards, i.e.
when Snakemake re-evaluates the DAG with one `relax_shard` job per shard and groups the shards
into cluster submissions. 10,000 candidates at shard size 1 are 10,000 shard jobs.

Two workflows:
* ``real`` (default when workflow/rules/relax.smk exists): a Snakefile in a temporary folder
  that includes the repository's own workflow/rules/common.smk and relax.smk (real rules,
  input functions and checkpoint) on config/config.yaml with relax.max_candidates=null. The
  checkpoint's outputs (one shard file per shard, named by matdisco.relax.shards.shard_names,
  plus selected.csv) and the upstream inputs (candidates/pool.h5, data/entries.h5) are laid
  down as placeholder files: writing 10,000 real HDF5 shards takes minutes and does not change
  the DAG. Snakemake then treats the checkpoint as done (outputs newer than inputs).
* ``synthetic`` (fallback without relax.smk, or --mode synthetic): a stand-alone Snakefile with
  the same pattern (checkpoint split_pool -> relax_shard in group relax -> gather_relax),
  whose checkpoint is run for real.

Writes benchmarks/results/dag_scale.json. Exit status 1 when a dry run exceeds the goal.
Usage: python benchmarks/dag_scale.py [--candidates 10000] [--shard-sizes 1 12 50]
                                      [--mode auto|real|synthetic] [--cores-cap 32]
                                      [--compare-include proposed_fix.smk]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm"
GOAL_S = 30.0

REAL_SNAKEFILE = """
# benchmarks/dag_scale.py: the repository's relax stage on its own.
{extra}configfile: "{root}/config/config.yaml"


include: "{root}/workflow/rules/common.smk"
include: "{root}/workflow/rules/relax.smk"


rule all:
    input:
        TARGETS,
    default_target: True
"""

SYNTHETIC_SNAKEFILE = r"""
# benchmarks/dag_scale.py: synthetic stand-in for workflow/rules/relax.smk.
import json
from pathlib import Path

SIZE = int(config["shard_size"])


rule all:
    input:
        "relax/relaxed.txt",


checkpoint split_pool:
    input:
        "candidates/pool.txt",
    output:
        shards=directory("relax/shards"),
        manifest="relax/shards.json",
    run:
        ids = Path(input[0]).read_text().split()
        out = Path(output.shards)
        out.mkdir(parents=True, exist_ok=True)
        names = []
        for i in range(0, len(ids), SIZE):
            name = f"shard_{i // SIZE:05d}"
            (out / f"{name}.txt").write_text("\n".join(ids[i : i + SIZE]) + "\n")
            names.append(name)
        Path(output.manifest).write_text(json.dumps(names))


rule relax_shard:
    input:
        "relax/shards/{shard}.txt",
    output:
        "relax/done/{shard}.txt",
    group:
        "relax"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    shell:
        "cp {input} {output}"


def relaxed_shards(wildcards):
    manifest = checkpoints.split_pool.get().output.manifest
    names = json.loads(Path(manifest).read_text())
    return expand("relax/done/{shard}.txt", shard=names)


rule gather_relax:
    input:
        relaxed_shards,
    output:
        "relax/relaxed.txt",
    shell:
        "cat {input} > {output}"
"""


def snakemake_bin() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    return str(exe) if exe.exists() else "snakemake"


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Run a command; (wall seconds, stdout+stderr). Raises with the output tail on failure.

    The CPU seconds (user + sys) of the command are left in ``run.cpu_s`` (less sensitive to
    other load on the machine than the wall time)."""
    env = dict(os.environ)
    # the workflow's matdisco first (it is found this way in a plain checkout, too)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}")
    return wall, out


def job_counts(text: str) -> dict[str, int]:
    """The last 'Job stats' table of a dry run as {rule: count}."""
    counts: dict[str, int] = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("Job stats"):
            in_table, counts = True, {}
            continue
        if in_table:
            m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if m:
                counts[m.group(1)] = int(m.group(2))
            elif counts and not line.strip():
                in_table = False
    return counts


def group_sizes(text: str) -> list[int]:
    """Jobs per 'Group job relax' block of a verbose dry run."""
    sizes = []
    for block in re.split(r"Group job relax", text)[1:]:
        # a group block lists its jobs indented; it ends at the next unindented job header
        body = re.split(r"\n\[[^\]]+\]\n(?:rule|localrule|checkpoint) ", block)[0]
        sizes.append(len(re.findall(r"^\s+rule relax_shard:", body, flags=re.M)))
    return sizes


def prepare_real(wd: Path, n: int, shard_size: int, extra_include: str | None = None) -> list[str]:
    """Lay down the checkpoint's outputs for n candidates; return the --config arguments."""
    from matdisco.relax.shards import shard_names

    run_dir = wd / "results" / "dagbench"
    for rel in ("candidates/pool.h5", "data/entries.h5"):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).touch()
    time.sleep(0.05)  # checkpoint outputs strictly newer than its input
    shards = run_dir / "relax" / "shards"
    shards.mkdir(parents=True)
    names = shard_names(n, shard_size)
    for name in names:
        (shards / f"{name}.h5").touch()
    (run_dir / "relax" / "selected.csv").write_text(
        "id,shard\n" + "".join(f"cand-{i:06d},{names[i // shard_size]}\n" for i in range(n))
    )
    extra = f'include: "{Path(extra_include).resolve()}"\n' if extra_include else ""
    (wd / "Snakefile").write_text(REAL_SNAKEFILE.format(root=ROOT, extra=extra))
    (wd / "bench.yaml").write_text(
        f"run_name: dagbench\nrelax:\n  max_candidates: null\n  shard_size: {shard_size}\n"
    )
    return ["--configfile", "bench.yaml"]


def prepare_synthetic(
    wd: Path, n: int, shard_size: int, extra_include: str | None = None
) -> list[str]:
    extra = f'include: "{Path(extra_include).resolve()}"\n' if extra_include else ""
    (wd / "Snakefile").write_text(extra + SYNTHETIC_SNAKEFILE)
    (wd / "candidates").mkdir()
    (wd / "candidates/pool.txt").write_text("".join(f"cand-{i:06d}\n" for i in range(n)))
    cfg = ["--config", f"shard_size={shard_size}"]
    run([snakemake_bin(), "split_pool", "--cores", "1", "--quiet", "all", *cfg], wd)
    return cfg


def bench(
    mode: str, n: int, shard_size: int, cores_cap: int | None, extra_include: str | None = None
) -> dict:
    sm = snakemake_bin()
    with tempfile.TemporaryDirectory(prefix="dag_scale_") as tmp:
        wd = Path(tmp)
        t0 = time.perf_counter()
        cfg = (prepare_real if mode == "real" else prepare_synthetic)(
            wd, n, shard_size, extra_include
        )
        t_prepare = time.perf_counter() - t0
        base = [sm, "-n", "--profile", str(PROFILE), "--workflow-profile", "none", "--nolock", *cfg]
        if cores_cap:
            base += ["--cores", str(cores_cap)]
        # the timed dry run: DAG + grouping, printing only the job stats
        t_dry, out = run([*base, "--quiet", "rules"], wd)
        cpu_dry = run.cpu_s
        counts = job_counts(out)
        if not counts.get("relax_shard"):
            raise RuntimeError(f"no relax_shard jobs in the DAG:\n{out[-3000:]}")
        # the same dry run printing every job (slower: ~3 lines per job), to count groups
        t_verbose, out_v = run([*base, "--quiet", "progress"], wd)
        sizes = group_sizes(out_v)
        return {
            "candidates": n,
            "shard_size": shard_size,
            "relax_shard_jobs": counts.get("relax_shard"),
            "dag_jobs_total": counts.get("total"),
            "relax_cluster_submissions": len(sizes),
            "largest_group": max(sizes, default=0),
            "extra_include": extra_include,
            "dry_run_wall_s": round(t_dry, 2),
            "dry_run_cpu_s": round(cpu_dry, 2),
            "dry_run_printing_every_job_wall_s": round(t_verbose, 2),
            "prepare_wall_s": round(t_prepare, 2),
            "within_goal": t_dry <= GOAL_S,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--shard-sizes", type=int, nargs="+", default=[1, 12, 50])
    ap.add_argument("--mode", choices=["auto", "synthetic", "real"], default="auto")
    ap.add_argument(
        "--cores-cap",
        type=int,
        default=None,
        help="--cores for the dry run (default: the profile's)",
    )
    ap.add_argument(
        "--compare-include",
        metavar="SMK",
        help="also time every case with this file included first (e.g. a proposed work-around)",
    )
    args = ap.parse_args()
    has_real = (ROOT / "workflow/rules/relax.smk").exists()
    mode = args.mode if args.mode != "auto" else ("real" if has_real else "synthetic")
    if mode == "real" and not has_real:
        ap.error("workflow/rules/relax.smk does not exist: use --mode synthetic")
    rows = [bench(mode, args.candidates, s, args.cores_cap) for s in args.shard_sizes]
    compared = (
        [
            bench(mode, args.candidates, s, args.cores_cap, args.compare_include)
            for s in args.shard_sizes
        ]
        if args.compare_include
        else []
    )
    worst = max(r["dry_run_wall_s"] for r in rows)
    notes = {
        "real": (
            "repository rules (common.smk + relax.smk) in a temporary Snakefile; the split_pool "
            "checkpoint outputs are placeholder files named like the real shards"
        ),
        "synthetic": (
            "stand-alone Snakefile mimicking checkpoint split_pool -> relax_shard (group relax) "
            "-> gather_relax; its checkpoint was run for real"
        ),
    }
    result = {
        "mode": mode,
        "note": notes[mode],
        "command": "snakemake -n --profile profiles/slurm --workflow-profile none --quiet rules",
        "goal_s": GOAL_S,
        "worst_dry_run_wall_s": worst,
        "within_goal": worst <= GOAL_S,
        "cpus_available": len(os.sched_getaffinity(0)),
        "runs": rows,
    }
    if compared:
        result["runs_with_compare_include"] = compared
        result["worst_dry_run_wall_s_with_compare_include"] = max(
            r["dry_run_wall_s"] for r in compared
        )
    write("dag_scale", result)
    return 0 if result["within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
