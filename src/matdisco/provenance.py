"""Provenance helpers: file hashes, package versions and code fingerprints.

:func:`script_code_hash` gives each Snakemake rule a fingerprint of the library code it runs,
passed through ``params:`` so that a change to the package code reruns exactly the stages
whose code changed (Snakemake tracks the script file itself, not the package code it imports).
The modules are found by :func:`import_closure`, a static (``ast``) walk of the imports from
the rule's script through the package, so new or split modules are picked up automatically.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

__all__ = [
    "sha256_file",
    "code_hash",
    "import_closure",
    "script_code_hash",
    "package_versions",
    "environment",
]

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


# The folder that holds the imported package (src/ in a checkout): closures are taken over the
# very files Python imports, so a copy of the tree first on PYTHONPATH is fingerprinted itself.
_DEFAULT_ROOT = Path(__file__).resolve().parents[1]

# One parse per distinct file content: {sha256 of the bytes: (imports, static __all__)}.
_Import = tuple[int, str, tuple[str, ...]]  # (relative level, module, imported names)
_PARSED: dict[str, tuple[tuple[_Import, ...], tuple[str, ...]]] = {}


def _statements(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Every statement, nested ones included (imports are statements: expressions are skipped)."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            child = getattr(node, field, None)
            if isinstance(child, list):
                stack.extend(child)


def _parse(path: Path, data: bytes) -> tuple[tuple[_Import, ...], tuple[str, ...]]:
    """Every import statement of a Python file (any depth, lazy ones included) and its __all__."""
    key = hashlib.sha256(data).hexdigest()
    hit = _PARSED.get(key)
    if hit is not None:
        return hit
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError as err:
        raise SyntaxError(f"{path}: cannot parse it to find its imports: {err}") from err
    imports: list[_Import] = []
    exported: list[str] = []
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            imports.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            if isinstance(node.value, (ast.List, ast.Tuple)):
                exported.extend(
                    e.value
                    for e in node.value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    _PARSED[key] = (tuple(imports), tuple(exported))
    return _PARSED[key]


def _module_file(root: Path, name: str) -> Path | None:
    """The source file of a dotted module name below root (package -> its __init__.py)."""
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_name(base.name + ".py").is_file():
        return base.with_name(base.name + ".py")
    return None


def _closure(script: Path, package: str, root: Path) -> dict[Path, bytes]:
    """{file: bytes} of every module of package that script imports, directly or not."""
    if not script.is_file():
        raise FileNotFoundError(f"workflow script {script} does not exist")
    files: dict[str, tuple[Path, bytes]] = {}  # module name -> (file, bytes)
    todo: list[str] = []

    def add(name: str, importer: Path) -> None:
        """Queue a module and each package above it (Python runs their __init__ first)."""
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in files:
                continue
            path = _module_file(root, mod)
            if path is None:
                raise ModuleNotFoundError(
                    f"{importer} imports {name}, but {mod} is not a module of {root / package}"
                )
            files[mod] = (path, path.read_bytes())
            todo.append(mod)

    def visit(importer: Path, data: bytes, module: str | None) -> None:
        """Follow the package-internal imports of one file (module None: the script)."""
        imports, _ = _parse(importer, data)
        for level, target, names in imports:
            if level:
                if module is None:
                    continue  # a relative import in a script is not a package import
                anchor = module.split(".")
                if importer.name != "__init__.py":
                    anchor = anchor[:-1]  # a plain module: relative to its package
                anchor = anchor[: len(anchor) - (level - 1)]
                if not anchor:
                    raise ImportError(f"{importer}: relative import beyond the top package")
                target = ".".join(anchor + ([target] if target else []))
            if target != package and not target.startswith(package + "."):
                continue
            add(target, importer)
            for name in names:  # from pkg import sub: sub may be a submodule
                subs = files[target][1] if name == "*" else b""
                candidates = _parse(files[target][0], subs)[1] if name == "*" else (name,)
                for sub in candidates:
                    if _module_file(root, f"{target}.{sub}") is not None:
                        add(f"{target}.{sub}", importer)

    visit(script, script.read_bytes(), None)
    while todo:
        mod = todo.pop()
        path, data = files[mod]
        visit(path, data, mod)
    return {path: data for path, data in files.values()}


def import_closure(
    script: str | Path, package: str = "matdisco", root: str | Path | None = None
) -> list[Path]:
    """The source files of every ``package`` module a script imports, directly or indirectly.

    A static walk (``ast``, nothing is imported) from the script through each module it reaches:
    ``import p.a.b``, ``from p.a import b`` (``b`` a submodule or a name), relative imports
    inside the package, ``from p.a import *`` (submodules named in a literal ``__all__``),
    imports inside functions, and the ``__init__.py`` of every package on the way.

    Args:
        script: a Python file, e.g. ``workflow/scripts/generate_gan.py``.
        package: the top-level package whose modules are followed; others are ignored.
        root: the folder holding the package (default: the one the imported matdisco is in).

    Returns:
        The files, sorted.

    Raises:
        FileNotFoundError: the script does not exist.
        ModuleNotFoundError: a file imports a module of the package that does not exist.
        SyntaxError: a file cannot be parsed (the message names it).
    """
    root = Path(root) if root is not None else _DEFAULT_ROOT
    return sorted(_closure(Path(script), package, root))


def script_code_hash(
    script: str | Path, package: str = "matdisco", root: str | Path | None = None
) -> str:
    """Short SHA-256 over the files of :func:`import_closure` (paths relative to root, sorted).

    The script itself is not part of it: Snakemake already reruns a rule whose script changed.

    Args:
        script: the rule's script.
        package: the top-level package whose modules are followed.
        root: the folder holding the package (default: the one the imported matdisco is in).

    Returns:
        16 hex characters; changes whenever a file of the closure (or the set of files) changes.
    """
    root = Path(root) if root is not None else _DEFAULT_ROOT
    files = _closure(Path(script), package, root)
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(files[path]).digest())
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
