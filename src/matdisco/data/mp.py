"""Entries from the Materials Project (MP) API, cached on disk per snapshot.

The HTTP layer is a small ``requests`` client that issues the same requests as mp-api
(checked against mp-api 0.46.5): ``MPRester(api_key, endpoint=...).materials.summary.search(
chemsys=[cs], fields=FIELDS)`` becomes

* ``GET <endpoint>heartbeat`` -> ``{"db_version": ..., "access_controlled_batch_ids": [...]}``
  (what ``MPRester().db_version`` reads);
* ``GET <endpoint>materials/summary/?chemsys=<cs>&_fields=<f1,f2,...>&_limit=1000``, then the
  same with ``_skip=1000, 2000, ...`` until ``meta.total_doc`` documents are in; the API key
  travels in the ``x-api-key`` header. Responses are ``{"data": [...], "meta": {"total_doc":
  ..., ...}}``.

Doing it directly keeps retries, timeouts and failures under our control and makes the module
testable offline against recorded responses.

Cache layout (``<cache_dir>/<snapshot>/``, snapshot = UTC date ``YYYY-MM-DD``)::

    meta.json            db version, query times, fields, endpoint host, mp-api version
    <chemsys>.json.gz    {"request": {...}, "meta": <first page meta>, "n_pages": n,
                          "data": [all documents]} for one chemical system

When the snapshot's ``meta.json`` and every needed ``<chemsys>.json.gz`` exist, no network
call is made. Everything is downloaded first and only then written (to a staging folder that
is renamed into place), so a failed download never leaves a partial cache. The API key is read
from the environment variable ``MP_API_KEY`` and is never written to the cache, the logs,
the provenance or an error message.
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
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlparse

import numpy as np
import pandas as pd

from matdisco.data.base import REJECTED_COLUMNS, DataSourceError, SourceResult, empty_entries
from matdisco.store import ENTRY_COLUMNS, StructureArrays

if TYPE_CHECKING:
    import requests
    from pymatgen.core import Structure

__all__ = ["load_mp", "subsystems", "FIELDS", "DEFAULT_ENDPOINT", "KEY_ENV"]

logger = logging.getLogger("matdisco.data")

#: environment variable holding the API key
KEY_ENV = "MP_API_KEY"
#: mp-api's default endpoint (mp-api also honours the MP_API_ENDPOINT environment variable)
DEFAULT_ENDPOINT = "https://api.materialsproject.org/"
#: the summary fields requested
FIELDS: tuple[str, ...] = (
    "material_id",
    "formula_pretty",
    "structure",
    "energy_per_atom",
    "formation_energy_per_atom",
    "energy_above_hull",
    "band_gap",
    "theoretical",
    "database_IDs",
)
SUMMARY_PATH = "materials/summary/"
HEARTBEAT_PATH = "heartbeat"
#: documents per request (mp-api's chunk_size default)
_PAGE_SIZE = 1000
_MAX_PAGES = 10_000
_RETRY_AFTER_MAX_S = 300.0
_CHEMSYS_RE = re.compile(r"^[A-Z][a-z]?(-[A-Z][a-z]?)*$")
_SNAPSHOT_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_META = "meta.json"


class _HTTPStatusError(DataSourceError):
    """A non-retryable HTTP status (4xx other than 429)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _sleep(seconds: float) -> None:
    """Indirection so tests can record the backoff delays instead of waiting."""
    time.sleep(seconds)


# --------------------------------------------------------------------------- chemsys


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


# --------------------------------------------------------------------------- HTTP


def _one_line(text: str, key: str | None) -> str:
    text = " ".join(str(text).split())
    if key:
        text = text.replace(key, "***")
    return text[:300]


def _base_url(endpoint: str | None) -> str:
    base = endpoint or os.environ.get("MP_API_ENDPOINT") or DEFAULT_ENDPOINT
    parsed = urlparse(base)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ValueError(f"data.mp.endpoint: {base!r} is not an http(s) URL")
    return base if base.endswith("/") else base + "/"


class _Client:
    """GET with retries and exponential backoff; errors become :class:`DataSourceError`."""

    def __init__(
        self, base: str, key: str, *, timeout_s: float, max_retries: int, backoff_s: float
    ) -> None:
        import requests

        from matdisco import __version__

        self.base = base
        self._key = key
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.session = requests.Session()
        self.session.headers.update(
            {
                "x-api-key": key,
                "user-agent": f"matdisco/{__version__} (mp-api-compatible requests client)",
                "accept": "application/json",
            }
        )

    def close(self) -> None:
        self.session.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET ``base + path`` and return the decoded JSON object."""
        import requests

        url = urljoin(self.base, path)
        url_path = urlparse(url).path
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__} (no response)"
            except requests.RequestException as exc:
                raise DataSourceError(
                    f"MP API request GET {url_path} failed: {type(exc).__name__}: "
                    f"{_one_line(str(exc), self._key)}"
                ) from None
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        body = resp.json()
                    except ValueError:
                        raise DataSourceError(
                            f"MP API GET {url_path} returned HTTP 200 but not JSON"
                        ) from None
                    if not isinstance(body, dict):
                        raise DataSourceError(
                            f"MP API GET {url_path} returned JSON that is not an object"
                        )
                    return body
                detail = _error_detail(resp, self._key)
                if status != 429 and status < 500:
                    hint = " (check MP_API_KEY)" if status in (401, 403) else ""
                    raise _HTTPStatusError(
                        f"MP API GET {url_path} failed with HTTP {status}{hint}: {detail}", status
                    )
                last = f"HTTP {status}: {detail}"
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            if attempt < self.max_retries:
                delay = self.backoff_s * 2**attempt
                if retry_after is not None:
                    delay = max(delay, retry_after)
                logger.warning(
                    "mp: GET %s: %s; retry %d/%d in %.1f s",
                    url_path,
                    last,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                _sleep(delay)
        raise DataSourceError(
            f"MP API GET {url_path} failed after {self.max_retries + 1} attempt(s): {last}"
        )


def _error_detail(resp: requests.Response, key: str | None) -> str:
    try:
        body = resp.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = resp.text or resp.reason or ""
    return _one_line(str(detail), key)[:160] or "(no detail)"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_MAX_S)
    except ValueError:
        return None


def _fetch_chemsys(client: _Client, cs: str) -> dict[str, Any]:
    """All summary documents of one chemical system (paginated like mp-api)."""
    params: dict[str, Any] = {"chemsys": cs, "_fields": ",".join(FIELDS), "_limit": _PAGE_SIZE}
    first = client.get(SUMMARY_PATH, params)
    data = _page_data(first, cs)
    meta = first.get("meta") or {}
    total = int(meta.get("total_doc", len(data)) or 0)
    n_pages = 1
    while len(data) < total and n_pages < _MAX_PAGES:
        page = client.get(SUMMARY_PATH, {**params, "_skip": len(data)})
        chunk = _page_data(page, cs)
        n_pages += 1
        if not chunk:
            break
        data.extend(chunk)
    if len(data) < total:
        raise DataSourceError(f"MP API returned {len(data)} of {total} documents for chemsys {cs}")
    return {
        "request": {"path": "/" + SUMMARY_PATH, "params": params},
        "meta": meta,
        "n_pages": n_pages,
        "data": data,
    }


def _page_data(page: dict[str, Any], cs: str) -> list[dict[str, Any]]:
    data = page.get("data")
    if not isinstance(data, list):
        raise DataSourceError(f"MP API response for chemsys {cs} has no 'data' list")
    return data


# --------------------------------------------------------------------------- cache


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
    for snap_dir in sorted((p for p in root.iterdir() if p.is_dir() and _SNAPSHOT_RE.match(p.name)), reverse=True):
        if (snap_dir / _META).is_file() and all((snap_dir / f"{cs}.json.gz").is_file() for cs in subs):
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


# --------------------------------------------------------------------------- entries


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _id_key(mid: str) -> tuple[str, int, str]:
    m = re.match(r"^([a-z]+)-(\d+)$", mid)
    return (m.group(1), int(m.group(2)), "") if m else (mid, -1, mid)


def _clean_structure(d: Any) -> Structure:
    """A pymatgen structure dict -> plain ordered Structure (no oxidation states, no props).

    Raises:
        _DocRejected: the structure is missing, unreadable or disordered.
    """
    from pymatgen.core import Element, Structure

    if not isinstance(d, dict):
        raise _DocRejected("parse_error", "no structure in the document")
    try:
        s = Structure.from_dict(d)
    except Exception as exc:  # noqa: BLE001 -- a malformed document is a rejection
        raise _DocRejected("parse_error", f"structure unreadable ({type(exc).__name__})") from None
    if not s.is_ordered:
        bad = next(site for site in s if not site.is_ordered)
        raise _DocRejected("partial_occupancy", f"disordered site {bad.species}")
    return Structure(s.lattice, [Element(site.specie.symbol) for site in s], s.frac_coords)


class _DocRejected(Exception):
    """Internal: a summary document is rejected for ``category``."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category


def _doc_row(doc: dict[str, Any], structure: Structure, method: str) -> dict[str, Any]:
    comp = structure.composition
    theoretical = doc.get("theoretical")
    e_hull = _float(doc.get("energy_above_hull"))
    return {
        "id": str(doc["material_id"]),
        "source": "mp",
        "formula": comp.reduced_formula,
        "composition": comp.formula,
        "chemsys": comp.chemical_system,
        "nelements": len(comp.elements),
        "nsites": len(structure),
        "energy_per_atom": _float(doc.get("energy_per_atom")),
        "formation_energy_per_atom": _float(doc.get("formation_energy_per_atom")),
        "e_above_hull": e_hull,
        "e_above_hull_method": "" if np.isnan(e_hull) else method,
        "band_gap": _float(doc.get("band_gap")),
        "is_experimental": -1 if theoretical is None else (0 if theoretical else 1),
        "has_partial_occupancy": False,
        "duplicate_ids": "",
    }


def _entries_from_cache(
    cache_dir: Path, snap_dir: Path, subs: list[str], method: str
) -> tuple[pd.DataFrame, list[Structure], pd.DataFrame, Counter[str]]:
    rows: list[dict[str, Any]] = []
    structures: list[Structure] = []
    rejected: list[dict[str, str]] = []
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    for cs in subs:
        path = snap_dir / f"{cs}.json.gz"
        rel = path.relative_to(cache_dir).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        payload = _read_json(path)
        docs = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            raise DataSourceError(
                f"MP cache file {path} has no list of documents; delete the snapshot folder"
            )
        for doc in sorted(docs, key=lambda d: _id_key(str(d.get("material_id") or ""))):
            mid = str(doc.get("material_id") or "")
            try:
                if not mid:
                    raise _DocRejected("parse_error", "document without material_id")
                if mid in seen:
                    logger.debug("mp: %s listed twice; kept the first", mid)
                    continue
                seen.add(mid)
                structure = _clean_structure(doc.get("structure"))
            except _DocRejected as rej:
                reason = f"{rej.category}: {mid or '?'}: {_one_line(str(rej), None)}"
                rejected.append({"file": rel, "reason": reason})
                reasons[rej.category] += 1
                logger.warning("mp: rejected %s", reason)
                continue
            row = _doc_row(doc, structure, method)
            row.update({"source_file": rel, "source_hash": digest})
            rows.append(row)
            structures.append(structure)
    entries = pd.DataFrame(rows, columns=list(ENTRY_COLUMNS)) if rows else empty_entries()
    if rows:
        ints = {"nelements": np.int64, "nsites": np.int64, "is_experimental": np.int64}
        entries = entries.astype(ints)
    return entries, structures, pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)), reasons


# --------------------------------------------------------------------------- public


def load_mp(
    chemsys: list[str],
    *,
    cache_dir: str | Path,
    snapshot: str | None = None,
    endpoint: str | None = None,
    max_retries: int = 4,
    backoff_s: float = 2.0,
    timeout_s: float = 60,
    api_key: str | None = None,
) -> SourceResult:
    """Load the MP summary entries of ``chemsys`` and all its subsystems.

    Args:
        chemsys: chemical systems, e.g. ``["Mg-Mn-O"]``; every subsystem (Mg, Mn, O, Mg-Mn,
            Mg-O, Mn-O, Mg-Mn-O) is queried.
        cache_dir: root of the response cache.
        snapshot: cache folder name ``YYYY-MM-DD``; None = the newest cached snapshot that
            holds every needed chemical system, else today (UTC). A missing or incomplete
            snapshot is downloaded only when it is today's (MP serves only its current
            database, so a past snapshot cannot be fetched again).
        endpoint: API base URL; None = mp-api's default (``MP_API_ENDPOINT`` or
            https://api.materialsproject.org/).
        max_retries: retries on HTTP 429/5xx and connection errors or timeouts.
        backoff_s: first retry delay, doubled on each further retry (a longer
            ``Retry-After`` of a 429 wins, up to 300 s).
        timeout_s: timeout per HTTP request.
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
    if isinstance(chemsys, str):
        chemsys = [chemsys]
    if not chemsys:
        raise ValueError("data.mp.chemsys: give at least one chemical system")
    requested = sorted({_normalise_chemsys(cs) for cs in chemsys})
    subs = subsystems(requested)
    today = datetime.now(UTC).date().isoformat()
    root = Path(cache_dir)
    # no snapshot given: reuse the newest complete cached one, so reruns never download again
    snap = snapshot or _latest_complete_snapshot(root, subs) or today
    if not _SNAPSHOT_RE.match(snap):
        raise ValueError(f"data.mp.snapshot: {snap!r} is not a date YYYY-MM-DD")
    base = _base_url(endpoint)
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
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
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
