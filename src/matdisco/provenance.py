"""Provenance helpers: file hashes, package versions and code fingerprints.

:func:`code_hash` gives each Snakemake rule a fingerprint of the library modules it runs,
passed through ``params:`` so that a change to the package code reruns exactly the stages
whose code changed (Snakemake itself does not track imported package code).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

__all__ = ["sha256_file", "code_hash", "package_versions", "environment"]

_PACKAGES = (
    "matdisco",
    "numpy",
    "pandas",
    "h5py",
    "pymatgen",
    "pymatgen-core",
    "scikit-learn",
    "lightgbm",
    "torch",
    "chgnet",
    "ase",
    "ElMD",
    "mp-api",
    "snakemake",
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _module_files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(name)
    origin = Path(spec.origin)
    if origin.name == "__init__.py":  # a package: every .py below it
        return sorted(origin.parent.rglob("*.py"))
    return [origin]


@cache
def code_hash(*modules: str) -> str:
    """Short SHA-256 over the source files of the given modules/packages.

    Args:
        *modules: dotted module or package names, e.g. ``"matdisco.store"``.

    Returns:
        16 hex characters; changes whenever any of those source files changes.
    """
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        for path in _module_files(name):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results (absent ones omitted)."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, str]:
    """Python and platform facts for provenance records."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
