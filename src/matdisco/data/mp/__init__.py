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

Modules: :mod:`~matdisco.data.mp.client` (HTTP), :mod:`~matdisco.data.mp.cache` (snapshot
folders), :mod:`~matdisco.data.mp.convert` (documents -> entries) and
:mod:`~matdisco.data.mp.source` (:func:`load_mp`). Settings:
:class:`matdisco.settings.DataMPSettings`.
"""

from __future__ import annotations

from matdisco.data.mp.client import DEFAULT_ENDPOINT, FIELDS, KEY_ENV
from matdisco.data.mp.source import load_mp, subsystems

__all__ = ["DEFAULT_ENDPOINT", "FIELDS", "KEY_ENV", "load_mp", "subsystems"]
