#!/usr/bin/env python
"""Benchmark the band-gap surrogate: held-out MAE (formula-grouped and random-row splits, same
ensemble), the non-metal MAE in the screening window, baselines, intervals, spread coverage.

Usage::

    python benchmarks/bandgap.py [--store results/default/data/entries.h5]
        [--config config/config.yaml] [--threads 2] [--max-train N] [--seeds 0]
        [--models structure composition]
        [--variants benchmarks/bandgap_variants/first_round.yaml configured]
        [--embeddings results/default/screen/store_embeddings.h5]

Trains :func:`matdisco.screen.bandgap.train_gap_surrogate` on the store's MP PBE gaps with the
configured ``screen.bandgap`` settings (the bandgap rule does the same before it predicts the
candidates, so the rule's ``screen/bandgap_metrics.json`` holds the same numbers for the same
seed) and writes ``benchmarks/results/bandgap.json``: per seed the metrics (MAE overall, true
non-metals, window; composition-prior and training-median baselines; 95% row-bootstrap
intervals; ±1σ coverage of the raw and the rescaled spread), the wall and CPU time. With
several ``--models`` (``screen.bandgap.model`` values) each is trained and scored on the same
split (same seed): the before/after comparison of the structure-aware model. ``--variants``
does the same for other settings: each variant is ``configured`` (``screen.bandgap`` as in
the config) or a YAML file whose keys override it
(``benchmarks/bandgap_variants/first_round.yaml`` = the settings before the element
embeddings and the larger ensemble). With several variants per seed, ``paired_differences``
gives each later variant's grouped MAE minus the first one's on the same rows, with a 95%
row-bootstrap interval. Variants with ``structure_embedding: chgnet`` read the store's CHGNet
embedding from ``--embeddings`` (the ``gap_embeddings`` rule's file) when it exists, else build
it next to the benchmark output from the configured ``structure_embedding_file`` (rows of other
structures are computed: slow for a store that is not the bundled one).
(``benchmarks/bandgap_variants/second_round.yaml`` = the settings before the CHGNet embedding.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=ROOT / "results/default/data/entries.h5")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=None, help="random subset of entries")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="split/LightGBM seeds")
    ap.add_argument(
        "--models",
        nargs="+",
        default=None,
        choices=["structure", "composition"],
        help="screen.bandgap.model values to compare (default: the configured one)",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["configured"],
        help="'configured' and/or YAML files of screen.bandgap overrides",
    )
    ap.add_argument(
        "--embeddings",
        type=Path,
        default=ROOT / "results/default/screen/store_embeddings.h5",
        help="the store's CHGNet embedding file (built when missing)",
    )
    args = ap.parse_args(argv)
    import yaml

    variants: list[tuple[str, dict]] = []
    for v in args.variants:
        if v == "configured":
            variants.append((v, {}))
            continue
        path = Path(v)
        over = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        if not isinstance(over, dict):
            ap.error(f"--variants: {v!r} is neither 'configured' nor a YAML mapping file")
        variants.append((path.stem, over))

    import numpy as np
    from _common import write

    from matdisco.config import load_config
    from matdisco.features import ElementTable, load_embeddings
    from matdisco.screen.bandgap import train_gap_surrogate
    from matdisco.screen.gap_embedding import embed_store, read_store_embedding
    from matdisco.settings import FeaturesSettings, ScreenBandgapSettings
    from matdisco.store import read_entries, read_structure_arrays

    if not args.store.exists():
        raise SystemExit(
            f"store {args.store} not found: build it (build_store rule) or pass --store"
        )
    config = load_config(args.config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    fset = FeaturesSettings.from_config(config["features"])
    raw = dict(config["screen"]["bandgap"])
    if args.max_train is not None:
        raw["max_train"] = args.max_train
    elmd = ROOT / fset.elmd_table if fset.elmd_table else None
    table = ElementTable.from_files(ROOT / fset.magpie_table, elmd, fset.elmd_scale)
    train = read_entries(args.store, ["id", "formula", "band_gap"])
    store_emb = None

    def structure_embedding(s: ScreenBandgapSettings):
        nonlocal store_emb
        if not s.structure_embedding:
            return None
        if store_emb is None:
            path = args.embeddings
            if not path.exists():
                path = ROOT / "benchmarks/results/bandgap_store_embeddings.h5"
                reuse = ROOT / s.structure_embedding_file if s.structure_embedding_file else None
                embed_store(args.store, path, reuse=reuse, threads=args.threads)
            store_emb = read_store_embedding(path, train["id"].astype(str).tolist())
        return store_emb

    settings0 = ScreenBandgapSettings.from_config(raw)
    arrays = read_structure_arrays(args.store)
    runs = []
    errors: dict[int, list] = {}
    models = args.models or [settings0.model]
    combos = [(sd, k, name, ov) for sd in args.seeds for k in models for name, ov in variants]
    for seed, kind, variant, over in combos:
        merged = {**raw, **over, "seed": seed, "model": kind}
        merged["lightgbm"] = {**raw.get("lightgbm", {}), **over.get("lightgbm", {})}
        s = ScreenBandgapSettings.from_config(merged)
        names = list(s.embeddings)
        tables = load_embeddings(elmd, names=names, key="screen.bandgap.embeddings")
        t0, c0 = time.perf_counter(), time.process_time()
        _, metrics, held = train_gap_surrogate(
            train["formula"].astype(str).tolist(),
            train["band_gap"].to_numpy(dtype=float),
            arrays,
            table,
            settings=s,
            feature_settings=fset,
            embeddings=tables,
            structure_embedding=structure_embedding(s),
            threads=args.threads,
        )
        runs.append(
            {
                "seed": seed,
                "model": kind,
                "variant": variant,
                "settings": s.to_dict(),
                "wall_s": round(time.perf_counter() - t0, 2),
                "cpu_s": round(time.process_time() - c0, 2),
                "metrics": metrics,
            }
        )
        err = np.abs(held["gap_pbe_ml"].to_numpy() - held["gap_pbe"].to_numpy())
        label = f"{kind}|{variant}"
        errors.setdefault(seed, []).append((label, held, err))
    paired = []
    for seed, variants in errors.items():
        ref_name, ref_held, ref_err = variants[0]
        for name, held, err in variants[1:]:
            if not np.array_equal(held["formula"].to_numpy(), ref_held["formula"].to_numpy()):
                raise RuntimeError("variants were scored on different rows")
            d = err - ref_err
            rng = np.random.default_rng(seed)
            reps = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(1000)])
            paired.append(
                {
                    "seed": seed,
                    "what": f"grouped MAE of {name} minus {ref_name}, same rows",
                    "value": round(float(d.mean()), 4),
                    "lo": round(float(np.percentile(reps, 2.5)), 4),
                    "hi": round(float(np.percentile(reps, 97.5)), 4),
                    "n": len(d),
                }
            )
    write(
        "bandgap",
        {
            "store": str(args.store),
            "n_entries": len(train),
            "settings": settings0.to_dict(),
            "threads": args.threads,
            "machine_note": "wall times depend on the load of the machine; cpu_s is the "
            "process CPU time (all threads)",
            "runs": runs,
            "paired_differences": paired,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
