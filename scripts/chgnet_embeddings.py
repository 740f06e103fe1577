#!/usr/bin/env python
"""Build the CHGNet structure-embedding file of an entry store (default: the bundled MP set).

Usage::

    python scripts/chgnet_embeddings.py [--store resources/bundled/mp2018_structures.h5]
        [--out resources/bundled/chgnet_embeddings_mp2018.h5] [--reuse FILE] [--threads 2]

Every structure of ``--store`` (any file in the entry-store format: the bundled structures,
or a run's ``data/entries.h5``) gets the mean and maximum of CHGNet 0.3.0's atom features
(:mod:`matdisco.screen.gap_embedding`); rows of ``--reuse`` with the same id and structure
hash are copied instead of recomputed. The bundled file took ~29 min on 2 CPU cores. When
``--out`` is in ``resources/bundled/``, its record (rows, SHA-256, bytes) is written into
``MANIFEST.json`` there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Compute the embeddings and write the file (and the manifest record)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=ROOT / "resources/bundled/mp2018_structures.h5")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "resources/bundled/chgnet_embeddings_mp2018.h5"
    )
    ap.add_argument("--reuse", type=Path, default=None, help="embedding file to copy rows from")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from matdisco.screen.gap_embedding import embed_store

    summary = embed_store(args.store, args.out, reuse=args.reuse, threads=args.threads)
    print(json.dumps(summary, indent=2))
    manifest = args.out.resolve().parent / "MANIFEST.json"
    if manifest.is_file() and args.out.resolve().parent == (ROOT / "resources/bundled").resolve():
        report = json.loads(manifest.read_text(encoding="utf-8"))
        files = [f for f in report["files"] if f["file"] != args.out.name]
        files.append(
            {
                "file": args.out.name,
                "rows": summary["n"],
                "failed": summary["n_failed"],
                "made_by": "scripts/chgnet_embeddings.py (CHGNet 0.3.0, weights of the wheel)",
                "from": str(args.store.resolve().relative_to(ROOT))
                if args.store.resolve().is_relative_to(ROOT)
                else str(args.store),
                "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
                "bytes": args.out.stat().st_size,
            }
        )
        report["files"] = files
        manifest.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
