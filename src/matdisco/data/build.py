"""Build the normalised entry store from the configured source (the data stage)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd

from matdisco.data.base import SourceResult
from matdisco.provenance import environment, package_versions, sha256_file
from matdisco.settings import (
    DataBundledSettings,
    DataCifDirSettings,
    DataDedupeSettings,
    DataMPSettings,
)
from matdisco.store import atomic_write, write_store

__all__ = ["SOURCE_SETTINGS", "build_store", "load_source", "source_settings"]

#: the typed settings of one data source
SourceSettings: TypeAlias = DataBundledSettings | DataMPSettings | DataCifDirSettings

log = logging.getLogger("matdisco.data")


#: the settings class of each data source's config section
SOURCE_SETTINGS: dict[str, type[SourceSettings]] = {
    "bundled": DataBundledSettings,
    "mp": DataMPSettings,
    "cif_dir": DataCifDirSettings,
}


def source_settings(
    source: str, settings: SourceSettings | Mapping[str, Any] | None
) -> SourceSettings:
    """The typed settings of ``source`` (``data.<source>``) from a config mapping or as given.

    Raises:
        ValueError: unknown ``source``.
        SettingsError: the mapping has unknown keys or values of the wrong type (named).
    """
    if source not in SOURCE_SETTINGS:
        raise ValueError(
            f"data.source: unknown data source {source!r} (allowed: bundled, mp, cif_dir)"
        )
    return SOURCE_SETTINGS[source].coerce(settings)


def load_source(source: str, settings: SourceSettings | Mapping[str, Any] | None) -> SourceResult:
    """Load entries from one source; ``settings`` is that source's config section."""
    s = source_settings(source, settings)
    if isinstance(s, DataBundledSettings):
        from matdisco.data.bundled import load_bundled

        return load_bundled(
            s.structures, s.labels, list(s.chemsys_filter) if s.chemsys_filter is not None else None
        )
    if isinstance(s, DataMPSettings):
        from matdisco.data.mp import load_mp

        return load_mp(s)
    from matdisco.data.cif_dir import load_cif_dir

    return load_cif_dir(s)


def _precomputed_groups(
    entries: pd.DataFrame, provenance: dict[str, Any], dedupe: DataDedupeSettings
):
    """Duplicate groups shipped with a source, if they were computed with these tolerances."""
    pre = provenance.get("dedupe_precomputed")
    if not pre or "dedupe_group" not in entries.columns:
        return None
    if any(getattr(dedupe, k, v) != v for k, v in pre.items()):
        log.info("dedupe tolerances differ from the precomputed ones %s: comparing structures", pre)
        return None
    log.info("dedupe: using the duplicate groups shipped with the source (tolerances %s)", pre)
    return pd.factorize(entries["dedupe_group"])[0]


def build_store(
    *,
    source: str,
    settings: SourceSettings | Mapping[str, Any] | None,
    dedupe: DataDedupeSettings | Mapping[str, Any] | None,
    labels_path: str | Path,
    out_store: str | Path,
    out_rejected: str | Path,
    out_summary: str | Path,
    workers: int = 1,
) -> dict[str, Any]:
    """Load, dedupe and write the store plus a rejects table and a JSON summary.

    Formula-level labels for the classifier come from the source when it has them (the
    bundled set) and otherwise from the bundled label file ``labels_path``.

    Args:
        source: ``data.source``.
        settings: that source's section (``data.<source>``), typed or as a config mapping.
        dedupe: ``data.dedupe``, typed or as a config mapping.
        labels_path: bundled formula labels (used when the source has none).
        out_store, out_rejected, out_summary: the outputs.
        workers: processes for the structure comparisons of the dedupe.
    """
    from matdisco.data.bundled import load_formula_labels
    from matdisco.data.dedupe import dedupe_entries

    t0 = time.perf_counter()
    settings = source_settings(source, settings)
    dedupe = DataDedupeSettings.coerce(dedupe)
    result = load_source(source, settings)
    entries, structures = result.entries, result.structures
    log.info("%s: %d entries loaded, %d rejected", source, len(entries), len(result.rejected))
    dedupe_summary: dict[str, Any] = {"enabled": bool(dedupe.enabled)}
    if dedupe_summary["enabled"] and len(entries):
        entries, structures, s = dedupe_entries(
            entries,
            structures,
            group_of=_precomputed_groups(entries, result.provenance, dedupe),
            ltol=dedupe.ltol,
            stol=dedupe.stol,
            angle_tol=dedupe.angle_tol,
            symprec=dedupe.symprec,
            workers=workers,
        )
        dedupe_summary.update(s)
    entries = entries.drop(columns=["dedupe_group"], errors="ignore")
    labels = result.labels if result.labels is not None else load_formula_labels(labels_path)
    provenance = {
        "source": source,
        "settings": settings.to_dict(),
        "source_provenance": result.provenance,
        "labels": {
            "path": str(labels_path),
            "sha256": sha256_file(labels_path),
            "rows": len(labels),
        },
        "dedupe": dedupe_summary,
        "built_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "environment": environment(),
    }
    write_store(out_store, entries, structures, labels, data_source=source, provenance=provenance)
    rejected = result.rejected if len(result.rejected) else pd.DataFrame({"file": [], "reason": []})
    with atomic_write(out_rejected) as tmp:
        rejected.to_csv(tmp, index=False)
    summary = {
        "source": source,
        "entries": len(entries),
        "rejected": len(rejected),
        "rejected_by_reason": {
            str(k): int(v)
            for k, v in rejected["reason"].astype(str).str.split(":").str[0].value_counts().items()
        }
        if len(rejected)
        else {},
        "experimental": int((entries["is_experimental"] == 1).sum()),
        "with_e_above_hull": int(entries["e_above_hull"].notna().sum()),
        "with_band_gap": int(entries["band_gap"].notna().sum()),
        "labels": len(labels),
        "chemical_systems": int(entries["chemsys"].nunique()),
        "dedupe": dedupe_summary,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    with atomic_write(out_summary) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("store written: %s (%d entries, %.1f s)", out_store, len(entries), summary["seconds"])
    return summary
