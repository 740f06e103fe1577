"""Run archives: create + verify, corruption is caught, secrets never reach results or archives."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from matdisco import archive as A
from matdisco.cli import main

FAKE_KEY = "fakeMPkey-0123456789abcdef-DO-NOT-LEAK"


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A small run folder (results/<run>) and a fake MP API key in the environment."""
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "demo"
    (run / "final" / "cifs").mkdir(parents=True)
    (run / "logs").mkdir()
    (run / "final" / "candidates.csv").write_text("rank,id,formula\n1,c-1,MgMn2O4\n")
    (run / "final" / "cifs" / "001_MgMn2O4.cif").write_text("data_MgMn2O4\n_cell_length_a 5.8\n")
    (run / "logs" / "screen.log").write_text("INFO screen: 1 finalist\n")
    (run / "report.html").write_text("<html><body>report</body></html>\n")
    with gzip.open(run / "final" / "table.csv.gz", "wt") as fh:
        fh.write("a,b\n1,2\n")
    return run


def _every_byte(paths):
    for p in paths:
        data = Path(p).read_bytes()
        yield p, data
        if str(p).endswith(".gz"):
            yield p, gzip.decompress(data)


def test_archive_verifies_and_has_no_secret(run_dir, tmp_path, capsys):
    cmd = f"MP_API_KEY={FAKE_KEY} snakemake --cores 2 --config run_name=demo"
    assert (
        main(
            [
                "archive",
                "results/demo",
                "--command",
                cmd,
                "--command",
                f"echo {FAKE_KEY}",
                "--root",
                str(tmp_path),
            ]
        )
        == 0
    )
    tgz = tmp_path / "results" / "demo.tar.gz"
    side = tmp_path / "results" / "demo.MANIFEST.json"
    assert tgz.exists() and side.exists()
    assert main(["verify", str(tgz)]) == 0
    assert main(["verify", str(tgz), "--manifest", str(side)]) == 0
    man = json.loads(side.read_text())
    assert man["format"] == A.MANIFEST_FORMAT
    assert set(man["files"]) == {
        "final/candidates.csv",
        "final/cifs/001_MgMn2O4.cif",
        "logs/screen.log",
        "report.html",
        "final/table.csv.gz",
    }
    assert man["commands"]["recorded"][0].startswith("MP_API_KEY=<redacted> snakemake")
    assert "<redacted:MP_API_KEY>" in man["commands"]["recorded"][1]
    assert man["secret_env_present"] == ["MP_API_KEY"]
    # scan every file of the run, the manifest copy, the archive and every archive member for
    # the key
    files = [p for p in run_dir.rglob("*") if p.is_file()] + [side, tgz]
    for p, data in _every_byte(files):
        assert FAKE_KEY.encode() not in data, p
    with tarfile.open(tgz) as tar:
        for m in tar.getmembers():
            if m.isfile():
                assert FAKE_KEY.encode() not in tar.extractfile(m).read(), m.name
        assert "demo/MANIFEST.json" in tar.getnames()


def _rewrite(tgz: Path, change) -> None:
    """Rebuild the archive applying ``change(name, data) -> data | None`` (None drops the
    member)."""
    with tarfile.open(tgz) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(tgz, "w:gz") as tar:
        for m, data in members:
            new = change(m.name, data)
            if new is None:
                continue
            m.size = len(new)
            tar.addfile(m, io.BytesIO(new))


def test_corrupted_archives_fail(run_dir, tmp_path, capsys):
    tgz, _ = A.create_archive(run_dir, root=tmp_path)
    good = tgz.read_bytes()
    assert A.verify_archive(tgz) == []

    # 1. a changed file (manifest untouched)
    _rewrite(
        tgz, lambda n, d: d.replace(b"MgMn2O4", b"MgMn2O5") if n.endswith("candidates.csv") else d
    )
    problems = A.verify_archive(tgz)
    assert any("final/candidates.csv: SHA-256" in p for p in problems)
    assert main(["verify", str(tgz)]) == 1
    assert "mismatches" in capsys.readouterr().err

    # 2. a missing and an extra file
    tgz.write_bytes(good)
    _rewrite(tgz, lambda n, d: None if n.endswith("screen.log") else d)
    problems = A.verify_archive(tgz)
    assert any("logs/screen.log: in the manifest but missing" in p for p in problems)

    tgz.write_bytes(good)
    with tarfile.open(tgz) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(tgz, "w:gz") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
        extra = tarfile.TarInfo("demo/final/injected.csv")
        extra.size = 3
        tar.addfile(extra, io.BytesIO(b"x,y"))
    assert any(
        "injected.csv: in the archive but not in the manifest" in p for p in A.verify_archive(tgz)
    )

    # 3. flipped bytes inside the compressed stream
    tgz.write_bytes(good)
    raw = bytearray(good)
    mid = len(raw) // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    tgz.write_bytes(bytes(raw))
    assert A.verify_archive(tgz)
    assert main(["verify", str(tgz)]) == 1

    # 4. truncated archive
    tgz.write_bytes(good[: len(good) // 3])
    assert A.verify_archive(tgz)

    # 5. an external manifest that disagrees with the one inside
    tgz.write_bytes(good)
    other = tmp_path / "other.json"
    man = json.loads((tmp_path / "results" / "demo.MANIFEST.json").read_text())
    man["files"]["report.html"]["sha256"] = "0" * 64
    other.write_text(json.dumps(man))
    problems = A.verify_archive(tgz, other)
    assert any("differs" in p for p in problems) and any(
        "report.html: SHA-256" in p for p in problems
    )


def test_secret_in_run_is_refused(run_dir, tmp_path, capsys):
    with gzip.open(run_dir / "logs" / "leaky.log.gz", "wt") as fh:
        fh.write(f"requests: GET https://api.materialsproject.org/?api_key={FAKE_KEY}\n")
    assert main(["archive", "results/demo", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "leaky.log.gz: MP_API_KEY" in err and FAKE_KEY not in err
    assert not (tmp_path / "results" / "demo.tar.gz").exists()


def test_redaction_rules(monkeypatch):
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_abcdefghijklmnop")
    secrets = A.secret_values()
    assert {"MP_API_KEY", "GITHUB_TOKEN"} <= set(secrets)
    assert (
        A.redact_command("PMG_MAPI_KEY=xyz123456 snakemake --cores 2")
        == "PMG_MAPI_KEY=<redacted> snakemake --cores 2"
    )
    assert (
        A.redact_command(["tool", "--api-key", "s3cr3t-value", "--cores", "2"])
        == "tool --api-key <redacted> --cores 2"
    )
    assert (
        A.redact_command("run_name=x OMP_NUM_THREADS=1 snakemake")
        == "run_name=x OMP_NUM_THREADS=1 snakemake"
    )
    assert FAKE_KEY not in A.redact_command(f"curl -H 'X-API-KEY: {FAKE_KEY}' https://example.org")
    cfg = {
        "data": {"mp": {"api_key": "abc", "endpoint": None, "note": f"key {FAKE_KEY}"}},
        "run_name": "x",
    }
    red = A.redact_config(cfg)
    assert red["data"]["mp"]["api_key"] == "<redacted>"
    assert red["data"]["mp"]["endpoint"] is None
    assert FAKE_KEY not in json.dumps(red)
    assert red["run_name"] == "x"


def test_provenance_record(tmp_path, monkeypatch, root):
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    cfg = {
        "run_name": "demo",
        "data": {
            "bundled": {"labels": "resources/bundled/formula_ehull_labels.csv.gz"},
            "mp": {"api_key": FAKE_KEY},
        },
    }
    out = tmp_path / "run.json"
    rec = A.write_provenance(out, cfg, root=root)
    text = out.read_text()
    assert FAKE_KEY not in text
    assert rec["config"]["data"]["mp"]["api_key"] == "<redacted>"
    assert rec["data_files"]["resources/bundled/formula_ehull_labels.csv.gz"]["sha256"]
    assert "pymatgen" in rec["package_versions"]
    assert rec["git"].get("commit") or rec["git"].get("error")
