"""On-disk snapshot cache of the MP source: layout, atomic writes, download into a snapshot.

See :mod:`matdisco.data.mp` for the cache layout.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from matdisco.data.base import DataSourceError
from matdisco.data.mp.client import (
    FIELDS,
    HEARTBEAT_PATH,
    _Client,
    _fetch_chemsys,
    _HTTPStatusError,
)

logger = logging.getLogger("matdisco.data")

_SNAPSHOT_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_META = "meta.json"


def _gzip_json(obj: Any) -> bytes:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return gzip.compress(raw, compresslevel=6, mtime=0)


def _read_json(path: Path) -> Any:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return json.load(fh)
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, EOFError) as exc:
        raise DataSourceError(
            f"MP cache file {path} is unreadable ({type(exc).__name__}); delete the snapshot "
            "folder to download again"
        ) from None


def _latest_complete_snapshot(root: Path, subs: list[str]) -> str | None:
    """Name of the newest snapshot folder holding meta.json and every needed chemsys file."""
    if not root.is_dir():
        return None
    for snap_dir in sorted(
        (p for p in root.iterdir() if p.is_dir() and _SNAPSHOT_RE.match(p.name)), reverse=True
    ):
        if (snap_dir / _META).is_file() and all(
            (snap_dir / f"{cs}.json.gz").is_file() for cs in subs
        ):
            return snap_dir.name
    return None


def _write_snapshot(snap_dir: Path, files: dict[str, bytes], meta: dict[str, Any]) -> None:
    """Write the cache files through a staging folder; ``meta.json`` lands last."""
    snap_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{snap_dir.name}.", suffix=".tmp", dir=snap_dir.parent))
    try:
        for name, blob in files.items():
            (stage / name).write_bytes(blob)
        (stage / _META).write_text(
            json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if not snap_dir.exists():
            try:
                os.rename(stage, snap_dir)
                return
            except OSError:
                if not snap_dir.is_dir():
                    raise
        for name in files:  # snapshot folder exists: add the new files, meta.json last
            os.replace(stage / name, snap_dir / name)
        os.replace(stage / _META, snap_dir / _META)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _mp_api_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mp-api")
    except PackageNotFoundError:
        return "not installed"


def _download(
    todo: list[str],
    *,
    base: str,
    key: str,
    snap_dir: Path,
    old_meta: dict[str, Any] | None,
    timeout_s: float,
    max_retries: int,
    backoff_s: float,
) -> dict[str, Any]:
    """Download ``todo`` chemical systems and write them into the snapshot; return meta."""
    from matdisco import __version__

    client = _Client(base, key, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s)
    try:
        try:
            heartbeat = client.get(HEARTBEAT_PATH)
            db_version = str(heartbeat.get("db_version") or "unknown")
        except _HTTPStatusError as exc:  # mp-api, too, goes on without a version here
            logger.warning("mp: no database version from the heartbeat (%s)", exc)
            db_version = "unknown"
        if old_meta is not None and old_meta.get("db_version") not in (None, db_version):
            raise DataSourceError(
                f"MP cache snapshot {snap_dir.name} holds database version "
                f"{old_meta.get('db_version')} but the API now serves {db_version}; use a new "
                "snapshot (data.mp.snapshot: null) or delete the old folder"
            )
        files: dict[str, bytes] = {}
        queries: dict[str, Any] = {}
        for cs in todo:
            t0 = datetime.now(UTC).isoformat(timespec="seconds")
            payload = _fetch_chemsys(client, cs)
            blob = _gzip_json(payload)
            files[f"{cs}.json.gz"] = blob
            queries[cs] = {
                "file": f"{cs}.json.gz",
                "n_docs": len(payload["data"]),
                "n_pages": payload["n_pages"],
                "query_time_utc": t0,
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
            logger.info("mp: %s: %d documents", cs, len(payload["data"]))
    finally:
        client.close()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    meta = dict(old_meta or {})
    meta.update(
        {
            "source": "Materials Project API (materials/summary)",
            "db_version": db_version,
            "endpoint_host": urlparse(base).netloc,
            "fields": list(FIELDS),
            "mp_api_version": _mp_api_version(),
            "matdisco_version": __version__,
            "query_time_utc": meta.get("query_time_utc", now),
            "last_update_utc": now,
            "snapshot": snap_dir.name,
            "queries": {**meta.get("queries", {}), **queries},
        }
    )
    _write_snapshot(snap_dir, files, meta)
    return meta
