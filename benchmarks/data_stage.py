#!/usr/bin/env python
"""Benchmark: build the entry store from the bundled set (the default data stage).

Writes benchmarks/results/data_stage.json with wall time (load, dedupe, write) and peak memory.
Usage: python benchmarks/data_stage.py [--workers 2] [--no-dedupe]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, write  # noqa: E402

from matdisco.data.build import build_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-dedupe", action="store_true")
    ap.add_argument(
        "--full-dedupe",
        action="store_true",
        help="also time the uncached duplicate search over all 36.7k structures (minutes)",
    )
    args = ap.parse_args()
    settings = {
        "structures": str(ROOT / "resources/bundled/mp2018_structures.h5"),
        "labels": str(ROOT / "resources/bundled/formula_ehull_labels.csv.gz"),
        "chemsys_filter": None,
    }
    dedupe = {"enabled": not args.no_dedupe, "ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = build_store(
            source="bundled",
            settings=settings,
            dedupe=dedupe,
            labels_path=settings["labels"],
            out_store=Path(tmp) / "entries.h5",
            out_rejected=Path(tmp) / "rejected.csv",
            out_summary=Path(tmp) / "summary.json",
            workers=args.workers,
        )
        wall = time.perf_counter() - t0
        size = (Path(tmp) / "entries.h5").stat().st_size
    full = {}
    if args.full_dedupe:
        from matdisco.data.bundled import load_bundled
        from matdisco.data.dedupe import find_duplicate_groups

        res = load_bundled(settings["structures"], settings["labels"])
        t1 = time.perf_counter()
        groups = find_duplicate_groups(res.entries, res.structures, workers=args.workers)
        full = {
            "full_dedupe_s": round(time.perf_counter() - t1, 2),
            "full_dedupe_duplicates": int(len(groups) - len(set(groups))),
        }
    write(
        "data_stage",
        {
            "wall_s": round(wall, 2),
            "goal_s": 90,
            "workers": args.workers,
            "peak_rss_mb": peak_rss_mb(),
            "store_bytes": size,
            "entries": summary["entries"],
            "dedupe": summary["dedupe"],
            **full,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
