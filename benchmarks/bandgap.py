#!/usr/bin/env python
"""Benchmark the band-gap surrogate: held-out MAE (formula-grouped and random-row splits, same
ensemble), the non-metal MAE in the screening window, baselines, intervals, spread coverage.

Usage::

    python benchmarks/bandgap.py [--store results/default/data/entries.h5]
        [--config config/config.yaml] [--threads 2] [--max-train N] [--seeds 0]
        [--models structure composition]

Trains :func:`matdisco.screen.bandgap.train_gap_surrogate` on the store's MP PBE gaps with the
configured ``screen.bandgap`` settings (the bandgap rule does the same before it predicts the
candidates, so the rule's ``screen/bandgap_metrics.json`` holds the same numbers for the same
seed) and writes ``benchmarks/results/bandgap.json``: per seed the metrics (MAE overall, true
non-metals, window; composition-prior and training-median baselines; 95% row-bootstrap
intervals; ±1σ coverage of the raw and the rescaled spread), the wall and CPU time. With
several ``--models`` (``screen.bandgap.model`` values) each is trained and scored on the same
split (same seed): the before/after comparison of the structure-aware model.
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
    args = ap.parse_args(argv)

    from _common import write

    from matdisco.config import load_config
    from matdisco.features import ElementTable
    from matdisco.screen.bandgap import train_gap_surrogate
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
    train = read_entries(args.store, ["formula", "band_gap"])
    settings0 = ScreenBandgapSettings.from_config(raw)
    arrays = read_structure_arrays(args.store)
    runs = []
    models = args.models or [settings0.model]
    for seed, kind in ((sd, k) for sd in args.seeds for k in models):
        s = ScreenBandgapSettings.from_config({**raw, "seed": seed, "model": kind})
        t0, c0 = time.perf_counter(), time.process_time()
        _, metrics, _ = train_gap_surrogate(
            train["formula"].astype(str).tolist(),
            train["band_gap"].to_numpy(dtype=float),
            arrays,
            table,
            settings=s,
            feature_settings=fset,
            threads=args.threads,
        )
        runs.append(
            {
                "seed": seed,
                "model": kind,
                "wall_s": round(time.perf_counter() - t0, 2),
                "cpu_s": round(time.process_time() - c0, 2),
                "metrics": metrics,
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
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
