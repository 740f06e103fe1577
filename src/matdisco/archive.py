"""A verifiable archive of one run, for papers: ``results/<run>.tar.gz`` + ``MANIFEST.json``.

``matdisco archive results/<run>`` packs the whole run folder (outputs, logs, benchmarks, the
HTML report when ``snakemake --report results/<run>/report.html`` was run first) into
``results/<run>.tar.gz``. The archive holds ``<run>/MANIFEST.json`` with

* the SHA-256 and size of every file of the run,
* the run's provenance (``provenance/run.json`` from the workflow's ``provenance`` rule:
  effective config, package versions, git commit, hashes of the data files the config names),
* the environment at archiving time (package versions, git commit and dirty files, platform),
* command lines: the ones given with ``--command`` (e.g. from ``make run``), the archive
  command itself, and, per output file, the rule that made it and its shell command from
  Snakemake's metadata (``.snakemake/metadata``) when available,

and a copy of the manifest is written next to the archive (``results/<run>.MANIFEST.json``;
publish it, or its SHA-256, separately). ``matdisco verify results/<run>.tar.gz`` re-hashes
every member against the manifest (or an external copy, ``--manifest``) and exits 1 with the
list of mismatches.

**Secrets.** Values of secret-looking environment variables (``MP_API_KEY``, ``*_TOKEN``,
``*_SECRET``, ``*_PASSWORD``, ``*_KEY``...) never enter the manifest: ``NAME=value`` pairs in
command lines and secret-named config keys are redacted, and any literal occurrence of a
secret value is replaced. Before packing, every file of the run is scanned for those values;
a hit stops the archive (exit 2) with the files named, so a leaked key is never shipped.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
import zlib
from base64 import urlsafe_b64encode
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "SECRET_NAME",
    "secret_values",
    "redact_text",
    "redact_command",
    "redact_config",
    "git_state",
    "data_file_hashes",
    "write_provenance",
    "find_secrets",
    "build_manifest",
    "create_archive",
    "verify_archive",
    "ArchiveError",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "matdisco.archive/1"
#: environment variable / config key names whose values are secrets
SECRET_NAME = re.compile(
    r"(?i)(api[_-]?key|token|secret|passw(or)?d|passphrase|credential|private[_-]?key|_key$|^key$)"
)
_REDACTED = "<redacted>"
_CHUNK = 1 << 20


class ArchiveError(RuntimeError):
    """Archiving refused (e.g. a secret found in the run); the message lists why."""


# --------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------


def secret_values(env: Mapping[str, str] | None = None, min_length: int = 6) -> dict[str, str]:
    """Secret-looking environment variables (name -> value) with values of ``min_length``+ chars."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if SECRET_NAME.search(k) and v and len(v) >= min_length}


def redact_text(text: str, secrets: Mapping[str, str] | None = None) -> str:
    """Replace every literal occurrence of a secret value by ``<redacted:NAME>``."""
    for name, value in sorted(
        (secrets if secrets is not None else secret_values()).items(), key=lambda kv: -len(kv[1])
    ):
        text = text.replace(value, f"<redacted:{name}>")
    return text


_ASSIGN = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\"[^\"]*\"|'[^']*'|\S+)")
_FLAG = re.compile(
    r"(?P<flag>--?[A-Za-z0-9_-]*(?:key|token|secret|password)[A-Za-z0-9_-]*)"
    r"(?P<sep>[ =])(?P<value>\S+)",
    re.IGNORECASE,
)


def redact_command(command: str | Sequence[str], secrets: Mapping[str, str] | None = None) -> str:
    """A command line safe to record.

    ``NAME=value`` pairs whose name looks secret (``MP_API_KEY=...``), ``--api-key VALUE`` style
    flags, and any literal secret value from the environment are replaced by ``<redacted>``.
    """
    text = command if isinstance(command, str) else shlex.join([str(c) for c in command])

    def assign(m: re.Match[str]) -> str:
        return f"{m['name']}={_REDACTED}" if SECRET_NAME.search(m["name"]) else m.group(0)

    text = _ASSIGN.sub(assign, text)
    text = _FLAG.sub(lambda m: f"{m['flag']}{m['sep']}{_REDACTED}", text)
    return redact_text(text, secrets)


def redact_config(obj: Any, secrets: Mapping[str, str] | None = None) -> Any:
    """Deep copy of a config with secret-named keys' values and secret values redacted."""
    if isinstance(obj, Mapping):
        return {
            k: (
                _REDACTED
                if SECRET_NAME.search(str(k)) and v not in (None, "")
                else redact_config(v, secrets)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact_config(v, secrets) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


def find_secrets(paths: Iterable[Path], secrets: Mapping[str, str] | None = None) -> list[str]:
    """``"<file>: <NAME>"`` for every file that contains a secret value (also inside .gz files)."""
    secrets = secret_values() if secrets is None else secrets
    needles = {name: v.encode() for name, v in secrets.items()}
    hits = []
    if not needles:
        return hits
    longest = max(len(v) for v in needles.values())
    for p in paths:
        try:
            opener = gzip.open if p.suffix == ".gz" else open
            found = _scan(opener, p, needles, longest)
        except (OSError, EOFError):  # not gzip after all, or truncated: scan the raw bytes
            found = _scan(open, p, needles, longest)
        hits += [f"{p}: {name}" for name in found]
    return hits


def _scan(opener: Any, path: Path, needles: dict[str, bytes], overlap: int) -> set[str]:
    found: set[str] = set()
    tail = b""
    with opener(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            buf = tail + block
            found |= {n for n, v in needles.items() if v in buf}
            tail = buf[-overlap:]
    return found


# --------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------


def git_state(root: str | Path = ".") -> dict[str, Any]:
    """Commit, branch and uncommitted changes of the checkout at ``root`` (empty if no git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        ).stdout

    try:
        status = [
            line
            for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
            if line.strip()
        ]
        return {
            "commit": git("rev-parse", "HEAD").strip(),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
            "dirty": bool(status),
            "modified_tracked_files": [line[3:] for line in status][:200],
            "untracked_code_files": [
                line[3:]
                for line in git(
                    "status",
                    "--porcelain",
                    "--untracked-files=all",
                    "--",
                    "src",
                    "workflow",
                    "config",
                    "Snakefile",
                ).splitlines()
                if line.startswith("??")
            ][:200],
        }
    except (OSError, subprocess.SubprocessError) as err:
        return {"commit": None, "error": f"git unavailable: {err}"}


def data_file_hashes(config: Any, root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """SHA-256 and size of every existing file whose path appears as a string in ``config``."""
    from matdisco.provenance import sha256_file

    out: dict[str, dict[str, Any]] = {}

    def walk(v: Any) -> None:
        if isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, str) and v and len(v) < 500:
            p = Path(root) / v
            if p.is_file() and v not in out:
                out[v] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}

    walk(config)
    return dict(sorted(out.items()))


def write_provenance(
    path: str | Path, config: Mapping[str, Any], *, root: str | Path = "."
) -> dict[str, Any]:
    """The run's provenance record (``provenance/run.json``), secrets redacted.

    Effective config (as Snakemake saw it, overrides included), package versions, Python
    and platform, git state, and hashes of the data files the config names.
    """
    from matdisco.provenance import code_hash, environment, package_versions
    from matdisco.store import atomic_write

    secrets = secret_values()
    rec = {
        "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": redact_config(json.loads(json.dumps(config, default=str)), secrets),
        "package_versions": package_versions(),
        "environment": environment(),
        "git": git_state(root),
        "matdisco_code_hash": code_hash("matdisco"),
        "data_files": data_file_hashes(config, root),
        "secret_env_present": sorted(secrets),  # names only, never values
    }
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(rec, indent=2, default=str) + "\n", encoding="utf-8")
    return rec


def _snakemake_records(
    files: Sequence[str], root: Path, secrets: Mapping[str, str]
) -> dict[str, Any]:
    """Rule, times and shell command of each output from Snakemake's metadata, where present."""
    meta = root / ".snakemake" / "metadata"
    if not meta.is_dir():
        return {}
    out = {}
    for rel in files:
        key = urlsafe_b64encode(rel.encode()).decode()
        p = meta / key
        if not p.is_file():
            continue
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rec = {"rule": m.get("rule")}
        for k in ("starttime", "endtime"):
            if m.get(k):
                rec[k] = datetime.fromtimestamp(float(m[k]), UTC).isoformat(timespec="seconds")
        if m.get("shellcmd"):
            rec["shellcmd"] = redact_command(str(m["shellcmd"]), secrets)
        if m.get("input"):
            rec["input"] = [redact_text(str(x), secrets) for x in m["input"]]
        out[rel] = rec
    return out


# --------------------------------------------------------------------------------------
# archive / verify
# --------------------------------------------------------------------------------------


def _hash_stream(fh: Any) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for block in iter(lambda: fh.read(_CHUNK), b""):
        h.update(block)
        n += len(block)
    return h.hexdigest(), n


def _run_files(run_dir: Path) -> list[Path]:
    files = []
    for p in sorted(run_dir.rglob("*")):
        if p.is_symlink():
            raise ArchiveError(f"{p}: symbolic links are not archived (copy the file into the run)")
        if p.is_file() and p.relative_to(run_dir).as_posix() != MANIFEST_NAME:
            files.append(p)
    return files


def build_manifest(
    run_dir: str | Path,
    *,
    commands: Sequence[str] = (),
    root: str | Path = ".",
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The manifest of a run folder (see the module docstring); secrets redacted."""
    from matdisco.provenance import code_hash, environment, package_versions

    run = Path(run_dir)
    secrets = secret_values()
    files = _run_files(run)
    entries = {}
    for p in files:
        with open(p, "rb") as fh:
            digest, size = _hash_stream(fh)
        entries[p.relative_to(run).as_posix()] = {"sha256": digest, "bytes": size}
    prov_path = run / "provenance" / "run.json"
    run_prov = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else None
    rel_to_root = [
        (p.resolve().relative_to(Path(root).resolve())).as_posix()
        for p in files
        if _is_under(p, root)
    ]
    return {
        "format": MANIFEST_FORMAT,
        "run": run.name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": entries,
        "n_files": len(entries),
        "total_bytes": sum(e["bytes"] for e in entries.values()),
        "run_provenance": redact_config(run_prov, secrets)
        if run_prov is not None
        else "missing: provenance/run.json (the workflow's provenance rule did not run)",
        "archive_environment": {
            "package_versions": package_versions(),
            "environment": environment(),
            "git": git_state(root),
            "matdisco_code_hash": code_hash("matdisco"),
        },
        "commands": {
            "recorded": [redact_command(c, secrets) for c in commands],
            "archive": redact_command(list(argv if argv is not None else sys.argv), secrets),
        },
        "snakemake_jobs": _snakemake_records(rel_to_root, Path(root), secrets),
        "secret_env_present": sorted(secrets),
    }


def _is_under(p: Path, root: str | Path) -> bool:
    try:
        p.resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def create_archive(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    commands: Sequence[str] = (),
    root: str | Path = ".",
    argv: Sequence[str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Pack ``run_dir`` into ``<run_dir>.tar.gz`` with ``<run>/MANIFEST.json``.

    Args:
        run_dir: ``results/<run>``.
        out: archive path (default ``<run_dir>.tar.gz``); the manifest copy goes next to it
            as ``<name>.MANIFEST.json``.
        commands: command lines to record (redacted).
        root: the checkout (git state, Snakemake metadata).
        argv: the archiving command line (default ``sys.argv``).

    Returns:
        (archive path, manifest).

    Raises:
        ArchiveError: the run folder is missing, or a secret value occurs in one of its files.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ArchiveError(f"{run}: no such run folder")
    files = _run_files(run)
    hits = find_secrets(files)
    if hits:
        raise ArchiveError("secret values found in the run (not archived):\n  " + "\n  ".join(hits))
    manifest = build_manifest(run, commands=commands, root=root, argv=argv)
    blob = (json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")
    if find_secrets_in_bytes(blob):
        raise ArchiveError("a secret value reached the manifest; refusing to write it")
    dest = Path(out) if out else run.parent / f"{run.name}.tar.gz"
    from matdisco.store import atomic_write

    with atomic_write(dest, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"{run.name}/{MANIFEST_NAME}")
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(blob))
            for p in files:
                tar.add(p, arcname=f"{run.name}/{p.relative_to(run).as_posix()}", recursive=False)
    side = dest.with_name(dest.name.removesuffix(".tar.gz") + ".MANIFEST.json")
    with atomic_write(side) as tmp:
        Path(tmp).write_bytes(blob)
    log.info(
        "archived %d files (%d bytes) of %s into %s",
        manifest["n_files"],
        manifest["total_bytes"],
        run,
        dest,
    )
    return dest, manifest


def find_secrets_in_bytes(blob: bytes, secrets: Mapping[str, str] | None = None) -> list[str]:
    """Names of secrets whose values occur in ``blob``."""
    secrets = secret_values() if secrets is None else secrets
    return [n for n, v in secrets.items() if v.encode() in blob]


def verify_archive(path: str | Path, manifest: str | Path | None = None) -> list[str]:
    """Problems of an archive against its manifest; an empty list means it verifies.

    Every member is re-hashed (SHA-256) and compared with the manifest: missing, extra,
    changed (hash or size) files, an unreadable or truncated archive, and (with an external
    ``manifest``) a manifest inside the archive that differs from it are all reported.
    """
    problems: list[str] = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            mf = [
                m
                for m in members
                if m.name.count("/") == 1 and m.name.endswith("/" + MANIFEST_NAME)
            ]
            if len(mf) != 1:
                return [f"{path}: no single <run>/{MANIFEST_NAME} in the archive"]
            run = mf[0].name.split("/")[0]
            inner = tar.extractfile(mf[0]).read()  # type: ignore[union-attr]
            try:
                man = json.loads(inner)
            except ValueError as err:
                return [f"{MANIFEST_NAME}: not valid JSON ({err})"]
            if manifest is not None:
                ext = Path(manifest).read_bytes()
                if ext != inner:
                    problems.append(f"{MANIFEST_NAME} in the archive differs from {manifest}")
                    man = json.loads(ext)
            if man.get("format") != MANIFEST_FORMAT:
                problems.append(f"{MANIFEST_NAME}: unknown format {man.get('format')!r}")
            expected = dict(man.get("files", {}))
            seen = set()
            for m in members:
                if m.name == mf[0].name or m.isdir():
                    continue
                if not m.name.startswith(run + "/") or not m.isfile():
                    problems.append(
                        f"{m.name}: unexpected member (not a regular file under {run}/)"
                    )
                    continue
                rel = m.name[len(run) + 1 :]
                if rel in seen:
                    problems.append(f"{rel}: duplicated in the archive")
                seen.add(rel)
                if rel not in expected:
                    problems.append(f"{rel}: in the archive but not in the manifest")
                    continue
                digest, size = _hash_stream(tar.extractfile(m))  # type: ignore[arg-type]
                want = expected[rel]
                if digest != want["sha256"]:
                    problems.append(
                        f"{rel}: SHA-256 {digest[:12]}... != manifest {want['sha256'][:12]}..."
                    )
                elif size != want["bytes"]:
                    problems.append(f"{rel}: {size} bytes != manifest {want['bytes']}")
            for rel in sorted(set(expected) - seen):
                problems.append(f"{rel}: in the manifest but missing from the archive")
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as err:
        problems.append(f"{path}: unreadable archive ({type(err).__name__}: {err})")
    return problems
