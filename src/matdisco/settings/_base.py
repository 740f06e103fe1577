"""Shared machinery of the settings dataclasses: build, convert, check against the schema."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from matdisco.config import NULL_WORDS, ConfigError, coerce_string

__all__ = ["SettingsError", "SettingsBase", "schema_mismatches"]

S = TypeVar("S", bound="SettingsBase")

_SCHEMA_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


class SettingsError(ConfigError):
    """A config section cannot be turned into its settings dataclass; one problem per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings:\n  " + "\n  ".join(self.problems))


def _key(section: str, name: Any) -> str:
    return f"{section}.{name}" if section else str(name)


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _schema_types_of(hint: Any) -> set[str]:
    """JSON-schema type names a Python type hint stands for (empty for ``Any``)."""
    if hint is Any:
        return set()
    if _is_union(hint):
        return set().union(*(_schema_types_of(a) for a in get_args(hint)))
    origin = get_origin(hint)
    if origin is Literal:
        return {_SCHEMA_TYPE[type(v)] for v in get_args(hint)}
    if origin is tuple:
        return {"array"}
    if origin is dict or (isinstance(hint, type) and issubclass(hint, SettingsBase)):
        return {"object"}
    return {_SCHEMA_TYPE[hint]}


def _convert(value: Any, hint: Any, key: str, strict: bool) -> Any:
    """``value`` as ``hint``; strings are read as numbers / booleans / null unless ``strict``.

    Raises:
        ValueError: with a message naming what was expected (the caller adds the key).
    """
    if hint is Any:
        return value
    if _is_union(hint):
        args = get_args(hint)
        nullable = type(None) in args
        if nullable and not strict and isinstance(value, str) and value.strip() in NULL_WORDS:
            return None
        for arg in args:  # an exact match wins (a str field keeps "0.5")
            try:
                return _convert(value, arg, key, strict=True)
            except ValueError:
                pass
        if not strict:
            for arg in args:
                try:
                    return _convert(value, arg, key, strict=False)
                except ValueError:
                    pass
        raise ValueError(_expected(hint))
    origin = get_origin(hint)
    if origin is Literal:
        allowed = get_args(hint)
        if isinstance(value, str) and value in allowed:
            return value
        raise ValueError(_expected(hint))
    if origin is tuple:
        if isinstance(value, (list, tuple)):
            (item,) = [a for a in get_args(hint) if a is not Ellipsis]
            return tuple(_convert_key(v, item, f"{key}.{i}", strict) for i, v in enumerate(value))
        raise ValueError("a list")
    if origin is dict:
        if isinstance(value, Mapping):
            _, item = get_args(hint)
            return {str(k): _convert_key(v, item, f"{key}.{k}", strict) for k, v in value.items()}
        raise ValueError("a mapping")
    if isinstance(hint, type) and issubclass(hint, SettingsBase):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return hint.from_config(value)
        raise ValueError("a mapping")
    if isinstance(value, str) and not strict and hint is not str:
        try:
            value = coerce_string(value, [_SCHEMA_TYPE[hint]])
        except ValueError:
            raise ValueError(_expected(hint)) from None
    if hint is type(None) and value is None:
        return None
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise ValueError(_expected(hint))


def _convert_key(value: Any, hint: Any, key: str, strict: bool) -> Any:
    """:func:`_convert` for an item of a list / mapping (its own key in the message)."""
    try:
        return _convert(value, hint, key, strict)
    except ValueError as err:
        raise _ItemError(key, value, str(err)) from None


class _ItemError(ValueError):
    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(expected)


def _expected(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_expected(a) for a in get_args(hint))
    if get_origin(hint) is Literal:
        return "one of [" + ", ".join(map(str, get_args(hint))) + "]"
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return names.get(hint, "null" if hint is type(None) else str(hint))


def _plain(value: Any) -> Any:
    """JSON-like copy: settings -> dict, tuple -> list."""
    if isinstance(value, SettingsBase):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class SettingsBase:
    """Mixin of the frozen settings dataclasses (``from_config`` / ``to_dict``).

    Subclasses set ``section``, the dotted config key they are built from, which every error
    message starts with.
    """

    section: ClassVar[str] = ""

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Resolved type hints of the dataclass fields."""
        hints = get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_config(cls: type[S], mapping: Mapping[str, Any] | None) -> S:
        """Build the settings from a (validated) config section.

        Missing keys keep their defaults (= the schema defaults). Strings are read as the
        declared type where it is not a string (``"0.5"`` -> 0.5, ``"true"`` -> True, ``"null"``
        -> None), as ``snakemake --config 'section={key: 0.5}'`` delivers them.

        Args:
            mapping: the config section, e.g. ``config["classifier"]``; None = all defaults.

        Returns:
            The frozen settings.

        Raises:
            SettingsError: listing every unknown key and every value of the wrong type by its
                dotted key.
        """
        mapping = {} if mapping is None else mapping
        if not isinstance(mapping, Mapping):
            where = cls.section or "<top level>"
            raise SettingsError([f"{where}: expected a mapping, got {mapping!r}"])
        hints = cls.field_types()
        problems: list[str] = []
        allowed = ", ".join(hints)
        for name in mapping:
            if name not in hints:
                key = _key(cls.section, name)
                problems.append(f"{key}: unknown key (allowed keys here: {allowed})")
        values: dict[str, Any] = {}
        for name, hint in hints.items():
            if name not in mapping:
                continue
            key = _key(cls.section, name)
            try:
                values[name] = _convert(mapping[name], hint, key, strict=False)
            except SettingsError as err:
                problems.extend(err.problems)
            except _ItemError as err:
                problems.append(f"{err.key}: {err.value!r} is not {err.expected}")
            except ValueError as err:
                problems.append(f"{key}: {mapping[name]!r} is not {err}")
        if problems:
            raise SettingsError(problems)
        return cls(**values)

    @classmethod
    def coerce(cls: type[S], settings: S | Mapping[str, Any] | None) -> S:
        """``settings`` itself if it is already this class, else :meth:`from_config` of it.

        The one convenience for library functions that accept ``XSettings | Mapping | None``.
        """
        return settings if isinstance(settings, cls) else cls.from_config(settings)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) for Snakemake params and provenance records."""
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        return {name: _plain(getattr(self, name)) for name in names}


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _same(a: Any, b: Any) -> bool:
    """Equal, with booleans never equal to numbers and ints equal to floats."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        for part in ref[2:].split("/"):
            root = root[part]
        return root
    return node


def _literal_values(hint: Any) -> set[Any] | None:
    """Allowed values of a hint with a Literal (True/False added for bool); None without one."""
    args = get_args(hint) if _is_union(hint) else (hint,)
    lits = [a for a in args if get_origin(a) is Literal]
    if not lits:
        return None
    values = {v for lit in lits for v in get_args(lit)}
    if bool in args:
        values |= {True, False}
    return values


def schema_mismatches(
    cls: type[SettingsBase],
    schema: dict[str, Any],
    root: dict[str, Any] | None = None,
    path: str = "",
) -> list[str]:
    """Every disagreement between a settings dataclass and its schema node, by dotted key.

    Compares the key sets, each field's type (JSON type names), enum members and default;
    nested sections are compared recursively. An empty list means they agree.

    Args:
        cls: the settings dataclass (e.g. :class:`matdisco.settings.Settings`).
        schema: its object node of the schema (the whole schema for ``Settings``).
        root: the whole schema (for ``$ref``); default ``schema``.
        path: dotted key of ``schema`` (for the messages).
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    props = schema.get("properties", {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = cls.field_types()
    name_ = cls.__name__
    out = [f"{_key(path, n)}: in the schema, not in {name_}" for n in props if n not in fields]
    out += [f"{_key(path, n)}: in {name_}, not in the schema" for n in fields if n not in props]
    for name in [n for n in props if n in fields]:
        key, sub, hint = _key(path, name), _resolve(props[name], root), hints[name]
        t = sub.get("type")
        want = {t} if isinstance(t, str) else set(t or [])
        if not want and "enum" in sub:
            want = {_SCHEMA_TYPE[type(v)] for v in sub["enum"]}
        have = _schema_types_of(hint)
        if have and have != want:
            out.append(f"{key}: type {sorted(have)} in {name_}, {sorted(want)} in the schema")
        lits = _literal_values(hint)
        items = _resolve(sub.get("items", {}), root) if "array" in want else sub
        if lits is None and get_origin(hint) is tuple:
            lits = _literal_values(get_args(hint)[0])
        if lits is not None and set(items.get("enum", [])) != lits:
            out.append(
                f"{key}: allowed values {sorted(map(str, lits))} in {cls.__name__}, "
                f"{sorted(map(str, items.get('enum', [])))} in the schema"
            )
        default = _field_default(fields[name])
        if isinstance(hint, type) and issubclass(hint, SettingsBase):
            if sub.get("default") != {} and name not in schema.get("required", []):
                out.append(f"{key}: a nested section needs default {{}} in the schema")
            if not isinstance(default, hint):
                out.append(f"{key}: default of {cls.__name__}.{name} is not {hint.__name__}()")
            out += schema_mismatches(hint, sub, root, key)
            continue
        if "default" not in sub:
            out.append(f"{key}: no default in the schema")
        elif default is dataclasses.MISSING:
            out.append(f"{key}: no default in {cls.__name__}")
        elif not _same(_plain(default), sub["default"]):
            out.append(
                f"{key}: default {_plain(default)!r} in {cls.__name__}, "
                f"{sub['default']!r} in the schema"
            )
    return out
