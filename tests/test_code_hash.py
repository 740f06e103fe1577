"""Code fingerprints of the rules: each rule's script import closure within matdisco.

Each rule passes ``code=script_code("../scripts/<rule>.py")`` through ``params:``; the hash covers
every matdisco module the script imports, directly or not (:func:`import_closure`, a static walk).
These tests check the walk on the real scripts and on a synthetic package, that an edit to any
module of a rule's closure changes that rule's hash (and an edit elsewhere does not), and that
every rule's ``code=`` names its own script, whose name is the rule's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from matdisco.provenance import import_closure, script_code_hash

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SCRIPTS = sorted((ROOT / "workflow" / "scripts").glob("*.py"))
RULES_DIR = ROOT / "workflow" / "rules"


def rule_scripts() -> dict[str, dict[str, str | None]]:
    """{rule: {"script": its script: path, "code": the argument of its script_code(...)}}."""
    rules: dict[str, dict[str, str | None]] = {}
    for smk in sorted(RULES_DIR.glob("*.smk")):
        # rules may sit inside an `if` block (indented), e.g. gap_embeddings
        blocks = re.split(r"^(?=[ \t]*(?:rule|checkpoint) \w+:)", smk.read_text(), flags=re.M)
        for block in blocks:
            m = re.match(r"[ \t]*(?:rule|checkpoint) (\w+):", block)
            if not m:
                continue
            script = re.search(r"^\s+script:\s*\n\s+\"([^\"]+)\"", block, flags=re.M)
            code = re.search(r"^\s+code=script_code\(\"([^\"]+)\"\)", block, flags=re.M)
            if script:
                rules[m.group(1)] = {"script": script.group(1), "code": code and code.group(1)}
    return rules


RULES = rule_scripts()


def _file_of(root: Path, dotted: str) -> Path | None:
    """The file of the longest module prefix of a dotted name (names may end in a function)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:n])
        for cand in (base / "__init__.py", base.with_name(base.name + ".py")):
            if cand.is_file():
                return cand
    return None


# --- the closure on the real scripts -------------------------------------------------------


def test_generate_gan_closure_includes_targets():
    closure = import_closure(ROOT / "workflow/scripts/generate_gan.py")
    rel = {p.relative_to(SRC).as_posix() for p in closure}
    assert "matdisco/generate/targets.py" in rel
    assert {"matdisco/generate/gan/sample.py", "matdisco/generate/pointcloud.py"} <= rel
    assert {"matdisco/__init__.py", "matdisco/generate/__init__.py"} <= rel  # packages on the way


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_closure_holds_the_modules_the_script_names(script):
    """Every matdisco module the script text imports or points to ("see matdisco.x") is in it."""
    closure = set(import_closure(script))
    assert closure, f"{script.name}: empty matdisco import closure"
    assert all(p.is_relative_to(SRC / "matdisco") for p in closure)
    text = script.read_text()
    named = re.findall(r"^\s*from (matdisco[\w.]*) import", text, flags=re.M)
    named += re.findall(r"^\s*import (matdisco[\w.]*)", text, flags=re.M)
    named += re.findall(r"see (matdisco\.[\w.]*\w)", text)
    assert named, f"{script.name} names no matdisco module"
    for dotted in named:
        path = _file_of(SRC, dotted)
        assert path is not None, f"{script.name}: {dotted} is not a module of matdisco"
        assert path in closure, f"{script.name}: {path.relative_to(SRC)} missing from its closure"


# --- the closure on a synthetic package ----------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_synthetic_chain_and_import_forms(tmp_path):
    """a -> b -> c (absolute, from-import of a submodule, relative) plus the other import forms."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import os\nfrom pkg.sub import b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "from .deep.c import thing\n",
            "pkg/sub/deep/__init__.py": "from ..e import E\n",  # relative, from a package init
            "pkg/sub/deep/c.py": "def thing():\n    from pkg import lazy  # inside a function\n",
            "pkg/sub/e.py": "E = 1\n",
            "pkg/lazy.py": "from pkg.star import *\n",
            "pkg/star/__init__.py": "__all__ = ['s1', 'NAME']\nNAME = 1\n",
            "pkg/star/s1.py": "",
            "pkg/star/s2.py": "",  # not in __all__: not imported by the star
            "pkg/unused.py": "",
            "script.py": "import numpy\nimport pkg.a\n",
        },
    )
    closure = {
        p.relative_to(tmp_path).as_posix()
        for p in import_closure(tmp_path / "script.py", "pkg", tmp_path)
    }
    assert closure == {
        "pkg/__init__.py",
        "pkg/a.py",
        "pkg/sub/__init__.py",
        "pkg/sub/b.py",
        "pkg/sub/deep/__init__.py",
        "pkg/sub/deep/c.py",
        "pkg/sub/e.py",
        "pkg/lazy.py",
        "pkg/star/__init__.py",
        "pkg/star/s1.py",
    }
    h = script_code_hash(tmp_path / "script.py", "pkg", tmp_path)
    (tmp_path / "pkg/sub/deep/c.py").write_text(
        (tmp_path / "pkg/sub/deep/c.py").read_text() + "# x\n"
    )
    assert script_code_hash(tmp_path / "script.py", "pkg", tmp_path) != h, "edit at the chain's end"
    h = script_code_hash(tmp_path / "script.py", "pkg", tmp_path)
    (tmp_path / "pkg/unused.py").write_text("# edited\n")
    (tmp_path / "pkg/star/s2.py").write_text("# edited\n")
    assert script_code_hash(tmp_path / "script.py", "pkg", tmp_path) == h, (
        "edit outside the closure"
    )
    # a new module is picked up as soon as something imports it
    _write(tmp_path, {"pkg/new.py": "X = 1\n"})
    (tmp_path / "pkg/a.py").write_text("import os\nfrom pkg.sub import b\nfrom pkg import new\n")
    assert tmp_path / "pkg/new.py" in import_closure(tmp_path / "script.py", "pkg", tmp_path)


def test_a_module_split_into_a_package_is_followed(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": "", "script.py": "from pkg.m import f\n"})
    assert {p.name for p in import_closure(tmp_path / "script.py", "pkg", tmp_path)} == {
        "__init__.py",
        "m.py",
    }
    (tmp_path / "pkg/m.py").unlink()
    _write(
        tmp_path,
        {"pkg/m/__init__.py": "from pkg.m.impl import f\n", "pkg/m/impl.py": "def f(): ...\n"},
    )
    rel = {
        p.relative_to(tmp_path).as_posix()
        for p in import_closure(tmp_path / "script.py", "pkg", tmp_path)
    }
    assert rel == {"pkg/__init__.py", "pkg/m/__init__.py", "pkg/m/impl.py"}


def test_missing_module_and_script_fail_with_their_names(tmp_path):
    _write(
        tmp_path,
        {"pkg/__init__.py": "", "pkg/a.py": "import pkg.gone\n", "script.py": "import pkg.a\n"},
    )
    with pytest.raises(ModuleNotFoundError, match=r"a\.py imports pkg\.gone"):
        import_closure(tmp_path / "script.py", "pkg", tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.py"):
        import_closure(tmp_path / "nope.py", "pkg", tmp_path)
    (tmp_path / "pkg/a.py").write_text("def broken(:\n")
    with pytest.raises(SyntaxError, match=r"a\.py"):
        import_closure(tmp_path / "script.py", "pkg", tmp_path)


# --- the rules -----------------------------------------------------------------------------


def test_every_rule_script_is_fingerprinted_and_named_after_its_rule():
    assert len(RULES) >= 15, f"rule parsing found only {sorted(RULES)}"
    for rule, info in RULES.items():
        assert info["code"] == info["script"], (
            f"rule {rule}: params code=script_code(...) must name its script {info['script']}, "
            f"got {info['code']}"
        )
        assert Path(info["script"]).stem == rule, f"rule {rule} runs {info['script']}"
    used = {Path(i["script"]).name for i in RULES.values()}
    unused = sorted(s.name for s in SCRIPTS if s.name not in used)
    assert not unused, f"workflow/scripts not run by any rule: {unused}"


@pytest.fixture(scope="module")
def src_copy(tmp_path_factory) -> Path:
    """A private copy of src/ whose modules the edits below may touch."""
    dst = tmp_path_factory.mktemp("code_hash") / "src"
    shutil.copytree(
        SRC / "matdisco", dst / "matdisco", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dst


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_hash_follows_exactly_its_closure(rule, src_copy):
    script = (RULES_DIR / RULES[rule]["script"]).resolve()
    base = script_code_hash(script, root=src_copy)
    closure = set(import_closure(script, root=src_copy))
    outside = sorted(set((src_copy / "matdisco").rglob("*.py")) - closure)
    assert closure
    for path, should_change in [
        *((p, True) for p in sorted(closure)),
        *((p, False) for p in outside),
    ]:
        original = path.read_bytes()
        try:
            path.write_bytes(original + b"\n# edited by tests/test_code_hash.py\n")
            edited = script_code_hash(script, root=src_copy)
        finally:
            path.write_bytes(original)
        rel = path.relative_to(src_copy)
        if should_change:
            assert edited != base, (
                f"rule {rule}: editing {rel} (in its closure) keeps its code hash"
            )
        else:
            assert edited == base, (
                f"rule {rule}: editing {rel} (outside its closure) changes its hash"
            )
    assert script_code_hash(script, root=src_copy) == base
