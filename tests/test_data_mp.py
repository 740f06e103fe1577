"""Tests of matdisco.data.mp against recorded responses served on 127.0.0.1 (no internet)."""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from matdisco.data.base import DataSourceError
from matdisco.data.mp import FIELDS, load_mp, subsystems
from matdisco.data.mp import client as mp_client
from matdisco.settings import DataMPSettings, SettingsError
from matdisco.store import ENTRY_COLUMNS

RECORDING = json.loads(
    (Path(__file__).parent / "data" / "mp" / "summary_responses.json").read_text()
)
KEY = "sk-FAKE-123"


class FakeMP:
    """A local stand-in for the MP API serving the recorded responses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        #: (path, chemsys or None) -> list of status codes to answer before succeeding
        self.failures: dict[tuple[str, str | None], list[int]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 -- http.server API
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append(
                    {"path": url.path, "params": params, "key": self.headers.get("x-api-key")}
                )
                queue = fake.failures.get((url.path, params.get("chemsys"))) or fake.failures.get(
                    (url.path, None)
                )
                if queue:
                    status = queue.pop(0) if len(queue) > 1 else queue[0]
                    if status != 200:
                        return self._send(status, {"detail": "Internal Server Error"})
                if self.headers.get("x-api-key") != KEY and url.path != "/heartbeat":
                    return self._send(401, {"detail": "invalid API key"})
                if url.path == "/heartbeat":
                    return self._send(200, RECORDING["heartbeat"])
                if url.path == "/materials/summary/":
                    rec = RECORDING["summary"].get(params.get("chemsys"), {"data": [], "meta": {}})
                    skip, limit = int(params.get("_skip", 0)), int(params.get("_limit", 1000))
                    meta = {**rec["meta"], "total_doc": len(rec["data"])}
                    return self._send(200, {"data": rec["data"][skip : skip + limit], "meta": meta})
                return self._send(404, {"detail": "Not Found"})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def summary_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/materials/summary/"]


@pytest.fixture
def server() -> Iterator[FakeMP]:
    fake = FakeMP()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("MP_API_ENDPOINT", raising=False)


def _mp(chemsys: list[str], *, api_key: str | None = None, **kw: Any):
    """load_mp with its ``data.mp`` settings given as a config mapping (as the workflow has it)."""
    section = {
        "chemsys": chemsys,
        **{k: str(v) if isinstance(v, Path) else v for k, v in kw.items()},
    }
    return load_mp(section, api_key=api_key)


def _load(server: FakeMP, cache: Path, **kw: Any):
    kw.setdefault("api_key", KEY)
    return _mp(["Mg-O"], cache_dir=cache, endpoint=server.url, backoff_s=0, timeout_s=5, **kw)


def _all_cache_text(cache: Path) -> str:
    out = []
    for p in cache.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            out.append(
                (gzip.decompress(data) if p.suffix == ".gz" else data).decode("utf-8", "replace")
            )
    return "\n".join(out)


def test_subsystems() -> None:
    assert subsystems(["Mg-Mn-O"]) == ["Mg", "Mn", "O", "Mg-Mn", "Mg-O", "Mn-O", "Mg-Mn-O"]
    assert subsystems(["O-Mg", "Mg"]) == ["Mg", "O", "Mg-O"]
    with pytest.raises(ValueError, match="chemical system"):
        subsystems(["mg-o"])
    with pytest.raises(ValueError, match="unknown element"):
        subsystems(["Mg-Xx"])


def test_load_and_cache(server: FakeMP, tmp_path: Path) -> None:
    before = datetime.now(UTC).date().isoformat()
    res = _load(server, tmp_path)
    snap = tmp_path / res.provenance["snapshot"]
    assert res.provenance["snapshot"] in {before, datetime.now(UTC).date().isoformat()}
    # the requests: heartbeat + one summary query per subsystem, as mp-api sends them
    summary = server.summary_requests()
    assert [r["params"]["chemsys"] for r in summary] == ["Mg", "O", "Mg-O"]
    assert all(r["params"]["_fields"] == ",".join(FIELDS) for r in summary)
    assert all(r["key"] == KEY for r in summary)
    assert any(r["path"] == "/heartbeat" for r in server.requests)
    # cache files
    names = sorted(p.name for p in snap.iterdir())
    assert names == ["Mg-O.json.gz", "Mg.json.gz", "O.json.gz", "meta.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    meta = json.loads((snap / "meta.json").read_text())
    assert meta["db_version"] == "2025_09_25"
    assert meta["fields"] == list(FIELDS)
    assert meta["query_time_utc"] and meta["mp_api_version"]
    raw = json.loads(gzip.decompress((snap / "Mg-O.json.gz").read_bytes()))
    assert [d["material_id"] for d in raw["data"]] == ["mp-1265", "mp-9900001", "mp-9900003"]
    assert raw["meta"]["total_doc"] == 3
    # entries
    e = res.entries
    assert list(e.columns) == list(ENTRY_COLUMNS)
    assert e["id"].tolist() == ["mp-153", "mp-9900002", "mp-12957", "mp-1265", "mp-9900001"]
    assert (e["source"] == "mp").all()
    row = e.set_index("id").loc["mp-1265"]
    assert row["formula"] == "MgO" and row["composition"] == "Mg1 O1" and row["chemsys"] == "Mg-O"
    assert row["nsites"] == 2 and row["nelements"] == 2
    assert row["energy_per_atom"] == pytest.approx(-6.0339)
    assert row["formation_energy_per_atom"] == pytest.approx(-3.0475)
    assert row["e_above_hull"] == 0.0 and row["band_gap"] == pytest.approx(4.4465)
    assert row["e_above_hull_method"] == "Materials Project energy_above_hull (2025_09_25)"
    assert row["source_file"] == f"{snap.name}/Mg-O.json.gz"
    assert e.set_index("id")["is_experimental"].to_dict() == {
        "mp-153": 1,
        "mp-9900002": 0,
        "mp-12957": 1,
        "mp-1265": 1,
        "mp-9900001": 0,
    }
    # the disordered document is rejected, not rounded
    assert len(res.rejected) == 1
    assert res.rejected["reason"].iloc[0].startswith("partial_occupancy: mp-9900003")
    assert res.rejected["file"].iloc[0] == f"{snap.name}/Mg-O.json.gz"
    # structures
    structs = res.structures.structures()
    assert [len(s) for s in structs] == e["nsites"].tolist()
    assert [s.composition.reduced_formula for s in structs] == e["formula"].tolist()
    np.testing.assert_allclose(structs[3].lattice.abc, [3.0087] * 3, atol=1e-3)
    prov = res.provenance
    assert prov["db_version"] == "2025_09_25" and prov["chemsys"] == ["Mg-O"]
    assert prov["subsystems"] == ["Mg", "O", "Mg-O"]
    assert prov["endpoint_host"] == urlparse(server.url).netloc
    assert prov["n_entries"] == 5 and prov["n_rejected"] == 1 and prov["from_cache"] is False


def test_second_call_reads_cache_without_network(server: FakeMP, tmp_path: Path) -> None:
    first = _load(server, tmp_path)
    n_requests = len(server.requests)
    server.stop()
    # no key, no server: the cache must suffice
    second = _mp(["Mg-O"], cache_dir=tmp_path, endpoint=server.url, backoff_s=0, timeout_s=1)
    assert len(server.requests) == n_requests
    assert second.provenance["from_cache"] is True
    assert second.entries.equals(first.entries)
    np.testing.assert_array_equal(second.structures.frac_coords, first.structures.frac_coords)
    # an explicit snapshot works the same, and so does a subsystem of what was downloaded
    snap = first.provenance["snapshot"]
    again = _mp(["Mg"], cache_dir=tmp_path, snapshot=snap, endpoint=server.url)
    assert again.entries["id"].tolist() == ["mp-153", "mp-9900002"]


def test_pagination(server: FakeMP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp_client, "_PAGE_SIZE", 2)
    res = _load(server, tmp_path)
    mgo = [r["params"] for r in server.summary_requests() if r["params"]["chemsys"] == "Mg-O"]
    assert [p.get("_skip") for p in mgo] == [None, "2"]
    assert len(res.entries) == 5


def test_missing_key(server: FakeMP, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError) as exc:
        _mp(["Mg-O"], cache_dir=tmp_path, endpoint=server.url)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "MP_API_KEY" in msg and "data.source is 'mp'" in msg
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_key_from_environment(
    server: FakeMP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_API_KEY", KEY)
    res = _mp(["Mg-O"], cache_dir=tmp_path, endpoint=server.url, backoff_s=0)
    assert len(res.entries) == 5
    assert server.summary_requests()[0]["key"] == KEY


def test_bad_key_is_not_retried_or_echoed(server: FakeMP, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError) as exc:
        _load(server, tmp_path, api_key="sk-WRONG-456")
    msg = str(exc.value)
    assert "401" in msg and "/materials/summary/" in msg and "sk-WRONG-456" not in msg
    assert len(server.summary_requests()) == 1
    assert list(tmp_path.iterdir()) == []


def test_retry_after_500(server: FakeMP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    monkeypatch.setattr(mp_client, "_sleep", delays.append)
    server.failures[("/materials/summary/", "O")] = [500, 503, 200]
    res = _mp(
        ["Mg-O"], cache_dir=tmp_path, endpoint=server.url, api_key=KEY, backoff_s=2.0, timeout_s=5
    )
    assert len(res.entries) == 5
    o_requests = [r for r in server.summary_requests() if r["params"]["chemsys"] == "O"]
    assert len(o_requests) == 3
    assert delays == [2.0, 4.0]  # exponential backoff


def test_retry_after_429(server: FakeMP, tmp_path: Path) -> None:
    server.failures[("/heartbeat", None)] = [429, 200]
    res = _load(server, tmp_path)
    assert res.provenance["db_version"] == "2025_09_25"


def test_persistent_500_leaves_no_cache(
    server: FakeMP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.failures[("/materials/summary/", "Mg-O")] = [500]
    cache = tmp_path / "cache"
    with caplog.at_level(logging.DEBUG), pytest.raises(DataSourceError) as exc:
        _mp(["Mg-O"], cache_dir=cache, endpoint=server.url, api_key=KEY, max_retries=2, backoff_s=0)
    msg = str(exc.value)
    assert "500" in msg and "/materials/summary/" in msg and "3 attempt" in msg
    assert KEY not in msg and KEY not in caplog.text
    mgo = [r for r in server.summary_requests() if r["params"]["chemsys"] == "Mg-O"]
    assert len(mgo) == 3
    # Mg and O had succeeded, but nothing was written
    assert not cache.exists() or not any(cache.rglob("*"))


def test_connection_errors_are_retried(
    server: FakeMP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    monkeypatch.setattr(mp_client, "_sleep", delays.append)
    server.stop()
    with pytest.raises(DataSourceError, match="ConnectionError") as exc:
        _mp(
            ["Mg"],
            cache_dir=tmp_path,
            endpoint=server.url,
            api_key=KEY,
            max_retries=3,
            backoff_s=0.5,
            timeout_s=2,
        )
    assert "/heartbeat" in str(exc.value)
    assert delays == [0.5, 1.0, 2.0]
    assert list(tmp_path.iterdir()) == []


def test_key_never_written(
    server: FakeMP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        res = _load(server, tmp_path)
        again = _load(server, tmp_path)
    assert KEY not in _all_cache_text(tmp_path)
    assert KEY not in json.dumps(res.provenance) and KEY not in json.dumps(again.provenance)
    assert KEY not in caplog.text
    assert KEY not in res.entries.to_csv() + res.rejected.to_csv()


def test_past_snapshot_is_not_downloaded(server: FakeMP, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="2020-01-01") as exc:
        _load(server, tmp_path, snapshot="2020-01-01")
    assert "\n" not in str(exc.value)
    assert server.requests == []
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        _load(server, tmp_path, snapshot="../etc")


def test_new_subsystems_are_added_to_a_snapshot(server: FakeMP, tmp_path: Path) -> None:
    first = _mp(["Mg"], cache_dir=tmp_path, endpoint=server.url, api_key=KEY, backoff_s=0)
    assert first.entries["id"].tolist() == ["mp-153", "mp-9900002"]
    server.requests.clear()
    res = _load(server, tmp_path)
    assert [r["params"]["chemsys"] for r in server.summary_requests()] == ["O", "Mg-O"]
    assert len(res.entries) == 5
    meta = json.loads((tmp_path / res.provenance["snapshot"] / "meta.json").read_text())
    assert sorted(meta["queries"]) == ["Mg", "Mg-O", "O"]


def test_empty_chemsys(server: FakeMP, tmp_path: Path) -> None:
    res = _mp(["Li"], cache_dir=tmp_path, endpoint=server.url, api_key=KEY, backoff_s=0)
    assert len(res.entries) == 0 and len(res.structures) == 0
    assert list(res.entries.columns) == list(ENTRY_COLUMNS)


def test_rerun_on_a_later_day_reuses_the_newest_cache(server: FakeMP, tmp_path: Path) -> None:
    """snapshot: null must not download again when a complete older snapshot is cached."""
    first = _load(server, tmp_path)
    old = tmp_path / "2020-01-01"
    (tmp_path / first.provenance["snapshot"]).rename(old)
    n_requests = len(server.requests)
    server.stop()
    again = _mp(["Mg-O"], cache_dir=tmp_path, endpoint=server.url, backoff_s=0, timeout_s=1)
    assert len(server.requests) == n_requests
    assert again.provenance["snapshot"] == "2020-01-01"
    assert again.provenance["from_cache"] is True


def test_typed_settings_equal_mapping(server: FakeMP, tmp_path: Path) -> None:
    """DataMPSettings and the config mapping give the same load; a bad key is named."""
    first = _load(server, tmp_path)
    typed = DataMPSettings(
        chemsys=("Mg-O",), cache_dir=str(tmp_path), endpoint=server.url, backoff_s=0.0
    )
    again = load_mp(typed)
    assert again.provenance["from_cache"] is True
    assert again.entries.equals(first.entries)
    with pytest.raises(SettingsError, match=r"data\.mp\.max_retry: unknown key"):
        load_mp({"chemsys": ["Mg-O"], "cache_dir": str(tmp_path), "max_retry": 2})
    with pytest.raises(SettingsError, match=r"data\.mp\.timeout_s"):
        load_mp({"chemsys": ["Mg-O"], "cache_dir": str(tmp_path), "timeout_s": "soon"})
