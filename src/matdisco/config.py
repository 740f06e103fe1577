"""Configuration validation with messages that name the offending key.

The workflow calls :func:`validate_config` before any job is scheduled. Errors are collected
(all of them, not just the first) and raised as one :class:`ConfigError` whose message lists
``<dotted.key>: <problem> (allowed: <what is allowed>)`` per line.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = [
    "ConfigError",
    "load_schema",
    "NULL_WORDS",
    "coerce_string",
    "validate_config",
    "load_config",
    "config_hash",
]


class ConfigError(ValueError):
    """Raised when a configuration does not satisfy the schema."""


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) JSON-Schema file."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _dotted(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return node
    return schema


def _allowed(schema: dict[str, Any], root: dict[str, Any]) -> str:
    """Describe in words what a (sub)schema allows."""
    schema = _resolve(schema, root)
    bits: list[str] = []
    if "enum" in schema:
        values = schema["enum"]
        shown = ", ".join(map(str, values[:12])) + (", ..." if len(values) > 12 else "")
        bits.append(f"one of [{shown}]")
    if "type" in schema:
        t = schema["type"]
        bits.append("type " + (" or ".join(t) if isinstance(t, list) else t))
    for key, word in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            bits.append(f"{word} {schema[key]}")
    if "minItems" in schema or "maxItems" in schema:
        bits.append(f"{schema.get('minItems', 0)}..{schema.get('maxItems', 'any')} items")
    if "pattern" in schema:
        bits.append(f"matching {schema['pattern']}")
    if "properties" in schema and schema.get("additionalProperties") is False:
        bits.append("keys: " + ", ".join(schema["properties"]))
    return "; ".join(bits) if bits else "see workflow/schemas/config.schema.yaml"


def _message(err: jsonschema.ValidationError, root: dict[str, Any]) -> str:
    key = _dotted(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(err.schema.get("properties", {}))
        lines = []
        for name in extra:
            full = f"{key}.{name}" if err.absolute_path else name
            lines.append(f"{full}: unknown key (allowed keys here: {allowed})")
        return "\n".join(lines)
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        full = f"{key}.{missing}" if err.absolute_path else missing
        return f"{full}: required key is missing"
    if err.validator == "propertyNames":
        allowed = _allowed(err.schema["propertyNames"], root)
        return f"{key}: key {err.instance!r} is not allowed ({allowed})"
    return f"{key}: {err.instance!r} is not valid ({_allowed(err.schema, root)})"


def _fill_defaults(config: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> None:
    props = schema.get("properties", {})
    for name, sub in props.items():
        sub = _resolve(sub, root)
        if name not in config and "default" in sub:
            config[name] = copy.deepcopy(sub["default"])
        if isinstance(config.get(name), dict) and sub.get("type") == "object":
            _fill_defaults(config[name], sub, root)


NULL_WORDS = frozenset({"null", "Null", "NULL", "~", "none", "None"})
_TRUE_WORDS = frozenset({"true", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "no", "off"})
_INT = re.compile(r"^[-+]?[0-9]+$")


def coerce_string(text: str, types: Sequence[str]) -> Any:
    """Read a string as the first JSON-schema type of ``types`` it spells.

    Snakemake's ``--config key=value`` parses nested values (``key={a: 0.5}``) with YAML's
    BaseLoader, so every nested scalar arrives as a string. This turns such a string back into
    the declared type: ``null`` (``null``, ``~``, ``none``), ``boolean`` (``true``/``false``,
    ``yes``/``no``, ``on``/``off``, any case), ``integer`` (``"3"``; ``"1e3"`` when integral) or
    ``number`` (``"0.5"``, ``"1e-4"``; finite only). ``string`` keeps the text.

    Args:
        text: the string value.
        types: JSON-schema type names allowed at this key, tried in this order (``string`` last
            whatever its position, so that ``"null"`` of a nullable path still means null).

    Returns:
        The converted value.

    Raises:
        ValueError: when the text spells none of the types.
    """
    ordered = [t for t in ("null", "boolean", "integer", "number") if t in types]
    for t in ordered:
        word = text.strip()
        if t == "null" and word in NULL_WORDS:
            return None
        if t == "boolean" and word.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return word.lower() in _TRUE_WORDS
        if t == "integer":
            if _INT.match(word):
                return int(word)
            try:
                as_float = float(word)
            except ValueError:
                continue
            if math.isfinite(as_float) and as_float.is_integer():
                return int(as_float)
        if t == "number":
            if _INT.match(word):
                return int(word)
            try:
                as_float = float(word)
            except ValueError:
                continue
            if math.isfinite(as_float):
                return as_float
    if "string" in types:
        return text
    raise ValueError(f"cannot read the string {text!r} as {' or '.join(types)}")


def _schema_types(schema: dict[str, Any]) -> list[str]:
    """The JSON type names a schema node allows (from ``type``, else from its ``enum``)."""
    t = schema.get("type")
    if t is not None:
        return [t] if isinstance(t, str) else list(t)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return sorted({names[type(v)] for v in schema.get("enum", []) if type(v) in names})


def _coerce_strings(
    node: Any,
    schema: dict[str, Any],
    root: dict[str, Any],
    path: tuple[Any, ...],
    problems: list[str],
) -> Any:
    """Convert string scalars to the schema's declared type, walking ``node`` and ``schema``.

    Strings that spell none of the allowed types are left as they are (the validator then
    reports them by key) and also listed in ``problems`` with the reason.
    """
    schema = _resolve(schema, root)
    if isinstance(node, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in node.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if isinstance(sub, dict):
                node[key] = _coerce_strings(value, sub, root, (*path, key), problems)
        return node
    if isinstance(node, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, value in enumerate(node):
                node[i] = _coerce_strings(value, items, root, (*path, i), problems)
        return node
    if not isinstance(node, str):
        return node
    types = _schema_types(schema)
    enum = schema.get("enum")
    if enum is not None:
        if node in enum:
            return node
        try:
            value = coerce_string(node, [t for t in types if t != "string"])
        except ValueError:
            return node  # the validator reports the value that is not one of the enum
        return value if value in enum else node
    if "string" in types or not types:
        return None if "null" in types and node.strip() in NULL_WORDS else node
    try:
        return coerce_string(node, types)
    except ValueError as err:
        problems.append(f"{_dotted(path)}: {err} (allowed: {_allowed(schema, root)})")
        return node


def _cross_checks(config: dict[str, Any]) -> list[str]:
    problems = []
    data = config.get("data", {})
    if data.get("source") == "cif_dir" and not data.get("cif_dir", {}).get("path"):
        problems.append(
            "data.cif_dir.path: required when data.source is cif_dir (a folder of CIFs)"
        )
    target = config.get("target", {})
    elements = set(target.get("elements", []))
    for el, rng in (target.get("oxidation_states") or {}).items():
        if el not in elements:
            problems.append(
                f"target.oxidation_states.{el}: element not in target.elements "
                f"(allowed: {sorted(elements)})"
            )
        elif len(rng) == 2 and rng[0] > rng[1]:
            problems.append(f"target.oxidation_states.{el}: {rng} has min > max")
    features = config.get("features", {})
    if not features.get("elmd_table"):
        # the embedding tables live in the ElMD file: fail here, not in the rule that needs it
        gap = config.get("screen", {}).get("bandgap", {})
        for key, value in (
            ("features.embeddings", features.get("embeddings")),
            ("screen.bandgap.embeddings", gap.get("embeddings")),
        ):
            if value:
                problems.append(
                    f"{key}: {list(value)} needs features.elmd_table (the file with the "
                    "embedding tables); set it or use []"
                )
    return problems


def validate_config(config: dict[str, Any], schema: dict[str, Any] | str | Path) -> dict[str, Any]:
    """Validate ``config`` and fill in schema defaults, in place.

    String scalars where the schema declares another type (what ``snakemake --config
    'section={key: 0.5}'`` delivers) are first converted to that type, in place (see
    :func:`coerce_string`); a string that cannot be converted is an error naming its key.

    Args:
        config: the configuration mapping (as Snakemake loads it).
        schema: the schema mapping or the path of its YAML file.

    Returns:
        The same mapping, with defaults filled in.

    Raises:
        ConfigError: listing every problem, one per line, each naming its dotted key.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    not_converted: list[str] = []
    _coerce_strings(config, schema, schema, (), not_converted)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    messages = [_message(e, schema) for e in errors]
    bad_keys = {m.split(":", 1)[0] for m in not_converted}
    messages = not_converted + [m for m in messages if m.split(":", 1)[0] not in bad_keys]
    if not messages:
        _fill_defaults(config, schema, schema)
        messages = _cross_checks(config)
    if messages:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages))
    return config


def deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Layer ``new`` over ``base`` in place, key by key (as Snakemake layers --configfile)."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def load_config(path: str | Path, schema: dict[str, Any] | str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    return validate_config(config, schema)


def config_hash(obj: Any) -> str:
    """A stable short SHA-256 of a JSON-serialisable config (slice)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
