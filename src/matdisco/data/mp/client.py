"""HTTP layer of the MP source: a ``requests`` client issuing mp-api's requests, with retries.

See :mod:`matdisco.data.mp` for the requests it makes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlparse

from matdisco.data.base import DataSourceError

if TYPE_CHECKING:
    import requests

__all__ = ["DEFAULT_ENDPOINT", "FIELDS", "KEY_ENV"]

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


class _HTTPStatusError(DataSourceError):
    """A non-retryable HTTP status (4xx other than 429)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _sleep(seconds: float) -> None:
    """Indirection so tests can record the backoff delays instead of waiting."""
    time.sleep(seconds)


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
