"""Relaxation: backends, the batched FIRE driver, failures, shards, kill -9 resume, workflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matdisco.relax import (
    BackendUnavailable,
    RelaxSettings,
    get_backend,
    rattle,
    relax_batch,
    relax_one,
)
from matdisco.relax.backends import EMTBackend
from matdisco.relax.shards import (
    ProgressFile,
    gather_shards,
    read_records,
    run_shard,
    select_candidates,
    shard_names,
    split_pool,
)
from matdisco.store import StructureArrays, read_entries, write_store


# ---------------------------------------------------------------- fixtures (EMT: Cu/Ni/Au/Al)
def _emt_structures(n: int = 6, seed: int = 0):
    """Small strained/perturbed fcc cells of EMT elements (id, pymatgen Structure)."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    rng = np.random.default_rng(seed)
    out = []
    recipes = [("Cu", 3.61), ("Ni", 3.52), ("Al", 4.05), ("Au", 4.08), ("Cu", 3.7), ("Ni", 3.4)]
    for k in range(n):
        el, a = recipes[k % len(recipes)]
        atoms = bulk(el, "fcc", a=a * rng.uniform(0.97, 1.03), cubic=True)
        if k % 3 == 1:  # an alloy: swap one atom
            atoms.symbols[0] = "Au" if el != "Au" else "Cu"
        atoms.rattle(0.05, seed=k)
        out.append((f"c{k:02d}", AseAtomsAdaptor.get_structure(atoms)))
    return out


def _pool(path: Path, items, invalid=()) -> pd.DataFrame:
    rows = []
    for rid, s in items:
        rows.append(
            {
                "id": rid,
                "source": "fixture",
                "formula": s.composition.reduced_formula,
                "composition": s.composition.formula,
                "chemsys": "-".join(sorted(e.symbol for e in s.composition.elements)),
                "nelements": len(s.composition.elements),
                "nsites": len(s),
                "generator": "gan" if int(rid[1:]) % 2 else "template",
                "parent": "",
                "target_formula": s.composition.reduced_formula,
                "novel_composition": True,
                "novel_structure": True,
                "charge_neutral": True,
                "min_distance": 2.0,
                "valid": rid not in invalid,
            }
        )
    df = pd.DataFrame(rows)
    write_store(
        path,
        df,
        StructureArrays.from_structures([s for _, s in items]),
        data_source="fixture",
        provenance={},
    )
    return df


@pytest.fixture
def emt_pool(tmp_path) -> Path:
    path = tmp_path / "pool.h5"
    _pool(path, _emt_structures(6))
    return path


# ---------------------------------------------------------------- backends
def test_get_backend_errors():
    with pytest.raises(ValueError, match="unknown relax backend"):
        get_backend("nonsense")
    try:
        import sevenn  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="sevenn==0.13.0"):
            get_backend("sevennet")


def test_backend_options_are_typed():
    """relax.<backend> options are read as the typed section: a bad key fails, naming it."""
    from matdisco.settings import SettingsError

    with pytest.raises(SettingsError, match=r"relax\.chgnet\.nonsense: unknown key"):
        get_backend("chgnet", {"nonsense": 1})
    with pytest.raises(SettingsError, match=r"relax\.chgnet\.batch_size"):
        get_backend("chgnet", {"batch_size": "many"})
    with pytest.raises(ValueError, match="'emt' takes no options"):
        get_backend("emt", {"delay_s": 0.1})  # a test keyword, not a config key
    be = get_backend("emt", delay_s=0.25)
    assert be.delay_s == 0.25 and be.describe()["delay_s"] == 0.25


def test_mp2020_correction_spinel():
    """SevenNet/VASP-style raw energies get MP2020's oxide + Mn GGA/GGA+U corrections."""
    from matdisco.relax.backends import mp2020_correction, mp_parameters
    from matdisco.relax.testing import mgo, spinel_mgmn2o4

    s = spinel_mgmn2o4()
    params = mp_parameters(s)
    assert params["run_type"] == "GGA+U" and params["hubbards"]["Mn"] == pytest.approx(3.9)
    # -0.869 eV/atom for MgMn2O4 = oxide (8 O) + Mn U mixing (4 Mn): compute-backends.md
    assert mp2020_correction(s, -99.0) / len(s) == pytest.approx(-0.869, abs=0.002)
    assert mp2020_correction(mgo(), -11.9) == pytest.approx(-0.687, abs=0.002)  # one O


@pytest.mark.slow
def test_chgnet_batched_predict_matches_calculator():
    """The batched CHGNet path gives the CHGNetCalculator's energies, forces and stresses."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from matdisco.relax.testing import mgo, mno, spinel_mgmn2o4

    be = get_backend("chgnet")
    assert be.energy_scale == "chgnet-0.3.0/mp2020"
    atoms = [
        rattle(AseAtomsAdaptor.get_atoms(s), 0.05, 0, str(i))
        for i, s in enumerate([mgo(), mno(), spinel_mgmn2o4()])
    ]
    batched = be.predict(atoms)
    for a, b in zip(atoms, batched, strict=True):
        a = a.copy()
        a.calc = be.calculator(a)
        assert b["energy"] == pytest.approx(a.get_potential_energy(), abs=2e-4)
        np.testing.assert_allclose(b["forces"], a.get_forces(), atol=2e-4)
        np.testing.assert_allclose(b["stress"], a.get_stress(), atol=2e-5)
    # CHGNet 0.3.0, rock-salt MgO at a = 4.21 A: -6.31 eV/atom, already on the MP2020 scale
    e_mgo = be.predict_energy([AseAtomsAdaptor.get_atoms(mgo())])[0] / 2
    assert e_mgo == pytest.approx(-6.31, abs=0.02)


# ---------------------------------------------------------------- optimiser
def test_rattle_is_seeded_by_id():
    from ase.build import bulk

    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    r1, r2, r3 = rattle(a, 0.05, 0, "x"), rattle(a, 0.05, 0, "x"), rattle(a, 0.05, 0, "y")
    np.testing.assert_array_equal(r1.positions, r2.positions)
    assert not np.allclose(r1.positions, r3.positions)
    assert np.allclose(rattle(a, 0.0, 0, "x").positions, a.positions)


def test_batched_fire_equals_ase_fire():
    """The lockstep FIRE reproduces ASE's FIRE + FrechetCellFilter step for step."""
    from pymatgen.io.ase import AseAtomsAdaptor

    be = EMTBackend()
    settings = RelaxSettings(fmax=0.02, steps=300, rattle=0.05, seed=3)
    items = [(rid, AseAtomsAdaptor.get_atoms(s)) for rid, s in _emt_structures(5)]
    seen = []
    batched = {r.id: r for r in relax_batch(items, be, settings, on_result=seen.append)}
    assert [r.id for r in seen] == list(batched)  # streamed as each finished
    for rid, atoms in items:
        ref = relax_one(atoms, be, settings, rid)
        got = batched[rid]
        assert ref.status == got.status == "ok" and ref.converged and got.converged
        assert got.steps == ref.steps
        assert got.energy_per_atom == pytest.approx(ref.energy_per_atom, abs=1e-9)
        np.testing.assert_allclose(got.lattice, ref.lattice, atol=1e-8)
        assert got.fmax < 0.02 and len(got.forces) == len(atoms) and len(got.stress_gpa) == 6


class _Flaky(EMTBackend):
    """EMT that fails for structures containing Al (a calculator error mid-batch)."""

    def predict(self, atoms_list):
        out = super().predict(atoms_list)
        return [
            RuntimeError("boom") if "Al" in a.get_chemical_symbols() else r
            for a, r in zip(atoms_list, out, strict=True)
        ]


@pytest.mark.parametrize("batched", [True, False])
def test_failures_are_recorded_and_the_rest_goes_on(batched):
    from pymatgen.io.ase import AseAtomsAdaptor

    items = [(rid, AseAtomsAdaptor.get_atoms(s)) for rid, s in _emt_structures(6)]
    be = _Flaky()
    if not batched:  # relax_one goes through the ASE calculator: make that fail for Al too

        class _Calc(type(be.calculator(items[0][1]))):
            def calculate(self, atoms=None, properties=("energy",), system_changes=()):
                if "Al" in atoms.get_chemical_symbols():
                    raise RuntimeError("boom")
                super().calculate(atoms, properties, system_changes)

        be.calculator = lambda atoms: _Calc()
    settings = RelaxSettings(fmax=0.02, steps=300, rattle=0.02)
    run = (
        (lambda: relax_batch(items, be, settings))
        if batched
        else (lambda: [relax_one(a, be, settings, r) for r, a in items])
    )
    res = {r.id: r for r in run()}
    assert len(res) == 6
    al = [rid for rid, a in items if "Al" in a.get_chemical_symbols()]
    assert al and all(res[r].status == "failed" and "calculator error" in res[r].reason for r in al)
    assert all(res[r].status == "ok" for r in res if r not in al)


def test_exploding_timeout_and_non_convergence():
    from pymatgen.io.ase import AseAtomsAdaptor

    items = [(rid, AseAtomsAdaptor.get_atoms(s)) for rid, s in _emt_structures(3)]
    be = EMTBackend()
    # "exploding": any energy below +10 eV/atom counts as exploded here
    res = relax_batch(items, be, RelaxSettings(min_energy_per_atom=10.0))
    assert all(r.status == "failed" and r.reason.startswith("exploding energy") for r in res)
    res = relax_one(items[0][1], be, RelaxSettings(min_energy_per_atom=10.0), "x")
    assert res.status == "failed" and res.reason.startswith("exploding energy")
    # collapsed atoms
    squeezed = items[0][1].copy()
    squeezed.positions[1] = squeezed.positions[0] + [0.2, 0, 0]
    assert relax_batch([("sq", squeezed)], be, RelaxSettings(rattle=0))[0].reason.startswith(
        "collapsed"
    )
    # per-structure timeout
    res = relax_batch(
        items,
        EMTBackend(delay_s=0.01),
        RelaxSettings(fmax=1e-6, steps=10_000, timeout_s=0.05),
    )
    assert all(r.status == "failed" and r.reason.startswith("timeout") for r in res)
    # not converged in 2 steps: kept (flagged) by default, failed when convergence is required
    res = relax_batch(items, be, RelaxSettings(fmax=1e-6, steps=2))
    assert all(
        r.status == "ok" and not r.converged and r.steps == 2 and "not converged" in r.reason
        for r in res
    )
    res = relax_batch(items, be, RelaxSettings(fmax=1e-6, steps=2, require_convergence=True))
    assert all(r.status == "failed" for r in res)


# ---------------------------------------------------------------- shards and resume
def test_select_and_split(tmp_path):
    items = _emt_structures(6)
    pool = _pool(tmp_path / "pool.h5", items, invalid={"c01"})
    idx = select_candidates(pool, 4)
    assert pool["id"].iloc[idx].tolist() == ["c00", "c02", "c03", "c04"]
    assert len(select_candidates(pool, None, only_valid=False)) == 6
    # round robin: in turn per generator, and per target formula within a generator
    rr = pd.DataFrame(
        {
            "generator": ["tpl", "tpl", "tpl", "gan", "gan", "gan", "gan"],
            "target_formula": ["A", "A", "B", "C", "C", "C", "D"],
            "valid": True,
        }
    )
    assert select_candidates(rr, 5, selection="round_robin").tolist() == [0, 3, 2, 6, 1]
    assert select_candidates(rr, None, selection="round_robin").tolist() == [0, 3, 2, 6, 1, 4, 5]
    with pytest.raises(ValueError, match="unknown selection"):
        select_candidates(rr, 2, selection="best")
    assert shard_names(5, 2) == ["shard_000", "shard_001", "shard_002"] and shard_names(0, 2) == []
    paths = split_pool(
        tmp_path / "pool.h5",
        tmp_path / "shards",
        shard_size=2,
        max_candidates=4,
        selected_csv=tmp_path / "sel.csv",
    )
    assert [p.name for p in paths] == ["shard_000.h5", "shard_001.h5"]
    assert read_entries(paths[1])["id"].tolist() == ["c03", "c04"]
    assert "generator" in read_entries(paths[0]).columns  # pool columns travel with the shard
    sel = pd.read_csv(tmp_path / "sel.csv")
    assert sel["shard"].tolist() == ["shard_000", "shard_000", "shard_001", "shard_001"]


def test_progress_file_drops_partial_lines_and_stale_progress(tmp_path):
    from matdisco.relax.optimize import RelaxResult

    p = tmp_path / "progress.jsonl"
    pf = ProgressFile(p, "fp1")
    pf.append(RelaxResult(id="a", status="ok"))
    pf.append(RelaxResult(id="a", status="ok"))  # a second append of the same id is ignored
    pf.close()
    with open(p, "a") as fh:
        fh.write('{"id": "b", "stat')  # a kill in the middle of a write
    pf = ProgressFile(p, "fp1")
    assert set(pf.done) == {"a"}
    pf.append(RelaxResult(id="b", status="ok"))
    pf.close()
    lines = [json.loads(x) for x in p.read_text().splitlines()]
    assert [x.get("id") for x in lines[1:]] == ["a", "b"]
    pf = ProgressFile(p, "other-settings")  # different content/settings: not reused
    assert pf.done == {}
    pf.close()
    assert (tmp_path / "progress.jsonl.stale").exists()


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from matdisco.relax.backends import EMTBackend
    from matdisco.relax.shards import run_shard
    shard, out, progress, batched = sys.argv[1:5]
    run_shard(shard, out, progress, backend="emt", backend_obj=EMTBackend(delay_s=0.1),
              relax={"fmax": 0.02, "steps": 300, "rattle": 0.03, "batched": batched == "1"})
    """
)


@pytest.mark.parametrize("batched", [False, True])
def test_kill_9_and_rerun_gives_exactly_one_result_each(tmp_path, batched):
    """kill -9 a shard job after some results are written; the rerun finishes the rest only."""
    from pymatgen.io.ase import AseAtomsAdaptor

    items = _emt_structures(6)
    if batched:  # different step counts, so structures finish (and are written) at different times
        items = [
            (
                rid,
                AseAtomsAdaptor.get_structure(
                    rattle(AseAtomsAdaptor.get_atoms(s), 0.02 * k, k, rid)
                ),
            )
            for k, (rid, s) in enumerate(items)
        ]
    _pool(tmp_path / "pool.h5", items)
    shard = split_pool(
        tmp_path / "pool.h5", tmp_path / "shards", shard_size=10, max_candidates=None
    )[0]
    out, progress = tmp_path / "out.jsonl", tmp_path / "progress.jsonl"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(shard), str(out), str(progress), "1" if batched else "0"],
        env=env,
    )
    deadline = time.time() + 240
    n_before = 0
    while time.time() < deadline and proc.poll() is None:
        if progress.exists():
            n_before = len(progress.read_text().splitlines()) - 1
            if n_before >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the shard finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # the final output is only written at the end
    before = {
        json.loads(x)["id"]: x
        for x in progress.read_text().splitlines()[1:]
        if x.strip().endswith("}")
    }
    assert 2 <= len(before) < 6
    # the rerun: same settings (the progress fingerprint covers content and settings)
    meta = run_shard(
        shard,
        out,
        progress,
        backend="emt",
        backend_obj=EMTBackend(delay_s=0.1),
        relax={"fmax": 0.02, "steps": 300, "rattle": 0.03, "batched": batched},
    )
    _, results = read_records(out)
    ids = [r.id for r in results]
    assert sorted(ids) == sorted(rid for rid, _ in items) and len(ids) == len(set(ids)) == 6
    lines = progress.read_text().splitlines()[1:]
    prog_ids = [json.loads(x)["id"] for x in lines]
    assert len(prog_ids) == len(set(prog_ids)) == 6
    # the results written before the kill were kept, not recomputed
    for x in lines:
        rid = json.loads(x)["id"]
        if rid in before:
            assert x == before[rid]
    assert meta["counts"] == {"ok": 6}


def test_run_and_gather_shards(tmp_path, emt_pool):
    shards = split_pool(emt_pool, tmp_path / "shards", shard_size=4, max_candidates=None)
    results = []
    for sh in shards:
        res = tmp_path / f"{sh.stem}.jsonl"
        run_shard(
            sh,
            res,
            tmp_path / f"{sh.stem}.progress",
            backend="emt",
            relax={"fmax": 0.05, "steps": 100},
        )
        results.append(res)
    df = gather_shards(shards, results, tmp_path / "relaxed.h5", tmp_path / "relaxed.csv")
    assert len(df) == 6 and set(df["status"]) == {"ok"} and set(df["energy_scale"]) == {"emt"}
    stored = read_entries(tmp_path / "relaxed.h5")
    assert {"generator", "steps", "converged", "max_stress_gpa", "energy_per_atom"} <= set(
        stored.columns
    )
    assert np.isfinite(stored["energy_per_atom"]).all()


# ---------------------------------------------------------------- workflow (EMT, private Snakefile)
def _emt_store(path: Path) -> None:
    """A tiny 'known phases' store for Cu-Ni-Au-Al with EMT formation energies."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    def energy(atoms):
        atoms = atoms.copy()
        atoms.calc = EMT()
        return atoms.get_potential_energy() / len(atoms)

    phases = {
        "k-Cu": bulk("Cu", "fcc", a=3.59, cubic=True),
        "k-Ni": bulk("Ni", "fcc", a=3.50, cubic=True),
        "k-Au": bulk("Au", "fcc", a=4.06, cubic=True),
        "k-Al": bulk("Al", "fcc", a=4.05, cubic=True),
    }
    l12 = bulk("Cu", "fcc", a=3.75, cubic=True)
    l12.symbols[0] = "Au"
    phases["k-Cu3Au"] = l12
    mu = {el: energy(phases[f"k-{el}"]) for el in ("Cu", "Ni", "Au", "Al")}
    rows, structures = [], []
    for pid, atoms in phases.items():
        s = AseAtomsAdaptor.get_structure(atoms)
        comp = s.composition
        ef = energy(atoms) - sum(
            comp.get_atomic_fraction(el) * mu[el.symbol] for el in comp.elements
        )
        rows.append(
            {
                "id": pid,
                "source": "fixture",
                "formula": comp.reduced_formula,
                "composition": comp.formula,
                "chemsys": "-".join(sorted(e.symbol for e in comp.elements)),
                "nelements": len(comp.elements),
                "nsites": len(s),
                "formation_energy_per_atom": ef,
                "e_above_hull": 0.0,
            }
        )
        structures.append(s)
    write_store(
        path,
        pd.DataFrame(rows),
        StructureArrays.from_structures(structures),
        data_source="fixture",
        provenance={},
    )


@pytest.mark.slow
def test_workflow_relax_stage_with_emt(tmp_path, root, snakemake_bin):
    """Checkpoint split -> grouped shard jobs -> gather (private Snakefile).

    The ehull rule now also needs the generator summaries, the pool table and the known-phase
    inputs of the other stages (issue 12), so this private Snakefile stops at the gathered
    relaxation; E_hull on top of it is covered by tests/test_ehull.py and the tiny end-to-end
    run of ``make test``.
    """
    run = tmp_path / "results" / "wf"
    (run / "data").mkdir(parents=True)
    (run / "candidates").mkdir(parents=True)
    _emt_store(run / "data" / "entries.h5")
    _pool(run / "candidates" / "pool.h5", _emt_structures(5), invalid={"c04"})
    snakefile = tmp_path / "Snakefile"
    cfg = tmp_path / "cfg.yaml"
    snakefile.write_text(
        textwrap.dedent(
            f"""
            configfile: "{cfg}"
            include: "{root}/workflow/rules/common.smk"
            include: "{root}/workflow/rules/relax.smk"
            rule all:
                input: "results/wf/relax/relaxed.csv"
            """
        )
    )
    cfg.write_text(  # only what differs from the schema defaults
        textwrap.dedent(
            """
            run_name: wf
            target: {elements: [Cu, Ni, Au, Al]}
            data: {source: bundled}
            relax: {backend: emt, max_candidates: 3, shard_size: 2, fmax: 0.05, steps: 60,
                    prescreen: {enabled: true, max_e_above_hull: 5.0}}
            ehull: {reference: {max_e_above_hull: null}}
            """
        )
    )
    cmd = [
        snakemake_bin,
        "-s",
        str(snakefile),
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
        "--nolock",
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    relax = run / "relax"
    assert sorted(p.name for p in (relax / "shards").glob("*.h5")) == [
        "shard_000.h5",
        "shard_001.h5",
    ]
    table = pd.read_csv(relax / "relaxed.csv")
    assert table["id"].tolist() == ["c00", "c01", "c02"]  # c04 invalid, cap 3
    assert set(table["energy_scale"]) == {"emt"} and (table["status"] == "ok").all()
    assert (relax / "progress" / "shard_000.jsonl").exists()
