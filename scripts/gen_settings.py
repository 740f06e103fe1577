"""Draft the typed settings dataclasses of ``matdisco.settings`` from the config schema.

Usage::

    python scripts/gen_settings.py            # rewrites src/matdisco/settings/<group>.py

The generated modules are ordinary, reviewed source files: after a schema change either
rerun this script or edit both sides by hand. ``tests/test_settings.py`` fails whenever the
schema and the dataclasses disagree (keys, types, enum members or defaults).
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
OUT = ROOT / "src" / "matdisco" / "settings"

# module -> the top-level config sections it holds
GROUPS = {
    "core": ["target", "data"],
    "discovery": ["recommender", "propose", "features", "classifier"],
    "generators": ["generate", "templates", "gan"],
    "candidates": ["pool", "relax", "ehull"],
    "screen": ["screen"],
}
TITLES = {
    "core": "the target chemical space and the data sources",
    "discovery": "composition discovery (recommender, proposals, features, classifier)",
    "generators": "the structure generators (target compositions, templates, WGAN-GP)",
    "candidates": "the candidate pool, relaxation and energy above hull",
    "screen": "the screen of relaxed candidates",
}
WORDS = {
    "mp": "MP",
    "cif_dir": "CifDir",
    "lightgbm": "LightGBM",
    "gan": "GAN",
    "hse_mapping": "HSEMapping",
    "xrd": "XRD",
    "vasp": "VASP",
    "gpaw": "GPAW",
    "chgnet": "CHGNet",
    "sevennet": "SevenNet",
    "ehull": "EHull",
    "templates": "Template",
}
TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}


def camel(word: str) -> str:
    """Class-name part of one config key."""
    return WORDS.get(word) or "".join(p.capitalize() for p in word.split("_"))


def resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (the same rule the settings check uses)."""
    from matdisco.settings._base import _resolve

    return _resolve(node, root)


def is_section(node: dict[str, Any]) -> bool:
    """An object with named properties becomes a nested dataclass."""
    return "properties" in node


def hint(node: dict[str, Any], root: dict[str, Any], nested: str | None = None) -> str:
    """Python type hint of a schema node."""
    node = resolve(node, root)
    if nested:
        return nested
    types = node.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    parts: list[str] = []
    if "enum" in node:
        if len(node["enum"]) > 12:  # element symbols (YAML 1.1 reads the symbol No as false)
            return "str"
        strings = [v for v in node["enum"] if isinstance(v, str)]
        if strings:
            parts.append("Literal[" + ", ".join(quote(s) for s in strings) + "]")
        if any(isinstance(v, bool) for v in node["enum"]):
            parts.append("bool")
        return " | ".join(parts)
    for t in types:
        if t == "array":
            parts.append(f"tuple[{hint(node.get('items', {}), root) or 'Any'}, ...]")
        elif t == "object":
            extra = node.get("additionalProperties")
            value = hint(extra, root) if isinstance(extra, dict) else "Any"
            parts.append(f"dict[str, {value or 'Any'}]")
        else:
            parts.append(TYPES[t])
    return " | ".join(parts)


def quote(text: str) -> str:
    """A double-quoted Python string literal."""
    return json.dumps(text, ensure_ascii=False)


def literal(value: Any, number: bool = False) -> str:
    """Python source of a default value (lists become tuples; ints of number fields floats)."""
    if isinstance(value, str):
        return quote(value)
    if number and isinstance(value, int) and not isinstance(value, bool):
        return repr(float(value))
    if isinstance(value, list):
        inner = ", ".join(literal(v, number) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def number_of(node: dict[str, Any], root: dict[str, Any]) -> bool:
    """Whether a field (or its array items) is a JSON number rather than an integer."""
    node = resolve(node, root)
    types = node.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "array" in types:
        return number_of(node.get("items", {}), root)
    return "number" in types and "integer" not in types


def wrap(text: str, indent: str, first: str) -> list[str]:
    """Wrap a description for a Google-style Attributes entry."""
    text = " ".join(str(text).split())
    lines = textwrap.wrap(
        first + text, 100, initial_indent=indent, subsequent_indent=indent + "    "
    )
    return lines


def emit(path: list[str], node: dict[str, Any], root: dict[str, Any], out: list[str]) -> str:
    """Write the dataclass of ``node`` (children first) and return its name."""
    stem = "".join(camel(p) for p in path)
    name = f"{stem}Settings"
    fields: list[str] = []
    attrs: list[str] = []
    for key, sub in node["properties"].items():
        sub = resolve(sub, root)
        desc = sub.get("description", "")
        if is_section(sub):
            child = emit([*path, key], sub, root, out)
            fields.append(f"    {key}: {child} = field(default_factory={child})")
            desc = desc or f"``{'.'.join([*path, key])}``"
        else:
            h = hint(sub, root)
            default = sub["default"]
            if isinstance(default, dict):
                fields.append(f"    {key}: {h} = field(default_factory=dict)")
                if default:
                    sys.exit(f"{'.'.join([*path, key])}: non-empty mapping default unsupported")
            else:
                number = number_of(sub, root)
                fields.append(f"    {key}: {h} = {literal(default, number)}")
        attrs.extend(wrap(desc or "(no description in the schema)", " " * 8, f"{key}: "))
    dotted = ".".join(path)
    summary = " ".join(str(node.get("description", "")).split())
    summary = summary if not summary or summary.endswith(".") else summary + "."
    head = f"``{dotted}``: {summary}" if summary else f"Settings of config section ``{dotted}``."
    doc = textwrap.wrap(head, 100, initial_indent='    """', subsequent_indent="    ")
    block = ["", "", "@dataclass(frozen=True)", f"class {name}(SettingsBase):", *doc, ""]
    block += ["    Attributes:", *attrs, '    """', "", f'    section: ClassVar[str] = "{dotted}"']
    block += ["", *[fit(line) for line in fields]]
    out.extend(block)
    return name


def fit(line: str) -> str:
    """Break a field line longer than 100 characters inside parentheses."""
    if len(line) <= 100:
        return line
    head, value = line.split(" = ", 1)
    if value.startswith("field("):
        return f"{head} = field(\n        {value[6:-1]}\n    )"
    if value.startswith('"'):
        words = textwrap.wrap(json.loads(value), 86, drop_whitespace=False)
        return f"{head} = (\n" + "\n".join(f"        {quote(w)}" for w in words) + "\n    )"
    if value.startswith("("):
        inner = textwrap.wrap(value[1:-1], 88)
        return f"{head} = (\n" + "\n".join(f"        {w}" for w in inner) + "\n    )"
    return line


def main() -> None:
    """Write one module per group."""
    with open(SCHEMA, encoding="utf-8") as fh:
        root = yaml.safe_load(fh)
    for module, sections in GROUPS.items():
        out: list[str] = []
        for sec in sections:
            emit([sec], resolve(root["properties"][sec], root), root, out)
        names = [ln.split()[1].split("(")[0] for ln in out if ln.startswith("class ")]
        header = [
            f'"""Typed settings of {TITLES[module]}.',
            "",
            "Drafted from workflow/schemas/config.schema.yaml by scripts/gen_settings.py; "
            "the schema",
            "and these classes are kept in agreement by tests/test_settings.py.",
            '"""',
            "",
            "from __future__ import annotations",
            "",
            "from dataclasses import dataclass, field",
            "from typing import Any, ClassVar, Literal",
            "",
            "from matdisco.settings._base import SettingsBase",
            "",
            "__all__ = [",
            *[f'    "{n}",' for n in names],
            "]",
        ]
        text = "\n".join(header + out) + "\n"
        if "Any" not in "\n".join(out):
            text = text.replace("from typing import Any, ClassVar", "from typing import ClassVar")
        if "Literal[" not in "\n".join(out):
            text = text.replace(", Literal\n", "\n")
        (OUT / f"{module}.py").write_text(text, encoding="utf-8")
        print(f"wrote {OUT / module}.py ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    main()
