#!/usr/bin/env python
"""Rebuild ``resources/bundled/`` from the raw public data files.

Usage::

    python scripts/build_resources.py [--raw ../shared/data] [--out resources/bundled]

Inputs (see ../shared/data/raw/SOURCES.md for origins and licences):

* ``derived/mp_cgcnn_2018_structures_props.csv.gz``: 36,737 Materials Project structures (CIF)
  with formation energies, band gaps and ICSD flags;
* ``raw/crabnet/mp_e_hull/*.csv.gz``: formula-level MP energy above hull;
* ``raw/crabnet/CritExam__Ed/*.csv.gz``: Bartel et al. decomposition enthalpies;
* ``raw/crabnet/element_properties/{magpie.csv, ElMD_ElementDict_elem_prop.json.gz}``;
* ``raw/matbench_discovery/2023-02-07-mp-elemental-reference-entries.json.gz``;
* ``raw/pyeql_pourbaix/mpr_reference_ion_database.json.gz``.

The structures are parsed once here and stored as compact arrays in the entry-store format
(:mod:`matdisco.store`), so the pipeline's data stage never parses CIF text. A summary with
row counts and SHA-256 of every output is written to ``resources/bundled/MANIFEST.json``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from matdisco.store import StructureArrays, write_store


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_structures(raw: Path, out: Path) -> dict:
    from pymatgen.core import Structure

    src = raw / "derived" / "mp_cgcnn_2018_structures_props.csv.gz"
    csv.field_size_limit(10**9)
    rows, structures, failed = [], [], []
    with gzip.open(src, "rt", newline="") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in csv.DictReader(fh):
            try:
                s = Structure.from_str(row["cif"], fmt="cif")
            except Exception as exc:  # noqa: BLE001 - record and go on
                failed.append((row["material_id"], repr(exc)))
                continue
            if not s.is_ordered:
                failed.append((row["material_id"], "disordered"))
                continue
            structures.append(s)
            rows.append(row)

    def num(v: str) -> float:
        try:
            return float(v)
        except ValueError:
            return np.nan

    icsd = {"True": 1, "False": 0}
    entries = pd.DataFrame(
        {
            "id": [r["material_id"] for r in rows],
            "source": "bundled",
            "formula": [s.composition.reduced_formula for s in structures],
            "composition": [s.composition.formula for s in structures],
            "chemsys": [s.composition.chemical_system for s in structures],
            "nelements": [len(s.composition.elements) for s in structures],
            "nsites": [len(s) for s in structures],
            # mt-cgcnn columns (checked against its own CIFs); see SOURCES.md
            "formation_energy_per_atom": [num(r["formation_energy_per_atom"]) for r in rows],
            "band_gap": [num(r["band_gap"]) for r in rows],
            "is_experimental": [icsd.get(r["icsd_linked_per_kaist_pu"], -1) for r in rows],
            "has_partial_occupancy": False,
            "source_file": src.name,
        }
    )
    # rows whose two upstream formation energies disagree: keep the mt-cgcnn value but flag it
    disagree = [r["ef_sources_agree"] == "False" for r in rows]
    entries["e_above_hull_method"] = ""
    prov = {
        "origin": (
            "Materials Project (legacy database, ~2018) via the CGCNN data set; "
            "crysxpp + mt-cgcnn join"
        ),
        "licence": "MP data CC BY 4.0; repositories MIT",
        "source_file": str(src.name),
        "source_sha256": sha256(src),
        "rows": len(entries),
        "parse_failures": len(failed),
        "formation_energy_sources_disagree": int(sum(disagree)),
        "formation_energy_disagree_ids": [
            r["material_id"] for r, d in zip(rows, disagree, strict=True) if d
        ],
    }
    entries["source_hash"] = prov["source_sha256"]
    target = out / "mp2018_structures.h5"
    write_store(
        target,
        entries,
        StructureArrays.from_structures(structures),
        data_source="bundled",
        provenance=prov,
    )
    return {"file": target.name, "rows": len(entries), "parse_failures": len(failed)}


def add_dedupe_groups(
    path: Path, workers: int = 2, group_ids: dict[str, str] | None = None
) -> dict:
    """Precompute the data stage's duplicate groups for the default dedupe tolerances.

    Comparing every polymorph pair of the 36.7k structures takes minutes, so the resource
    ships the result as the extra column ``dedupe_group`` (id of the group's preferred
    entry) and the tolerances in its provenance; the data stage reuses it when the configured
    tolerances are the same and recomputes otherwise.
    """
    import yaml

    from matdisco.data.dedupe import find_duplicate_groups
    from matdisco.store import read_attrs, read_entries, read_structure_arrays

    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text()
    )
    props = schema["properties"]["data"]["properties"]["dedupe"]["properties"]
    tol = {k: props[k]["default"] for k in ("ltol", "stol", "angle_tol", "symprec")}
    entries = read_entries(path)
    arrays = read_structure_arrays(path)
    attrs = read_attrs(path)
    if group_ids is None:
        group_of = find_duplicate_groups(entries, arrays, workers=workers, **tol)
        ids = entries["id"].to_numpy()
        entries["dedupe_group"] = ids[group_of]
    else:
        entries["dedupe_group"] = entries["id"].map(lambda i: group_ids.get(i, i))
    prov = attrs["provenance"]
    prov["dedupe_precomputed"] = tol
    write_store(path, entries, arrays, data_source="bundled", provenance=prov)
    merged = int((entries["dedupe_group"] != entries["id"]).sum())
    return {"dedupe_precomputed": tol, "duplicates": merged}


def build_labels(raw: Path, out: Path) -> list[dict]:
    info = []
    frames = []
    for split in ("train", "val", "test"):
        # keep_default_na=False: sodium nitride's formula "NaN" is a formula, not a missing value
        df = pd.read_csv(
            raw / "raw" / "crabnet" / "mp_e_hull" / f"{split}.csv.gz", keep_default_na=False
        )
        df["crabnet_split"] = split
        frames.append(df)
    lab = pd.concat(frames, ignore_index=True).rename(columns={"target": "e_above_hull"})
    target = out / "formula_ehull_labels.csv.gz"
    lab.to_csv(target, index=False, compression={"method": "gzip", "mtime": 0})
    info.append({"file": target.name, "rows": len(lab), "columns": list(lab.columns)})

    frames = []
    for split in ("train", "val", "test"):
        df = pd.read_csv(
            raw / "raw" / "crabnet" / "CritExam__Ed" / f"{split}.csv.gz", keep_default_na=False
        )
        df["crabnet_split"] = split
        frames.append(df)
    ed = pd.concat(frames, ignore_index=True).rename(columns={"target": "decomposition_enthalpy"})
    target = out / "bartel2020_decomposition_enthalpy.csv.gz"
    ed.to_csv(target, index=False, compression={"method": "gzip", "mtime": 0})
    info.append({"file": target.name, "rows": len(ed), "columns": list(ed.columns)})
    return info


COPIES = {
    "raw/crabnet/element_properties/magpie.csv": "magpie_elements.csv",
    "raw/crabnet/element_properties/ElMD_ElementDict_elem_prop.json.gz": (
        "elmd_element_properties.json.gz"
    ),
    "raw/matbench_discovery/2023-02-07-mp-elemental-reference-entries.json.gz": (
        "mp_elemental_reference_entries_2023-02-07.json.gz"
    ),
    "raw/pyeql_pourbaix/mpr_reference_ion_database.json.gz": "mp_aqueous_ion_references.json.gz",
}


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=here / "resources" / "bundled")
    ap.add_argument(
        "--skip-structures", action="store_true", help="do not rebuild the structure HDF5"
    )
    ap.add_argument("--workers", type=int, default=2, help="processes for the duplicate search")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"built_from": os.path.relpath(args.raw, here), "files": []}
    if not args.skip_structures:
        info = build_structures(args.raw, args.out)
        info.update(add_dedupe_groups(args.out / info["file"], workers=args.workers))
        report["files"].append(info)
    elif (args.out / "MANIFEST.json").is_file():  # keep the existing structure file's record
        old = json.loads((args.out / "MANIFEST.json").read_text())["files"]
        report["files"].extend(f for f in old if f["file"] == "mp2018_structures.h5")
    report["files"].extend(build_labels(args.raw, args.out))
    for src, dst in COPIES.items():
        shutil.copyfile(args.raw / src, args.out / dst)
        report["files"].append({"file": dst, "copied_from": src})
    for f in report["files"]:
        f["sha256"] = sha256(args.out / f["file"])
        f["bytes"] = (args.out / f["file"]).stat().st_size
    (args.out / "MANIFEST.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
