"""The ``matdisco`` command line: small user utilities around the workflow.

matdisco check-config [CONFIG ...]   validate config files (layered in order)
matdisco store-info STORE            summary of an entry store
matdisco archive results/RUN         pack a run + MANIFEST.json into results/RUN.tar.gz
matdisco verify results/RUN.tar.gz   check an archive against its manifest (exit 1 on mismatch)
matdisco templates FORMULA           rank template structures for one composition
matdisco ehull ENTRIES --reference REF [-o out.csv]   E_hull of entries against a reference
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parents[2]


def _check_config(args: argparse.Namespace) -> int:
    import yaml

    from matdisco.config import ConfigError, deep_update, validate_config

    config: dict = {}
    for path in args.configs:
        with open(path, encoding="utf-8") as fh:
            deep_update(config, yaml.safe_load(fh) or {})
    try:
        validate_config(config, args.schema)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"ok: {' + '.join(args.configs)} is valid")
    return 0


def _store_info(args: argparse.Namespace) -> int:
    from matdisco.store import read_attrs, read_entries, read_labels

    entries = read_entries(args.store)
    attrs = read_attrs(args.store)
    info = {
        "entries": len(entries),
        "sources": entries["source"].value_counts().to_dict(),
        "experimental": int((entries["is_experimental"] == 1).sum()),
        "with_e_above_hull": int(entries["e_above_hull"].notna().sum()),
        "labels": len(read_labels(args.store)),
        "schema_version": attrs.get("schema_version"),
        "matdisco_version": attrs.get("matdisco_version"),
        "created_utc": attrs.get("created_utc"),
    }
    print(json.dumps(info, indent=2))
    return 0


def _archive(args: argparse.Namespace) -> int:
    from matdisco.archive import ArchiveError, create_archive

    try:
        dest, manifest = create_archive(
            args.run_dir, args.out, commands=args.command, root=args.root
        )
    except ArchiveError as err:
        print(f"archive refused: {err}", file=sys.stderr)
        return 2
    print(
        f"{dest}: {manifest['n_files']} files, {manifest['total_bytes']} bytes; "
        "manifest copy next to it"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from matdisco.archive import verify_archive

    problems = verify_archive(args.archive, args.manifest)
    if problems:
        print(f"{args.archive}: {len(problems)} mismatches", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"ok: {args.archive} matches its manifest")
    return 0


_DEFAULT_STORE = Path("results") / "default" / "data" / "entries.h5"


def _templates(args: argparse.Namespace) -> int:
    """Rank template structures for one composition (the template stage for a single target)."""
    import logging

    from matdisco.core.composition import FormulaError, normalize_formula
    from matdisco.generate.templates import TemplateLibrary, TemplateSettings

    try:
        target = normalize_formula(args.formula)
        excluded = [normalize_formula(f) for f in args.exclude]
    except FormulaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    store = Path(args.store) if args.store else _DEFAULT_STORE
    if not store.is_file():
        hint = (
            "pass --store PATH"
            if args.store
            else f"build it with `snakemake --cores 2 {_DEFAULT_STORE}` or pass --store PATH"
        )
        print(f"error: entry store {store} not found; {hint}", file=sys.stderr)
        return 2
    if args.exclude_self:
        excluded.append(target)
    overrides = {"top_k": args.top}
    if args.max_sites is not None:
        overrides["max_sites"] = args.max_sites
    try:
        settings = TemplateSettings.from_config(overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.getLogger("matdisco.generate.templates").setLevel(logging.ERROR)
    lib = TemplateLibrary.from_store(store, settings)
    cands, summary = lib.predict(target, exclude_formulas=excluded)
    print(f"{target}: {len(cands)} template candidates from {store} ({len(lib.entries)} entries)")
    if excluded:
        print(f"excluded compositions: {', '.join(dict.fromkeys(excluded))}")
    for msg in summary.get("skipped", []):
        print(f"note: {msg}")
    if not cands:
        print(f"error: {summary.get('reason', 'no template found')}", file=sys.stderr)
        return 1
    header = (
        f"{'rank':>4}  {'template':<14} {'formula':<18} {'distance':>8} {'elmd':>7}  "
        f"{'method':<12} mapping"
    )
    print(header)
    for i, c in enumerate(cands, start=1):
        print(
            f"{i:>4}  {c.parent:<14} {c.template_formula:<18} {c.template_distance:>8.3f} "
            f"{c.elmd:>7.3f}  {c.method:<12} {c.mapping}"
        )
    return 0


_EHULL_HELP = """E_hull, formation energy and decomposition of entries against a reference hull.

ENTRIES: .json / .json.gz (a list of pymatgen entry dicts, e.g. ComputedStructureEntry.as_dict();
energy includes corrections), .h5 (an entry store with id, composition, energy_per_atom, e.g.
results/<run>/relax/relaxed.h5; rows with status != ok are skipped) or .csv (same columns).
REF: a reference table .csv (docs/interfaces.md, "Reference table"; e.g.
results/<run>/relax/reference.csv) or a .json list of pymatgen entries.
Output: CSV with id, formula, composition, energy_per_atom, formation_energy_per_atom,
e_above_hull, decomposition, energy_scale, reference, reason (eV/atom); stdout without -o.
Inputs are checked before anything is written."""


def _ehull(args: argparse.Namespace) -> int:
    from matdisco.ehull import from_entries, load_entries

    try:
        entries = load_entries(args.entries)
        ref_name = args.reference.lower()
        reference = (
            load_entries(args.reference)
            if ref_name.endswith((".json", ".json.gz"))
            else args.reference
        )
        if not isinstance(reference, list) and not Path(args.reference).is_file():
            raise FileNotFoundError(f"reference {args.reference} not found")
        table = from_entries(entries, reference, energy_scale=args.energy_scale)
    except (OSError, ValueError, KeyError) as err:
        print(f"ehull: {err}", file=sys.stderr)
        return 2
    if args.out:
        from matdisco.store import atomic_write

        with atomic_write(args.out) as tmp:
            table.to_csv(tmp, index=False)
        n_ok = int(table["e_above_hull"].notna().sum())
        print(f"{args.out}: {len(table)} entries, {n_ok} with E_hull")
    else:
        table.to_csv(sys.stdout, index=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``matdisco`` command."""
    ap = argparse.ArgumentParser(prog="matdisco", description="matdisco utilities")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check-config", help="validate configuration files against the schema")
    p.add_argument("configs", nargs="*", default=[str(_ROOT / "config" / "config.yaml")])
    p.add_argument("--schema", default=str(_ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    p.set_defaults(func=_check_config)
    p = sub.add_parser("store-info", help="summarise an entry store")
    p.add_argument("store")
    p.set_defaults(func=_store_info)
    p = sub.add_parser(
        "archive", help="pack results/<run> with a MANIFEST.json into results/<run>.tar.gz"
    )
    p.add_argument("run_dir", help="the run folder, e.g. results/default")
    p.add_argument("--out", default=None, help="archive path (default: <run_dir>.tar.gz)")
    p.add_argument(
        "--command",
        action="append",
        default=[],
        help="a command line to record (repeatable; redacted)",
    )
    p.add_argument("--root", default=".", help="the checkout (git state, .snakemake metadata)")
    p.set_defaults(func=_archive)
    p = sub.add_parser(
        "verify", help="check an archive against its manifest (exit 1 with the mismatches)"
    )
    p.add_argument("archive")
    p.add_argument(
        "--manifest", default=None, help="an external copy of the manifest to check against"
    )
    p.set_defaults(func=_verify)
    p = sub.add_parser(
        "templates",
        help="rank template structures (known structures with substituted elements) "
        "for one composition",
    )
    p.add_argument("formula", help="target composition, e.g. MgMn2O4")
    p.add_argument("--top", type=int, default=5, help="number of distinct candidates (default 5)")
    p.add_argument(
        "--exclude-self",
        action="store_true",
        help="do not use entries of the target's own composition as templates",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="FORMULA",
        help="a composition whose entries may not serve as templates (repeatable)",
    )
    p.add_argument("--store", default=None, help=f"entry store (default: {_DEFAULT_STORE})")
    p.add_argument(
        "--max-sites",
        type=int,
        default=None,
        help="skip templates with more sites (default: the templates setting, 80)",
    )
    p.set_defaults(func=_templates)
    p = sub.add_parser(
        "ehull",
        help="E_hull of entries (JSON of pymatgen entries, entry store, CSV) against a reference",
        description=_EHULL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "entries", help="entries: .json/.json.gz pymatgen entries, .h5 entry store or .csv"
    )
    p.add_argument(
        "--reference", required=True, help="reference table .csv or .json list of pymatgen entries"
    )
    p.add_argument("-o", "--out", default=None, help="output CSV (default: print to stdout)")
    p.add_argument(
        "--energy-scale", default="", help="the entries' energy scale; must equal the reference's"
    )
    p.set_defaults(func=_ehull)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
