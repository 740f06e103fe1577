"""Closed loop (matdisco.loop): a candidate relaxed in run 1 is known and part of the reference
hull in run 2; appends are idempotent; energy scales are never mixed; the workflow has no cycle.

Library level: a Cu-Au fixture store with EMT energies (the "emt" scale, milliseconds). The
Snakemake-level test (slow) seeds a knowledge base with one Mg-Mn-O record on the tiny run's
CHGNet scale and runs only build_store + relax_reference + loop_labels of config/test.yaml.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matdisco.known import KnownCompositions, annotate_structures
from matdisco.loop import (
    RECORD_FIELDS,
    KnowledgeBase,
    KnowledgeBaseError,
    workflow_view,
    write_extra_labels,
)
from matdisco.relax.reference import compute_reference, phase_diagram
from matdisco.store import StructureArrays, write_store

ROOT = Path(__file__).resolve().parents[1]


def _emt_energy(s) -> float:
    """EMT energy per atom (eV/atom) of a pymatgen structure: the 'emt' scale."""
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    a = AseAtomsAdaptor.get_atoms(s)
    a.calc = EMT()
    return float(a.get_potential_energy()) / len(a)


def _cu_au():
    """A relaxed CuAu (L1_0) candidate (pymatgen); the store's Cu, Au, Cu3Au come from the
    ``cu_au_store`` fixture (tests/conftest.py)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    l10 = bulk("Cu", "fcc", a=3.85, cubic=True)
    l10.symbols[0] = "Au"
    l10.symbols[1] = "Au"
    # "relaxed in run 1": cell and positions with EMT (E_f about -9 meV/atom, a hull vertex)
    l10.calc = EMT()
    FIRE(FrechetCellFilter(l10), logfile=None).run(fmax=0.01, steps=300)
    l10.calc = None
    return AseAtomsAdaptor.get_structure(l10)


def _emt_reference(store: Path, tmp: Path, name: str, progress: str, known: dict) -> pd.DataFrame:
    """Reference phases of the Cu-Au fixture as EMT single points (files tmp/<name>.*)."""
    return compute_reference(
        store,
        tmp / f"{name}.jsonl",
        tmp / f"{name}.csv",
        tmp / f"{progress}.jsonl",
        elements=["Cu", "Au"],
        backend="emt",
        reference={"mode": "static", "max_e_above_hull": None, "max_template_phases": 0},
        known=known,
    )


@pytest.fixture
def store(tmp_path, cu_au_store) -> Path:
    """Cu-Au entry store (Cu, Au, Cu3Au) with a label table that knows Cu3Au only."""
    labels = pd.DataFrame({"formula": ["Cu3Au"], "e_above_hull": [0.0], "source": ["mp"]})
    return cu_au_store(tmp_path / "store.h5", labels)


def _ehull_store(path: Path, rows: list[dict], structures) -> Path:
    """A relax/ehull.h5-like entry store of run 1 (the columns loop_append reads)."""
    df = pd.DataFrame(rows)
    df["composition"] = [s.composition.formula.replace(" ", "") for s in structures]
    df["formula"] = [s.composition.reduced_formula for s in structures]
    df["nsites"] = [len(s) for s in structures]
    write_store(
        path,
        df,
        StructureArrays.from_structures(structures),
        data_source="relax",
        provenance={},
    )
    return path


@pytest.fixture
def run1(tmp_path) -> tuple[Path, object, float]:
    """Run 1's E_hull store: CuAu relaxed (ok, EMT), a failed one, a pre-screen rejected one."""
    cand = _cu_au()
    e = _emt_energy(cand)
    rows = [
        {
            "id": "tpl-CuAu-001",
            "status": "ok",
            "energy_per_atom": e,
            "energy_scale": "emt",
            "e_above_hull": -0.02,
            "generator": "template",
        },
        {
            "id": "tpl-CuAu-002",
            "status": "failed",
            "energy_per_atom": np.nan,
            "energy_scale": "",
            "e_above_hull": np.nan,
            "generator": "template",
        },
        {
            "id": "gan-CuAu-001",
            "status": "prescreen_rejected",
            "energy_per_atom": np.nan,
            "energy_scale": "emt",
            "e_above_hull": np.nan,
            "generator": "wgan_gp",
        },
    ]
    path = _ehull_store(tmp_path / "run1_ehull.h5", rows, [cand, cand.copy(), cand.copy()])
    return path, cand, e


def test_run1_candidate_is_known_and_in_the_reference_hull_of_run2(tmp_path, store, run1):
    ehull1, cand, e = run1
    kb = KnowledgeBase(tmp_path / "kb")
    receipt = kb.append(ehull1, run_name="run1", config_hash="abc")
    # failed relaxations (and pre-screen rejects) are not added
    assert receipt["n_added"] == 1 and receipt["version"]["file"] == "v0001.jsonl"
    assert {s["candidate_id"] for s in receipt["skipped"]} == {"tpl-CuAu-002", "gan-CuAu-001"}
    rec = kb.read()
    assert list(rec.columns) == list(RECORD_FIELDS) and len(rec) == 1
    r = rec.iloc[0]
    assert (r["formula"], r["energy_scale"], r["run_name"], r["config_hash"]) == (
        "CuAu",
        "emt",
        "run1",
        "abc",
    )
    assert r["energy_per_atom"] == pytest.approx(e) and r["candidate_id"] == "tpl-CuAu-001"
    assert r["generator"] == "template" and r["date"] and r["version"] == 1
    # the version file is read-only; the index names it with its hash
    vfile = kb.path / "v0001.jsonl"
    assert not os.stat(vfile).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)

    # run 2 reads the versions of other runs (run 1 itself would read none of its own)
    assert workflow_view({"use": True, "path": str(kb.path)}, "run1")[0] == []
    inputs, entry = workflow_view({"use": True, "path": str(kb.path)}, "run2")
    assert inputs == [str(vfile)]
    known_cfg = {"labels": True, "loop": entry}

    # (a) known: the composition (source "loop") and the structure (known_structure_source)
    kc = KnownCompositions.from_config(store, known_cfg)
    assert kc.source_of("CuAu") == "loop" and kc.source_of("Cu3Au") == "store;labels"
    assert KnownCompositions.from_config(store, {"labels": True}).source_of("CuAu") == ""
    table = pd.DataFrame({"id": ["run2-cand"], "formula": ["CuAu"]})
    annotate_structures(table, [cand.copy()], store_path=store, known=kc)
    assert table["known_structure_source"].iloc[0] == "loop (run1)"
    assert table["known_structure_id"].iloc[0] == r["id"]
    assert not table["novel_structure"].iloc[0] and not table["novel_composition"].iloc[0]

    # (b) the reference hull of run 2 (EMT, same scale) holds the run-1 phase, marked as such
    ref = _emt_reference(store, tmp_path, "r", "p", known=known_cfg)
    row = ref[ref["id"] == r["id"]]
    assert len(row) == 1 and row["origin"].iloc[0] == "loop:run1/tpl-CuAu-001"
    assert row["energy_per_atom"].iloc[0] == pytest.approx(e) and row["steps"].iloc[0] == 0
    assert set(ref["energy_scale"]) == {"emt"}
    pdg = phase_diagram(ref)
    assert r["id"] in {en.name for en in pdg.all_entries}
    # relaxed L1_0 CuAu lies below the Cu3Au-Au tie line (EMT): a vertex of run 2's hull
    assert r["id"] in {en.name for en in pdg.stable_entries}
    assert row["e_above_hull_model"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    # its structure is in the reference records (compared with run 2's candidates)
    recs = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()[1:]]
    assert r["id"] in {x["id"] for x in recs}
    # without the loop the reference lacks it
    ref0 = _emt_reference(store, tmp_path, "r0", "p0", known={"labels": True})
    assert r["id"] not in set(ref0["id"]) and len(ref0) == len(ref) - 1

    # (c) classifier labels: AuCu (unlabelled by MP) gets the KB label, source marked
    labels = write_extra_labels(entry, store, tmp_path / "r.csv", tmp_path / "extra.csv")
    assert labels.to_dict("records") == [
        {"formula": "CuAu", "e_above_hull": -0.02, "label_source": "loop:run1 (emt)"}
    ]
    from matdisco.classifier.labels import read_extra_labels

    assert read_extra_labels(tmp_path / "extra.csv")["label_source"].tolist() == ["loop:run1 (emt)"]


def test_append_is_idempotent_by_content_and_by_structure(tmp_path, run1):
    ehull1, cand, e = run1
    kb = KnowledgeBase(tmp_path / "kb")
    assert kb.append(ehull1, run_name="run1", config_hash="a")["n_added"] == 1
    index_before = kb.index_path.read_text()
    again = kb.append(ehull1, run_name="run1", config_hash="a")
    assert again["n_added"] == 0 and again["version"] is None
    assert again["skipped_by_reason"]["already in the knowledge base"] == 1
    assert kb.index_path.read_text() == index_before and len(kb.versions()) == 1
    # the same structure, slightly moved (another run, another content hash): still skipped
    moved = cand.copy()
    moved.perturb(0.01)
    rows = [
        {"id": "x1", "status": "ok", "energy_per_atom": e + 0.001, "energy_scale": "emt"},
        # two candidates of one append relaxing to one structure: the lower energy stays
        {"id": "x2", "status": "ok", "energy_per_atom": e - 0.5, "energy_scale": "other"},
        {"id": "x3", "status": "ok", "energy_per_atom": e - 0.4, "energy_scale": "other"},
    ]
    for x in rows:
        x["e_above_hull"] = 0.0
    other = _ehull_store(tmp_path / "run3.h5", rows, [moved, cand.copy(), moved.copy()])
    r3 = kb.append(other, run_name="run3", config_hash="b")
    reasons = {s["candidate_id"]: s["reason"] for s in r3["skipped"]}
    assert reasons["x1"].startswith("same structure as kb-")
    assert "x2" not in reasons and "lower energy" in reasons["x3"]
    assert [a["candidate_id"] for a in r3["added"]] == ["x2"]  # another scale: a new record
    assert [v["version"] for v in kb.versions()] == [1, 2]


def test_dry_run_window_and_tampering(tmp_path, run1):
    ehull1, _, _ = run1
    kb = KnowledgeBase(tmp_path / "kb")
    dry = kb.append(ehull1, run_name="run1", config_hash="a", dry_run=True)
    assert dry["n_added"] == 1 and dry["would_be_version"] == 1 and dry["version"] is None
    assert not kb.path.exists()  # a dry run writes nothing
    out = kb.append(ehull1, run_name="run1", config_hash="a", max_e_above_hull=-0.05)
    assert out["n_added"] == 0 and out["skipped_by_reason"]["above loop.max_e_above_hull"] == 1
    assert kb.append(ehull1, run_name="run1", config_hash="a")["n_added"] == 1
    # a version file edited after the fact is refused on read
    f = kb.path / "v0001.jsonl"
    f.chmod(0o644)
    f.write_text(f.read_text().replace('"run1"', '"runX"'))
    with pytest.raises(KnowledgeBaseError, match="immutable"):
        kb.read()
    (kb.path / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(KnowledgeBaseError, match="not a matdisco knowledge base"):
        kb.read()


def test_energy_scale_mismatch_is_skipped_and_counted(tmp_path, store, run1, caplog):
    """Records of another scale never join the hull or the labels; they still count as known."""
    _, cand, e = run1
    rows = [{"id": "c", "status": "ok", "energy_per_atom": -9.0, "energy_scale": "chgnet-x"}]
    rows[0]["e_above_hull"] = 0.0
    other = _ehull_store(tmp_path / "chg.h5", rows, [cand])
    kb = KnowledgeBase(tmp_path / "kb")
    kb.append(other, run_name="chgnet-run", config_hash="c")
    _, entry = workflow_view({"use": True, "path": str(kb.path)}, "run2")
    with caplog.at_level(logging.WARNING, logger="matdisco.loop"):
        ref = _emt_reference(store, tmp_path, "r", "p", known={"loop": entry})
    assert not ref["origin"].astype(str).str.startswith("loop").any()
    assert set(ref["energy_scale"]) == {"emt"}
    assert "1 of 1 records skipped" in caplog.text and "chgnet-x" in caplog.text
    labels = write_extra_labels(entry, store, tmp_path / "r.csv", tmp_path / "x.csv")
    assert len(labels) == 0
    # known-ness uses no energies: the composition is known from the loop whatever its scale
    assert KnownCompositions.from_config(store, {"loop": entry}).source_of("CuAu") == "loop"


def test_labels_never_replace_an_mp_or_extra_label(tmp_path, store, run1):
    _, cand, _ = run1
    from pymatgen.core import Lattice, Structure

    cu3au = Structure(
        Lattice.cubic(3.75),
        ["Au", "Cu", "Cu", "Cu"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    rows = [
        {"id": "a", "status": "ok", "energy_per_atom": -3.0, "energy_scale": "emt"},
        {"id": "b", "status": "ok", "energy_per_atom": -3.0, "energy_scale": "emt"},
    ]
    rows[0]["e_above_hull"], rows[1]["e_above_hull"] = 0.3, 0.1
    kb = KnowledgeBase(tmp_path / "kb")
    kb.append(_ehull_store(tmp_path / "e.h5", rows, [cand, cu3au]), run_name="r1", config_hash="")
    _, entry = workflow_view({"use": True, "path": str(kb.path)}, "r2")
    ref = pd.DataFrame(
        {"id": ["x"], "composition": ["Cu1"], "energy_per_atom": [-1.0], "energy_scale": ["emt"]}
    ).assign(status="ok")
    ref.to_csv(tmp_path / "ref.csv", index=False)
    extra = tmp_path / "bartel.csv"
    pd.DataFrame({"formula": ["CuAu"], "decomposition_enthalpy": [0.05]}).to_csv(extra, index=False)
    out = write_extra_labels(
        entry, store, tmp_path / "ref.csv", tmp_path / "o.csv", extra_labels=extra
    )
    # Cu3Au: MP label kept (no KB row); AuCu: the configured extra label kept
    assert out.to_dict("records") == [
        {
            "formula": "CuAu",
            "e_above_hull": 0.05,
            "label_source": "bartel2020_decomposition_enthalpy",
        }
    ]


# -- Snakemake level ------------------------------------------------------------------------


def _copy_workflow(dst: Path) -> Path:
    dst.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("Snakefile", "workflow", "config", "profiles", "envs", "src"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=skip)
        else:
            shutil.copy(src, dst / name)
    (dst / "resources").symlink_to(ROOT / "resources")
    return dst


def _snakemake(wf: Path, snakemake_bin: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(wf / "src")}
    env.pop("SNAKEMAKE_PROFILE", None)
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[v] = "1"
    return subprocess.run(
        [snakemake_bin, "--cores", "1", "--configfile", "config/test.yaml", *args],
        cwd=wf,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.slow
def test_workflow_reads_the_knowledge_base_of_another_run(tmp_path, snakemake_bin):
    """Tiny config: a KB record of run 'run1' (Mg-Mn-O, CHGNet scale) is in run 2's reference
    (relax_reference) and labels (loop_labels); a new version of another run reruns the
    readers, one of the run's own does not; loop disabled = the default DAG."""
    wf = _copy_workflow(tmp_path / "wf")
    kb = tmp_path / "kb"
    # one Mg-Mn-O structure of the bundled data as run 1's "relaxed candidate", energy set low
    # enough to be a hull vertex (a plumbing check: the energy is not a CHGNet result)
    from pymatgen.core import Lattice, Structure

    s = Structure(
        Lattice.cubic(8.2),
        ["Mg"] * 2 + ["Mn"] * 4 + ["O"] * 8,
        np.random.default_rng(0).random((14, 3)),
    )
    row = {"id": "tpl-MgMn2O4-001", "status": "ok", "energy_per_atom": -9.5}
    row |= {"energy_scale": "chgnet-0.3.0/mp2020", "e_above_hull": 0.0, "generator": "template"}
    KnowledgeBase(kb).append(
        _ehull_store(tmp_path / "e.h5", [row], [s]), run_name="run1", config_hash="x"
    )
    loop = f"loop={{use: true, enabled: true, path: {kb}}}"
    run = "run_name=run2"
    targets = ["results/run2/relax/reference.csv", "results/run2/loop/extra_labels.csv"]
    proc = _snakemake(wf, snakemake_bin, "--config", run, loop, "--", *targets)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ref = pd.read_csv(wf / "results/run2/relax/reference.csv")
    kbrow = ref[ref["origin"].astype(str).str.startswith("loop:")]
    assert kbrow["origin"].tolist() == ["loop:run1/tpl-MgMn2O4-001"]
    assert kbrow["e_above_hull_model"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert set(ref["energy_scale"]) == {"chgnet-0.3.0/mp2020"}
    labels = pd.read_csv(wf / "results/run2/loop/extra_labels.csv")
    assert "MgMn2O4" not in set(labels["formula"])  # MP labels know MgMn2O4: its label stays
    # the whole DAG (no cycle): loop_append scheduled, the classifier reads the KB labels
    dry = _snakemake(wf, snakemake_bin, "-n", "--config", run, loop)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out[-3000:]
    assert "rule loop_append:" in out, out[-3000:]
    feat = out[out.index("rule featurize:") :].split("\n\n")[0]
    assert "results/run2/loop/extra_labels.csv" in feat, feat
    # nothing to do for the readers now; a version of the run itself changes nothing ...
    up = _snakemake(wf, snakemake_bin, "-n", "--config", run, loop, "--", *targets)
    assert "Nothing to be done" in up.stdout + up.stderr, up.stdout[-3000:]

    def _version(formula_species, run_name):
        st = Structure(
            Lattice.cubic(7.0),
            formula_species,
            np.random.default_rng(len(run_name)).random((len(formula_species), 3)),
        )
        receipt = KnowledgeBase(kb).append(
            _ehull_store(tmp_path / f"{run_name}.h5", [{**row, "id": run_name}], [st]),
            run_name=run_name,
            config_hash="y",
        )
        assert receipt["version"] is not None  # a new version file was written

    _version(["Mg"] + ["Mn"] + ["O"] * 3, "run2")  # MgMnO3, appended by run 2 itself
    up = _snakemake(wf, snakemake_bin, "-n", "--config", run, loop, "--", *targets)
    assert "Nothing to be done" in up.stdout + up.stderr, up.stdout[-3000:]
    # ... a version of another run reruns the reference and the labels
    _version(["Mg"] * 2 + ["Mn"] * 3 + ["O"] * 8, "run3")  # Mg2Mn3O8
    up = _snakemake(wf, snakemake_bin, "-n", "--config", run, loop, "--", *targets)
    assert "relax_reference" in up.stdout and "loop_labels" in up.stdout, up.stdout[-3000:]
    # loop disabled (the default): no loop rule in the DAG
    dflt = _snakemake(wf, snakemake_bin, "-n", "--config", "run_name=run4")
    assert dflt.returncode == 0 and "loop_" not in dflt.stdout
