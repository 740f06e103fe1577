"""Public entry point of the MP source: :func:`load_mp` (cache first, download when needed).

See :mod:`matdisco.data.mp` for the requests and the cache layout.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from matdisco.data.base import DataSourceError, SourceResult
from matdisco.data.mp.cache import (
    _META,
    _SNAPSHOT_RE,
    _download,
    _latest_complete_snapshot,
    _read_json,
)
from matdisco.data.mp.client import FIELDS, KEY_ENV, _base_url
from matdisco.data.mp.convert import _entries_from_cache
from matdisco.settings import DataMPSettings
from matdisco.store import StructureArrays

__all__ = ["load_mp", "subsystems"]

logger = logging.getLogger("matdisco.data")

_CHEMSYS_RE = re.compile(r"^[A-Z][a-z]?(-[A-Z][a-z]?)*$")


def _normalise_chemsys(cs: str) -> str:
    from pymatgen.core import Element

    cs = cs.strip()
    if not _CHEMSYS_RE.match(cs):
        raise ValueError(f"data.mp.chemsys: {cs!r} is not a chemical system like 'Mg-Mn-O'")
    els = sorted(set(cs.split("-")))
    bad = [e for e in els if not Element.is_valid_symbol(e) or e in {"D", "T"}]
    if bad:
        raise ValueError(f"data.mp.chemsys: {cs!r} has unknown element(s) {bad}")
    return "-".join(els)


def subsystems(chemsys: Sequence[str]) -> list[str]:
    """Every chemical subsystem of the given systems, sorted by size then name.

    Args:
        chemsys: systems such as ``["Mg-Mn-O"]``.

    Returns:
        E.g. ``["Mg", "Mn", "O", "Mg-Mn", "Mg-O", "Mn-O", "Mg-Mn-O"]``.
    """
    out: set[str] = set()
    for cs in chemsys:
        els = _normalise_chemsys(cs).split("-")
        for k in range(1, len(els) + 1):
            out.update("-".join(c) for c in combinations(els, k))
    return sorted(out, key=lambda s: (s.count("-"), s))


def load_mp(
    settings: DataMPSettings | Mapping[str, Any] | None,
    *,
    api_key: str | None = None,
) -> SourceResult:
    """Load the MP summary entries of ``chemsys`` and all its subsystems.

    Args:
        settings: ``data.mp`` (a mapping is read with :meth:`DataMPSettings.from_config`):
            ``chemsys`` (every subsystem -- Mg, Mn, O, Mg-Mn, Mg-O, Mn-O, Mg-Mn-O for
            Mg-Mn-O -- is queried), ``cache_dir`` (root of the response cache), ``snapshot``
            (cache folder ``YYYY-MM-DD``; None = the newest cached snapshot that holds every
            needed chemical system, else today (UTC); a missing or incomplete snapshot is
            downloaded only when it is today's, as MP serves only its current database),
            ``endpoint`` (None = mp-api's default: ``MP_API_ENDPOINT`` or
            https://api.materialsproject.org/), ``max_retries`` (on HTTP 429/5xx, connection
            errors and timeouts), ``backoff_s`` (first retry delay, doubled on each further
            retry; a longer ``Retry-After`` of a 429 wins, up to 300 s) and ``timeout_s`` (per
            HTTP request).
        api_key: the API key; None reads the environment variable ``MP_API_KEY`` (meant
            for tests; the key is never written anywhere).

    Returns:
        A :class:`~matdisco.data.base.SourceResult`; disordered structures go to
        ``rejected``. Provenance: db version, query time, snapshot, chemsys, endpoint host,
        counts.

    Raises:
        DataSourceError: a download is needed but no key is set, the API fails after the
            retries, or the cache is unusable. Nothing is written to the cache then.
        ValueError: malformed ``chemsys``, ``snapshot`` or ``endpoint``.
    """
    s = DataMPSettings.coerce(settings)
    chemsys = s.chemsys
    if not chemsys:
        raise ValueError("data.mp.chemsys: give at least one chemical system")
    requested = sorted({_normalise_chemsys(cs) for cs in chemsys})
    subs = subsystems(requested)
    today = datetime.now(UTC).date().isoformat()
    root = Path(s.cache_dir)
    # no snapshot given: reuse the newest complete cached one, so reruns never download again
    snap = s.snapshot or _latest_complete_snapshot(root, subs) or today
    if not _SNAPSHOT_RE.match(snap):
        raise ValueError(f"data.mp.snapshot: {snap!r} is not a date YYYY-MM-DD")
    base = _base_url(s.endpoint)
    snap_dir = root / snap

    meta_path = snap_dir / _META
    old_meta = _read_json(meta_path) if meta_path.is_file() else None
    todo = (
        subs
        if old_meta is None
        else [cs for cs in subs if not (snap_dir / f"{cs}.json.gz").is_file()]
    )
    from_cache = not todo
    if todo:
        if snap != today:
            raise DataSourceError(
                f"data.mp.snapshot {snap}: no complete cache in {snap_dir} (missing "
                f"{', '.join(todo[:5])}{', ...' if len(todo) > 5 else ''}) and MP serves only its "
                "current data; set data.mp.snapshot to null to download today's snapshot"
            )
        key = (api_key if api_key is not None else os.environ.get(KEY_ENV, "")).strip()
        if not key:
            raise DataSourceError(
                f"data.source is 'mp' but the environment variable {KEY_ENV} is not set "
                f"(needed to download {len(todo)} chemical system(s) into {snap_dir}); get a key "
                "at https://materialsproject.org/api or use data.source 'bundled'"
            )
        logger.info(
            "mp: downloading %d chemical system(s) from %s into %s",
            len(todo),
            urlparse(base).netloc,
            snap_dir,
        )
        meta = _download(
            todo,
            base=base,
            key=key,
            snap_dir=snap_dir,
            old_meta=old_meta,
            timeout_s=s.timeout_s,
            max_retries=s.max_retries,
            backoff_s=s.backoff_s,
        )
    else:
        meta = old_meta or {}
        logger.info("mp: using cached snapshot %s (no download)", snap_dir)

    db_version = str(meta.get("db_version", "unknown"))
    method = f"Materials Project energy_above_hull ({db_version})"
    entries, structures, rejected, reasons = _entries_from_cache(root, snap_dir, subs, method)
    provenance = {
        "source": "mp",
        "db_version": db_version,
        "query_time_utc": meta.get("query_time_utc"),
        "snapshot": snap,
        "chemsys": requested,
        "subsystems": subs,
        "endpoint_host": meta.get("endpoint_host", urlparse(base).netloc),
        "cache_dir": str(root),
        "from_cache": from_cache,
        "fields": list(meta.get("fields", FIELDS)),
        "mp_api_version": meta.get("mp_api_version"),
        "n_entries": len(entries),
        "n_rejected": len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
    }
    logger.info(
        "mp: %d entries, %d rejected, db %s, snapshot %s",
        len(entries),
        len(rejected),
        db_version,
        snap,
    )
    return SourceResult(entries, StructureArrays.from_structures(structures), rejected, provenance)
